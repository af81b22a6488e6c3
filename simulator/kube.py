"""Small pieces of Kubernetes semantics the simulated controllers share: quantities, the
pod-template hash, owner references, label selectors, pod readiness."""

from __future__ import annotations

import json
import re
from typing import Any
from datetime import datetime, timedelta, timezone

# The apiserver's and controllers' alphabet for generated suffixes: no vowels, no 0/1/3.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GPU = "nvidia.com/gpu"

_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: object) -> float:
    """A resource quantity ("16Gi", "250m", 2) as a plain number (bytes, cores, units)."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in ("", *_SUFFIXES):
        raise ValueError(f"invalid quantity {value!r}")
    return float(match.group(1)) * _SUFFIXES.get(match.group(2), 1)


def memory_ki(num_bytes: float) -> str:
    return f"{int(num_bytes // 1024)}Ki"


def cpu_nanocores(cores: float) -> str:
    return f"{int(cores * 1e9)}n"


def safe_encode(text: str) -> str:
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_hash(template: dict) -> str:
    """The pod-template-hash of a template: FNV-32a, safe-encoded, as the deployment controller
    computes it (over its own serialization, so values differ from a real cluster's)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(h))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ago(seconds: float) -> str:
    return iso(datetime.now(timezone.utc) - timedelta(seconds=seconds))


def owner_ref(owner: dict) -> dict:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: dict) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owned_by(obj: dict, owner: dict) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == owner["metadata"]["uid"]


def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions) against labels."""
    if not selector:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_request(pod: dict, resource: str) -> float:
    """What a pod's containers request of `resource` (limits stand in for absent requests)."""
    total = 0.0
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(resource)
        if value is None:
            value = (resources.get("limits") or {}).get(resource)
        if value is not None:
            total += parse_quantity(value)
    return total


def container_limit(container: dict, resource: str) -> float | None:
    value = ((container.get("resources") or {}).get("limits") or {}).get(resource)
    return parse_quantity(value) if value is not None else None


def condition(obj: dict, type_: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_ready(pod: dict) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def set_condition(
    conditions: list[dict], type_: str, status: str, reason: str, message: str, now: str, *, update_time: bool = False
) -> list[dict]:
    """Conditions with `type_` set in place; lastTransitionTime moves only when the status does
    (lastUpdateTime, for Deployment conditions, moves on every change)."""
    old = next((c for c in conditions if c.get("type") == type_), None)
    prev = old or {}
    new: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if update_time:
        same = old is not None and all(prev.get(k) == new[k] for k in ("status", "reason", "message"))
        new["lastUpdateTime"] = prev["lastUpdateTime"] if same and prev.get("lastUpdateTime") else now
    kept = old is not None and prev.get("status") == status and prev.get("lastTransitionTime")
    new["lastTransitionTime"] = prev["lastTransitionTime"] if kept else now
    if old is None:
        return [*conditions, new]
    return [new if c is old else c for c in conditions]
