"""Seed 001's "LLM-D Service Down" runbook, staged on production/llm-d-decode.

| fault | what breaks | what heals it |
|---|---|---|
| service-down:bad-rollout | a new revision of deployment llm-d-decode (vllm/vllm-openai:v0.6.4, --max-model-len 262144) rolled out completely; every pod of it crash-loops: the service answers 503 | `kubectl rollout undo deployment/llm-d-decode` (the template back to the revision before); restarts or pod deletions do not help |
| service-down:hung-pods | the llm-d-decode pods running at injection hang (readiness 503, engine dead) without a change to the Deployment | deleting those pods (`kubectl delete pods -l app=llm-d-decode`): their replacements come up healthy |
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

from simulator import kube
from simulator.kubelet import Fate, Mode
from simulator.scenarios import DECODE, Fault, _hash

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

BAD_IMAGE = "vllm/vllm-openai:v0.6.4"
BAD_ARGS = ["--max-model-len", "262144"]
CHANGE_CAUSE = "kubernetes.io/change-cause"


def _deployment_pods(sim: ClusterBehaviour, ns: str, name: str) -> list[dict]:
    return [p for p in sim.store.list("pods", ns) if (p["metadata"].get("labels") or {}).get("app") == name]


class BadRollout(Fault):
    """The template changed and rolled out to the last pod before the new pods began to crash (they
    passed readiness while loading): nothing of the old revision is left serving."""

    name = "service-down:bad-rollout"

    def __init__(self) -> None:
        self.bad_hashes: set[str] = set()

    def inject(self, sim: ClusterBehaviour) -> None:
        ns, name = DECODE
        deploy = sim.store.require("deployments", ns, name)
        template = copy.deepcopy(deploy["spec"]["template"])
        container = template["spec"]["containers"][0]
        container["image"] = BAD_IMAGE
        container["args"] = [*(container.get("args") or []), *BAD_ARGS]
        deploy["spec"]["template"] = template
        deploy["metadata"].setdefault("annotations", {})[CHANGE_CAUSE] = (
            f"kubectl set image deployment/{name} {container['name']}={BAD_IMAGE}"
        )
        sim.store.update(deploy)
        self.bad_hashes.add(kube.template_hash(template))
        # The old revision is gone already: its ReplicaSets at 0, its pods terminated.
        for rs in sim.store.list("replicasets", ns):
            if kube.owned_by(rs, deploy) and rs["metadata"]["labels"].get("pod-template-hash") not in self.bad_hashes:
                rs["spec"]["replicas"] = 0
                sim.store.update(rs)
        for pod in _deployment_pods(sim, ns, name):
            if _hash(pod) not in self.bad_hashes:
                sim.store.delete("pods", ns, pod["metadata"]["name"])
                sim.forget_pod(pod)

    def fate(self, sim: ClusterBehaviour, pod: dict) -> Fate | None:
        meta = pod["metadata"]
        if (
            meta["namespace"] == DECODE[0]
            and (meta.get("labels") or {}).get("app") == DECODE[1]
            and _hash(pod) in self.bad_hashes
        ):
            return Fate(
                Mode.CRASH,
                "Error",
                1,
                log=(
                    "INFO 01-01 00:00:00 api_server.py:495] vLLM API server version 0.6.4",
                    "ERROR 01-01 00:00:00 engine.py:366] ValueError: User-specified max_model_len (262144) is "
                    "greater than the derived max_model_len (max_position_embeddings=131072 in model's config.json).",
                ),
            )
        return None

    def healed(self, sim: ClusterBehaviour) -> bool:
        ns, name = DECODE
        deploy = sim.store.get("deployments", ns, name)
        return (
            deploy is not None
            and kube.template_hash(deploy["spec"]["template"]) not in self.bad_hashes
            and sim.health(ns, name)[0] == 200
        )


class HungPods(Fault):
    name = "service-down:hung-pods"

    def __init__(self) -> None:
        self.hung: set[str] = set()

    def inject(self, sim: ClusterBehaviour) -> None:
        self.hung = {p["metadata"]["uid"] for p in _deployment_pods(sim, *DECODE)}

    def fate(self, sim: ClusterBehaviour, pod: dict) -> Fate | None:
        if pod["metadata"]["uid"] in self.hung:
            return Fate(
                Mode.NOT_READY,
                message="Readiness probe failed: HTTP probe failed with statuscode: 503",
                log=(
                    "ERROR 01-01 00:00:00 async_llm_engine.py:61] Engine background task failed",
                    "ERROR 01-01 00:00:00 async_llm_engine.py:63] RuntimeError: NCCL watchdog timeout: "
                    "collective operation timed out after 600000 ms",
                ),
            )
        return None

    def healed(self, sim: ClusterBehaviour) -> bool:
        return not any(sim.pod_by_uid(uid) for uid in self.hung)


SERVICE_DOWN_FAULTS: dict[str, Callable[[], Fault]] = {
    "service-down:bad-rollout": BadRollout,
    "service-down:hung-pods": HungPods,
}
