"""Reading the simulator's audit log: which writes reached the cluster, apart from the GPU checks' probes.

The audit log holds every write request the API served (refused ones and server-side dry runs too),
oldest first. The GPU checks create an nvidia-smi probe pod (and a GPU test pod) per node and delete it
again: real writes even in shadow mode, but reads in purpose. Tests of "zero writes" and "only dry runs"
leave them out, and check instead that each was created and deleted exactly once.
"""

from __future__ import annotations

from collections import Counter

from simulator.api import AuditEntry
from simulator.server import SimulatedCluster

PROBE_LABEL = ("app.kubernetes.io/managed-by", "llm-runbooks")  # activities/kube/gpu_probes.py's probe and test pods


def target(e: AuditEntry) -> str:
    """The object an entry wrote: its name, or for a create the name in its body."""
    return e.name or ((e.body if isinstance(e.body, dict) else {}).get("metadata") or {}).get("name", "")


def probe_pod(e: AuditEntry) -> str | None:
    """The name of a probe pod this audit entry created, if it is one."""
    if e.resource != "pods" or e.verb != "create" or not isinstance(e.body, dict):
        return None
    meta = e.body.get("metadata") or {}
    return meta.get("name") if (meta.get("labels") or {}).get(PROBE_LABEL[0]) == PROBE_LABEL[1] else None


def _probe_writes(audit: list[AuditEntry]) -> set[int]:
    """Indexes of the entries that create or delete one of the GPU checks' probe pods."""
    ours = {name for e in audit if (name := probe_pod(e))}
    return {i for i, e in enumerate(audit) if probe_pod(e) or (e.resource == "pods" and e.name in ours)}


def writes(
    simulator: SimulatedCluster, *, since: int = 0, name: str | None = None, dry_runs: bool = False, probes: bool = True
) -> list[AuditEntry]:
    """The writes the API accepted (HTTP < 300), oldest first: from audit entry `since` on (a length of
    `simulator.audit()` read earlier), of the object `name` only, server-side dry runs too when
    `dry_runs`, and without the GPU checks' probe and test pods when `probes` is false."""
    audit = simulator.audit()
    left_out = set() if probes else _probe_writes(audit)
    return [
        e
        for i, e in enumerate(audit)
        if i >= since
        and i not in left_out
        and e.code < 300
        and (dry_runs or not e.dry_run)
        and (name is None or target(e) == name)
    ]


def playbook_writes(simulator: SimulatedCluster) -> list[AuditEntry]:
    """Every write that reached the API (dry runs and refused ones included), but the probe pods'."""
    audit = simulator.audit()
    probes = _probe_writes(audit)
    return [e for i, e in enumerate(audit) if i not in probes]


def probe_pods_balanced(simulator: SimulatedCluster) -> bool:
    """Each probe pod created (for real) once and deleted once."""
    audit = simulator.audit()
    created = Counter(name for e in audit if (name := probe_pod(e)) and not e.dry_run)
    deleted = Counter(e.name for e in audit if e.resource == "pods" and e.verb == "delete" and e.name in created)
    return created == deleted and set(created.values()) <= {1}
