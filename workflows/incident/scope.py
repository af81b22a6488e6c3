"""What a playbook acts on, and how an alert's labels name it: the incident's scope.

An incident is a fault with a scope, not an alert. Every alert whose labels give the same
scope joins the one open incident of that playbook and scope, so a playbook that acts on the
whole cluster runs once however many instances, nodes or pods alert about it.

Scope kinds (each playbook declares one, see `workflows/playbooks/catalog.py`):

- `cluster`: the whole cluster (SOP-001's operator, SOP-003's device plugin, SOP-002's top
  consumers). Key: `cluster`.
- `node`: one node. Key: the first of the labels `node`, `Hostname`, `instance` the alert has.
- `llm-deployment`: one LLMDeployment. Key: `namespace/llmdeployment` labels.
- `inference-service`: one KServe InferenceService (seed 004). Key: `namespace/inferenceservice` labels.
- `object`: any one object its declared labels name (`Scope.object("namespace", "deployment")`),
  for a team's own playbooks. Key: those labels' values joined by `/`.
- `alert-group`: one Alertmanager group (its `groupKey`), as on-call tools group pages: a storm
  inside one group is one page.

Routes in config may name other labels (`routing.routes.<alert>.scope_labels`).

Every key but the default cluster's starts with the cluster the alert came from (`east/cluster`,
`east/node/gpu-node-2`; settings/clusters.py says which cluster that is), so two clusters' faults
never share an incident; the default cluster's keys carry none, as before clusters were named.

`scope_incident_id` makes the workflow id: `<playbook>--<key>` with `/` written `.`, plus a short
hash of the key whenever writing it in the id's alphabet lost anything (a `.`, a character outside
`[A-Za-z0-9_-]`, a cut past 120 characters), so keys that differ give ids that differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

ScopeKind = Literal["cluster", "node", "llm-deployment", "inference-service", "object", "alert-group"]

# Workflow ids allow most characters, but ids show up in Slack, the CLI and URLs: keep them tame.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Keys the id spells exactly: segments of [A-Za-z0-9_-] joined by `/` (written `.` in the id).
_EXACT = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_MAX_KEY = 120
_HASH_CHARS = 10  # 40 bits of sha256: two keys whose readable parts agree still get different ids


@dataclass(frozen=True)
class ScopeKey:
    """The scope an alert was given: `key` makes the workflow id, `why` says how it was chosen."""

    kind: ScopeKind
    key: str
    why: str


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    labels: tuple[str, ...] = ()  # the labels that make the key, in order

    @classmethod
    def cluster(cls) -> Scope:
        return cls("cluster")

    @classmethod
    def node(cls) -> Scope:
        return cls("node", ("node", "Hostname", "instance"))

    @classmethod
    def llm_deployment(cls) -> Scope:
        return cls("llm-deployment", ("namespace", "llmdeployment"))

    @classmethod
    def inference_service(cls) -> Scope:
        return cls("inference-service", ("namespace", "inferenceservice"))

    @classmethod
    def object(cls, *labels: str) -> Scope:
        """One Kubernetes object the alert's labels name, e.g. `Scope.object("namespace", "deployment")`."""
        if not labels:
            raise ValueError("an object scope needs the labels that name the object")
        return cls("object", labels)

    @classmethod
    def alert_group(cls) -> Scope:
        return cls("alert-group")

    def of(
        self,
        labels: Mapping[str, str],
        *,
        group_key: str | None,
        fingerprint: str,
        override: Sequence[str] | None = None,
        cluster: str | None = None,
    ) -> ScopeKey:
        """The scope key of one alert. An alert without the labels its scope needs gets a scope
        of its own (its fingerprint), so it is never folded into an unrelated incident. `cluster`:
        the cluster the alert came from, None for the default cluster (its keys carry no prefix)."""
        prefix = f"{cluster}/" if cluster else ""
        if override:
            values = [labels.get(name, "") for name in override]
            if all(values):
                return ScopeKey(self.kind, prefix + "/".join(values), f"labels {', '.join(override)} (config)")
            return ScopeKey(self.kind, f"alert/{fingerprint}", f"missing label(s) {', '.join(override)}: one alert")
        if self.kind == "cluster":
            return ScopeKey("cluster", prefix + "cluster", "the playbook acts on the whole cluster")
        if self.kind == "node":
            name = next((n for n in self.labels if labels.get(n)), None)
            if name:
                return ScopeKey("node", prefix + "node/" + labels[name], f"label {name}")
            return ScopeKey("node", f"alert/{fingerprint}", "no node label: one alert")
        if self.kind in ("llm-deployment", "inference-service", "object"):
            values = [labels.get(n, "") for n in self.labels]
            if all(values):
                return ScopeKey(self.kind, prefix + "/".join(values), f"labels {', '.join(self.labels)}")
            return ScopeKey(self.kind, f"alert/{fingerprint}", f"no {'/'.join(self.labels)} labels: one alert")
        if group_key:
            digest = hashlib.sha256(group_key.encode()).hexdigest()[:16]
            return ScopeKey("alert-group", f"group/{digest}", "the Alertmanager group")
        return ScopeKey("alert-group", f"alert/{fingerprint}", "no groupKey: one alert")


def scope_incident_id(runbook: str, scope: str) -> str:
    """playbook + scope: the workflow id every alert of that scope starts or joins (module docstring)."""
    readable = _UNSAFE.sub("-", scope.replace("/", ".")).strip("-")
    exact = _EXACT.fullmatch(scope) is not None and len(readable) <= _MAX_KEY
    if not exact:
        digest = hashlib.sha256(scope.encode()).hexdigest()[:_HASH_CHARS]
        readable = (readable[: _MAX_KEY - _HASH_CHARS - 1].rstrip("-.") + "-" + digest).lstrip("-")
    return f"{_UNSAFE.sub('-', runbook)}--{readable}"


def legacy_scope_incident_id(runbook: str, scope: str) -> str:
    """The id 1.0 gave a scope (`/` and anything unsafe as `-`, hashed only past 120 characters):
    resolves still reach incidents 1.0 opened."""
    key = _UNSAFE.sub("-", scope).strip("-")
    if len(key) > _MAX_KEY:
        key = key[: _MAX_KEY - 17] + "-" + hashlib.sha256(scope.encode()).hexdigest()[:16]
    return f"{_UNSAFE.sub('-', runbook)}--{key}"
