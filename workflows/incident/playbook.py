"""A playbook declares itself once: what it answers, how it is rehearsed, what it may touch.

Each playbook module ends with `PLAYBOOK = Playbook(...)`. `workflows/playbooks/catalog.py` lists
this project's and finds those of other installed packages (the entry point group
`llm_runbooks.playbooks`); the worker's registration, the webhook's routing and severities, the
drills (`runbooks drill --list`) and the RBAC test all read those declarations
(tests/test_registry.py fails if they disagree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.incident.models import Severity
from workflows.incident.scope import Scope

if TYPE_CHECKING:
    from workflows.incident.state import PlaybookPolicy


@dataclass(frozen=True)
class Alert:
    """An alert the playbook answers, at the severity its runbook gives it (an alert's own P0..P3
    `severity` label, or a configured route's severity, still win)."""

    severity: Severity
    source: str  # where the runbook says so, e.g. "seed 001 service-down runbook: P0"


@dataclass(frozen=True)
class Drill:
    """A rehearsal on the simulated cluster: the fault it stages and the alert that pages for it.

    `scenario` is a fault the simulator names (`runbooks simulator inject --list`; one with causes
    is drilled as `scenario:cause`), or, with `file`, the `name:` of a YAML fault file
    (simulator/scenario_files.py) that a team ships beside its playbook.
    """

    scenario: str
    alert: str  # the alertname; one the playbook declares
    summary: str  # the alert's summary annotation
    labels: Mapping[str, str] = field(default_factory=dict)  # namespace and the scope's labels
    # simulated seconds the alert rule needs before it fires: its `for:` and its rate() window
    pending_seconds: float = 60.0
    file: Path | None = None


# What a worker needs to serve a playbook's own activities: the clients it already holds.
@dataclass(frozen=True)
class WorkerClients:
    kube: Any  # kubernetes.client.ApiClient
    http: Any  # httpx.AsyncClient
    prometheus_url: str | None


@dataclass(frozen=True)
class Playbook:
    policy: PlaybookPolicy
    workflow: type  # the @workflow.defn class
    scope: Scope
    alerts: Mapping[str, Alert] = field(default_factory=dict)
    drills: Sequence[Drill] = ()
    # What it asks of Kubernetes, in `kubectl auth can-i` words: "patch deployments.apps",
    # "create pods/eviction", "get pods/log". deploy/'s roles grant the union (tests/test_rbac.py).
    kube_access: Sequence[str] = ()
    # Activity objects of its own (an instance per worker, given the worker's clients); the
    # built-in playbooks use the engine's (workflows/incident/calls.py).
    activities: Callable[[WorkerClients], Sequence[object]] | None = None

    @property
    def name(self) -> str:
        """The runbook name: the `Runbook` search attribute, the CLI's and routing's name."""
        return self.policy.runbook

    @property
    def workflow_type(self) -> str:
        defn: Any = getattr(self.workflow, "__temporal_workflow_definition")
        return defn.name

    @property
    def gates(self) -> tuple[str, ...]:
        """The gate kinds it may ask (approvers are configured per kind)."""
        return tuple(self.policy.gates)
