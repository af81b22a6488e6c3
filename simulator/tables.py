"""meta.k8s.io/v1 Table renderings, so `kubectl get` prints the columns an SRE expects
(READY, STATUS, RESTARTS, ...) instead of only NAME and AGE."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

Column = tuple[str, str, int, Callable[[dict], Any]]  # name, type, priority, cell


def table_for(obj: dict, include_object: str) -> dict:
    """A Table of a list (kind ...List) or a single object."""
    items = obj["items"] if obj.get("kind", "").endswith("List") and "items" in obj else [obj]
    kind = obj["kind"][:-4] if obj.get("kind", "").endswith("List") else obj.get("kind", "")
    name: Column = ("Name", "string", 0, lambda o: o["metadata"]["name"])
    if kind == "Event":  # kubectl shows events by LAST SEEN; the name only with -o wide
        columns = _COLUMNS[kind] + [(name[0], name[1], 1, name[3])]
    else:
        columns = [name] + _COLUMNS.get(kind, [])
        if _AGE not in columns:
            columns.append(_AGE)
    table = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion", "")},
        "columnDefinitions": [
            {
                "name": name,
                "type": type_,
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, type_, priority, _ in columns
        ],
        "rows": [_row(item, columns, include_object) for item in items],
    }
    return table


def _row(item: dict, columns: list[Column], include_object: str) -> dict:
    row: dict = {"cells": [_safe(cell, item) for _, _, _, cell in columns]}
    if include_object == "Object":
        row["object"] = item
    elif include_object != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item.get("metadata", {}),
        }
    return row


def _safe(cell: Callable[[dict], Any], item: dict) -> Any:
    try:
        value = cell(item)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        return "<unknown>"
    return "<none>" if value is None or value == "" else value


def human_age(timestamp: str | None) -> str:
    """kubectl's short duration style: 45s, 3m12s, 95m, 5h3m, 30h, 3d4h, 12d."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _age(obj: dict) -> str:
    return human_age(obj["metadata"].get("creationTimestamp"))


_AGE: Column = ("Age", "string", 0, _age)


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


# ---- pods --------------------------------------------------------------------------------


def _pod_ready(pod: dict) -> str:
    statuses = _status(pod).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    return f"{ready}/{len(_spec(pod).get('containers') or [])}"


