"""Reading the simulator's audit log: which writes a playbook made, apart from the GPU checks' probes.

The GPU checks create an nvidia-smi probe pod (and a GPU test pod) per node and delete it again:
real writes even in shadow mode, but reads in purpose. Tests of "zero writes" and "only dry runs"
leave them out, and check instead that each was created and deleted exactly once.
"""

from __future__ import annotations

from collections import Counter

PROBE_LABEL = ("app.kubernetes.io/managed-by", "llm-runbooks")  # activities/kube/gpu_probes.py's probe and test pods


def probe_pod(e) -> str | None:
    """The name of a probe pod this audit entry created, if it is one."""
    if e.resource != "pods" or e.verb != "create" or not isinstance(e.body, dict):
        return None
    meta = e.body.get("metadata") or {}
    return meta.get("name") if (meta.get("labels") or {}).get(PROBE_LABEL[0]) == PROBE_LABEL[1] else None


def playbook_writes(simulator) -> list:
    """Every write that reached the API (dry runs and refused ones included), but the probe pods'."""
    audit = simulator.audit()
    ours = {name for e in audit if (name := probe_pod(e))}
    return [e for e in audit if not (probe_pod(e) or (e.resource == "pods" and e.name in ours))]


def probe_pods_balanced(simulator) -> bool:
    """Each probe pod created (for real) once and deleted once."""
    audit = simulator.audit()
    created = Counter(name for e in audit if (name := probe_pod(e)) and not e.dry_run)
    deleted = Counter(e.name for e in audit if e.resource == "pods" and e.verb == "delete" and e.name in created)
    return created == deleted and set(created.values()) <= {1}
