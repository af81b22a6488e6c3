"""What the apiserver checks before it stores an object: enough that bad input gets a
clear 422 and is never stored, and that everything stored reads back through the official
client's strict models."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
from kubernetes.client import ApiClient

from simulator.selectors import SelectorError, parse_label_selector
from simulator.store import ResourceType

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The official client's model of each built-in kind: deserializing into it raises ValueError
# exactly where a client reading the object back would.
_CLIENT_MODELS = {
    "Namespace": "V1Namespace",
    "Node": "V1Node",
    "Pod": "V1Pod",
    "Event": "CoreV1Event",
    "ConfigMap": "V1ConfigMap",
    "Service": "V1Service",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "Deployment": "V1Deployment",
    "ReplicaSet": "V1ReplicaSet",
    "DaemonSet": "V1DaemonSet",
    "Ingress": "V1Ingress",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
}
_WORKLOADS = ("Deployment", "ReplicaSet", "DaemonSet")


class ValidationError(ValueError):
    """The object is invalid; `causes` are (field, message) pairs for Status.details."""

    def __init__(self, kind: str, name: str, causes: list[tuple[str, str]]):
        self.kind, self.name, self.causes = kind, name, causes
        joined = ", ".join(f"{field}: {message}" for field, message in causes)
        super().__init__(f'{kind} "{name}" is invalid: {joined}')


_api_client = ApiClient()


def validate(rtype: ResourceType, obj: dict) -> None:
    """Raise ValidationError listing every problem found in `obj` of type `rtype`."""
    meta = obj.get("metadata")
    name = meta.get("name", "") if isinstance(meta, dict) else ""
    causes = _metadata_causes(rtype, meta)
    if not causes:
        causes += _kind_causes(rtype.kind, obj)
    if not causes and rtype.kind in _CLIENT_MODELS:
        causes += _client_model_causes(rtype.kind, obj)
    if causes:
        raise ValidationError(rtype.kind, str(name), causes)


def _metadata_causes(rtype: ResourceType, meta: Any) -> list[tuple[str, str]]:
    if not isinstance(meta, dict):
        return [("metadata", "Required value: an object")]
    causes: list[tuple[str, str]] = []
    name = meta.get("name")
    pattern = (
        _DNS1035_LABEL
        if rtype.kind == "Service"
        else (_DNS1123_LABEL if rtype.kind == "Namespace" else _DNS1123_SUBDOMAIN)
    )
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
        causes.append(
            ("metadata.name", f"Invalid value: {name!r}: must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.')")
        )
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            causes.append((f"metadata.{field}", "Invalid value: must map strings to strings"))
    for key, value in (meta.get("labels") or {}).items() if not causes else ():
        try:
            parse_label_selector(f"{key}={value}")
        except SelectorError:
            causes.append(("metadata.labels", f"Invalid value: {key}={value!r}"))
    return causes


def _kind_causes(kind: str, obj: dict) -> list[tuple[str, str]]:
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        return [("spec", "Invalid value: must be an object")]
    spec = spec or {}
    if kind == "Pod":
        return _pod_spec_causes("spec", spec)
    if kind in _WORKLOADS:
        return _workload_causes(kind, spec)
    if kind == "Service":
        return [
            (f"spec.ports[{i}].port", "Required value: an integer 1-65535")
            for i, port in enumerate(spec.get("ports") or [])
            if not isinstance(port, dict) or not _is_int(port.get("port"), 1, 65535)
        ]
    if kind in ("LLMDeployment", "InferenceService") and "replicas" in spec:
        if not _is_int(spec["replicas"], 0):
            return [("spec.replicas", "Invalid value: must be a non-negative integer")]
    return []


def _workload_causes(kind: str, spec: dict) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    if kind != "DaemonSet" and "replicas" in spec and not _is_int(spec["replicas"], 0):
        causes.append(("spec.replicas", "Invalid value: must be a non-negative integer"))
    selector = spec.get("selector")
    template: dict = spec["template"] if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(("spec.selector", "Required value"))
    elif not _selector_matches(selector, labels):
        causes.append(
            ("spec.template.metadata.labels", f"Invalid value: {labels!r}: `selector` does not match template `labels`")
        )
    causes += _pod_spec_causes("spec.template.spec", template.get("spec") or {})
    return causes


def _selector_matches(selector: dict, labels: dict) -> bool:
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        if not isinstance(expr, dict):
            return False
        key, op, values = expr.get("key") or "", expr.get("operator"), expr.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(op or "", False)
        if not ok:
            return False
    return True


def _pod_spec_causes(path: str, spec: Any) -> list[tuple[str, str]]:
    if not isinstance(spec, dict):
        return [(path, "Invalid value: must be an object")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [(f"{path}.containers", "Required value: at least one container")]
    causes: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, container in enumerate(containers):
        where = f"{path}.containers[{i}]"
        if not isinstance(container, dict):
            causes.append((where, "Invalid value: must be an object"))
            continue
        name = container.get("name")
        if not isinstance(name, str) or not _DNS1123_LABEL.match(name):
            causes.append((f"{where}.name", "Required value: a DNS-1123 label"))
        elif name in seen:
            causes.append((f"{where}.name", f"Duplicate value: {name!r}"))
        seen.add(str(name))
        if not isinstance(container.get("image"), str) or not container["image"]:
            causes.append((f"{where}.image", "Required value"))
    return causes


def _client_model_causes(kind: str, obj: dict) -> list[tuple[str, str]]:
    try:
        _api_client.deserialize(json.dumps(obj), _CLIENT_MODELS[kind], "application/json")
    except pydantic.ValidationError as exc:
        return [(".".join(str(p) for p in err["loc"]) or kind, f"Invalid value: {err['msg']}") for err in exc.errors()]
    except (ValueError, TypeError, AttributeError) as exc:
        return [(kind, f"Invalid value: does not match the Kubernetes schema: {exc}")]
    return []


def _is_int(value: Any, low: int, high: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
