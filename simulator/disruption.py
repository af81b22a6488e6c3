"""PodDisruptionBudgets (policy/v1) as the API server and the disruption controller apply them.

An eviction of a pod covered by a budget that allows no disruption right now is answered
429 TooManyRequests with the API server's words, and the pod stays; a pod covered by more
than one budget cannot be evicted at all (500). `kubectl drain` retries a 429 every 5 s.
Healthy means Ready; expected pods are the budget's matching pods that are not finished or
terminating (the real controller asks their controller's scale; for the simulator's
Deployments the two agree once a replacement exists).
"""

from __future__ import annotations

import math

from simulator import kube
from simulator.store import Store, copy_json, now_iso


class EvictionRefused(Exception):
    def __init__(self, code: int, message: str, reason: str, causes: list[dict]) -> None:
        super().__init__(message)
        self.code, self.message, self.reason, self.causes = code, message, reason, causes


def _matches(pdb: dict, pod: dict) -> bool:
    selector = pdb["spec"].get("selector")
    if selector == {}:  # policy/v1: an empty selector selects every pod of the namespace
        return True
    return kube.selector_matches(selector, pod["metadata"].get("labels"))


def _count(value: object, expected: int) -> int:
    """An IntOrString: an int, or a percentage of `expected` rounded up (as the controller does)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * expected / 100)
    return int(value)  # type: ignore[call-overload]  # an int, or a string of digits


def budget_status(pdb: dict, pods: list[dict]) -> dict:
    """status as the disruption controller writes it: expectedPods, currentHealthy, desiredHealthy,
    disruptionsAllowed."""
    mine = [
        p for p in pods if _matches(pdb, p) and not kube.is_terminal(p) and not p["metadata"].get("deletionTimestamp")
    ]
    expected = len(mine)
    healthy = sum(1 for p in mine if kube.is_ready(p))
    spec = pdb["spec"]
    if spec.get("minAvailable") is not None:
        desired = _count(spec["minAvailable"], expected)
    elif spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _count(spec["maxUnavailable"], expected))
    else:
        desired = expected
    return {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": max(0, healthy - desired),
    }


def check_eviction(store: Store, pod: dict) -> None:
    """Raise EvictionRefused when a budget forbids evicting `pod` now (call under the store lock)."""
    namespace = pod["metadata"]["namespace"]
    budgets = [b for b in store.list("poddisruptionbudgets", namespace) if _matches(b, pod)]
    if not budgets:
        return
    if len(budgets) > 1:
        # The API server's NewInternalError: its words in the message behind "Internal error occurred"
        # and as the one cause (a cause without a reason).
        words = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        raise EvictionRefused(500, f"Internal error occurred: {words}", "InternalError", [{"message": words}])
    pdb = budgets[0]
    status = budget_status(pdb, store.list("pods", namespace))
    healthy, desired = status["currentHealthy"], status["desiredHealthy"]
    # unhealthyPodEvictionPolicy IfHealthyBudget (the default): a pod that is not Ready may go
    # while the budget itself is met.
    if not kube.is_ready(pod) and healthy >= desired:
        return
    if status["disruptionsAllowed"] > 0:
        return
    name = pdb["metadata"]["name"]
    raise EvictionRefused(
        429,
        "Cannot evict pod as it would violate the pod's disruption budget.",
        "TooManyRequests",
        [
            {
                "reason": "DisruptionBudget",
                "message": f"The disruption budget {name} needs {desired} healthy pods and has {healthy} currently",
            }
        ],
    )


def reconcile_budgets(store: Store) -> None:
    """The disruption controller: keep every budget's status current (what `kubectl get pdb` shows)."""
    for pdb in store.list("poddisruptionbudgets"):
        status = budget_status(pdb, store.list("pods", pdb["metadata"]["namespace"]))
        current = {k: v for k, v in (pdb.get("status") or {}).items() if k in status}
        if current != status:
            updated = copy_json(pdb)
            updated["status"] = {
                **(pdb.get("status") or {}),
                **status,
                "conditions": [
                    {
                        "type": "DisruptionAllowed",
                        "status": "True" if status["disruptionsAllowed"] else "False",
                        "reason": "SufficientPods" if status["disruptionsAllowed"] else "InsufficientPods",
                        "message": "",
                        "lastTransitionTime": now_iso(),
                        "observedGeneration": status["observedGeneration"],
                    }
                ],
            }
            store.update(updated)