def _pod_status(pod: dict) -> str:
    """The STATUS kubectl shows: a waiting/terminated reason beats the phase."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = _status(pod)
    for cs in status.get("initContainerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            return f"Init:{state['waiting']['reason']}"
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    return reason


def _pod_restarts(pod: dict) -> int:
    return sum(s.get("restartCount", 0) for s in _status(pod).get("containerStatuses") or [])


def _images(obj: dict) -> str:
    template = _spec(obj).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    return ",".join(c.get("image", "") for c in containers)


def _selector(obj: dict) -> str:
    labels = (_spec(obj).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items())


# ---- nodes -------------------------------------------------------------------------------


def _node_status(node: dict) -> str:
    ready = next((c for c in _status(node).get("conditions") or [] if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else ("NotReady" if ready else "Unknown")
    if _spec(node).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(node: dict) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = [k[len(prefix) :] for k in node["metadata"].get("labels") or {} if k.startswith(prefix)]
    return ",".join(sorted(roles)) or "<none>"


def _node_ip(node: dict) -> str:
    return next(
        (a.get("address") for a in _status(node).get("addresses") or [] if a.get("type") == "InternalIP"), "<none>"
    )


def _service_ports(svc: dict) -> str:
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in _spec(svc).get("ports") or [])


def _ready_condition(obj: dict) -> str:
    cond = next((c for c in _status(obj).get("conditions") or [] if c.get("type") == "Ready"), None)
    return cond.get("status", "Unknown") if cond else "Unknown"


_COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda p: str(_pod_restarts(p))),
        _AGE,
        ("IP", "string", 1, lambda p: _status(p).get("podIP")),
        ("Node", "string", 1, lambda p: _spec(p).get("nodeName")),
    ],
    "Deployment": [
        ("Ready", "string", 0, lambda d: f"{_status(d).get('readyReplicas', 0)}/{_spec(d).get('replicas', 1)}"),
        ("Up-to-date", "integer", 0, lambda d: _status(d).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda d: _status(d).get("availableReplicas", 0)),
        _AGE,
        ("Images", "string", 1, _images),
        ("Selector", "string", 1, _selector),
    ],
    "ReplicaSet": [
        ("Desired", "integer", 0, lambda r: _spec(r).get("replicas", 1)),
        ("Current", "integer", 0, lambda r: _status(r).get("replicas", 0)),
        ("Ready", "integer", 0, lambda r: _status(r).get("readyReplicas", 0)),
        ("Images", "string", 1, _images),
    ],
    "DaemonSet": [
        ("Desired", "integer", 0, lambda d: _status(d).get("desiredNumberScheduled", 0)),
        ("Current", "integer", 0, lambda d: _status(d).get("currentNumberScheduled", 0)),
        ("Ready", "integer", 0, lambda d: _status(d).get("numberReady", 0)),
        ("Up-to-date", "integer", 0, lambda d: _status(d).get("updatedNumberScheduled", 0)),
        ("Available", "integer", 0, lambda d: _status(d).get("numberAvailable", 0)),
        (
            "Node Selector",
            "string",
            0,
            lambda d: ",".join(
                f"{k}={v}"
                for k, v in ((_spec(d).get("template") or {}).get("spec") or {}).get("nodeSelector", {}).items()
            ),
        ),
    ],
    "Node": [
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        _AGE,
        ("Version", "string", 0, lambda n: (_status(n).get("nodeInfo") or {}).get("kubeletVersion")),
        ("Internal-IP", "string", 1, _node_ip),
    ],
    "Namespace": [("Status", "string", 0, lambda n: _status(n).get("phase", "Active"))],
    "Service": [
        ("Type", "string", 0, lambda s: _spec(s).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda s: _spec(s).get("clusterIP")),
        ("Port(s)", "string", 0, _service_ports),
    ],
    "ConfigMap": [("Data", "integer", 0, lambda c: len(c.get("data") or {}))],
    "PersistentVolumeClaim": [
        ("Status", "string", 0, lambda c: _status(c).get("phase")),
        ("Volume", "string", 0, lambda c: _spec(c).get("volumeName")),
        ("Capacity", "string", 0, lambda c: (_status(c).get("capacity") or {}).get("storage")),
        ("StorageClass", "string", 0, lambda c: _spec(c).get("storageClassName")),
    ],
    "Ingress": [
        ("Class", "string", 0, lambda i: _spec(i).get("ingressClassName")),
        ("Hosts", "string", 0, lambda i: ",".join(r.get("host", "*") for r in _spec(i).get("rules") or []) or "*"),
    ],
    "Event": [
        ("Last Seen", "string", 0, lambda e: human_age(e.get("lastTimestamp"))),
        ("Type", "string", 0, lambda e: e.get("type")),
        ("Reason", "string", 0, lambda e: e.get("reason")),
        (
            "Object",
            "string",
            0,
            lambda e: f"{e['involvedObject'].get('kind', '').lower()}/{e['involvedObject']['name']}",
        ),
        ("Message", "string", 0, lambda e: e.get("message")),
    ],
    "LLMDeployment": [
        ("Model", "string", 0, lambda m: _spec(m).get("model")),
        ("Replicas", "integer", 0, lambda m: _spec(m).get("replicas")),
        ("Ready", "integer", 0, lambda m: _status(m).get("readyReplicas", 0)),
        ("Phase", "string", 0, lambda m: _status(m).get("phase")),
    ],
    "InferenceService": [
        ("URL", "string", 0, lambda i: _status(i).get("url")),
        ("Ready", "string", 0, _ready_condition),
    ],
}
