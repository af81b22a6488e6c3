"""Seed 002's "Model Versioning and Rollback Strategies", staged on production/llama-3-1-8b.

| fault | what breaks | what heals it |
|---|---|---|
| model-rollback | a new LLMDeployment production/llama-3-1-8b (seed 002's `spec.model` object: modelUri + version) comes up at model version v1.2.0, then is bumped to v1.3.0 (`spec.rollback.previousVersions` ["v1.2.0", "v1.1.3"]); the v1.3.0 pods answer ~50 % of requests with 5xx, so `llm_d_requests_total{status=~"5.."}` and LLMDHighErrorRate (> 5 % of all llm-d traffic) move | `spec.model.version` back to v1.2.0 (`kubectl patch llmdeployment llama-3-1-8b -n production --type=merge -p '{"spec":{"model":{"version":"v1.2.0"}}}'`) and no v1.3.0 pod left serving; restarting the v1.3.0 pods does not help |

Why 50 % rather than a smaller share: the seed's rule divides by every llm-d server's traffic, and this
model carries 2 of the cluster's ~14 replicas' worth, so a third of its requests failing would sit
right at the rule's 5 % threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from simulator import kube
from simulator.controllers import MODEL_VERSION
from simulator.scenarios import Fault, _resources, llm_deployment

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

MODEL = ("production", "llama-3-1-8b")
MODEL_URI = "hf://meta-llama/Llama-3.1-8B-Instruct"
GOOD_VERSION = "v1.2.0"
BAD_VERSION = "v1.3.0"
PREVIOUS_VERSIONS = [GOOD_VERSION, "v1.1.3"]  # seed 002: the last known good version first


def _model_spec(version: str) -> dict:
    return {"modelUri": MODEL_URI, "version": version, "registry": "company-registry.com/models"}


def _serves(pod: dict, version: str) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return labels.get("app") == MODEL[1] and labels.get(MODEL_VERSION) == version


class BadModelVersion(Fault):
    """v1.2.0 rolls out first (so the Deployment has its ReplicaSet to go back to), then the bump."""

    name = "model-rollback"
    FRACTION = 0.5
    REPLICAS = 2

    def __init__(self) -> None:
        self.bumped = False

    def inject(self, sim: ClusterBehaviour) -> None:
        ns, name = MODEL
        llmd = llm_deployment(
            ns,
            name,
            _model_spec(GOOD_VERSION),
            self.REPLICAS,
            32,
            64,
            _resources("4", "16Gi", "32Gi", 1),
            rollback={"enabled": True, "previousVersions": ["v1.1.3", "v1.0.5"], "autoRollback": {"enabled": False}},
        )
        llmd["metadata"]["labels"]["model.version"] = GOOD_VERSION
        sim.store.create(llmd)

    def tick(self, sim: ClusterBehaviour) -> None:
        if self.bumped:
            return
        deploy = sim.store.get("deployments", *MODEL)
        if deploy is None or (deploy.get("status") or {}).get("readyReplicas", 0) < self.REPLICAS:
            return
        llmd = sim.store.require("llmdeployments", *MODEL)
        llmd["spec"]["model"] = _model_spec(BAD_VERSION)
        llmd["spec"]["rollback"]["previousVersions"] = list(PREVIOUS_VERSIONS)
        llmd["metadata"]["labels"]["model.version"] = BAD_VERSION
        sim.store.update(llmd)
        self.bumped = True

    def error_fraction(self, pod: dict) -> float | None:
        return self.FRACTION if _serves(pod, BAD_VERSION) else None

    def symptoms(self, pod: dict) -> list[str]:
        if not _serves(pod, BAD_VERSION):
            return []
        return [
            "ERROR 01-01 00:00:00 serving_chat.py:211] Error in chat completion: ValueError: "
            "token id 128256 out of vocabulary range (tokenizer of revision v1.3.0)",
            'INFO:     10.0.4.17:52344 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
            'INFO:     10.0.4.21:40112 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
        ]

    def healed(self, sim: ClusterBehaviour) -> bool:
        llmd = sim.store.get("llmdeployments", *MODEL)
        if not self.bumped or llmd is None:
            return False
        version = (llmd["spec"].get("model") or {}).get("version")
        serving = [p for p in sim.store.list("pods", MODEL[0]) if _serves(p, BAD_VERSION) and kube.is_ready(p)]
        return version == GOOD_VERSION and not serving


MODEL_FAULTS: dict[str, Callable[[], Fault]] = {"model-rollback": BadModelVersion}
