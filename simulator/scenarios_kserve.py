"""Seed 004's KServe incidents, staged on InferenceServices (simulator/kserve.py).

| fault | what breaks | what heals it |
|---|---|---|
| model-not-loading:access-denied | new InferenceService mlops-serving/mistral-7b-v2; its storage-initializer gets AccessDenied (IRSA role) on s3://llm-mlops-models/mistral-7b/v2: Init:CrashLoopBackOff | only spec.predictor.model.storageUri changed to a location the role can read (e.g. .../mistral-7b/v1): a human decision |
| model-not-loading:not-found | the same InferenceService at s3://llm-mlops-models/mistral-7b/v2.1, where no model is: "No model found" | storageUri changed to a location that holds the model |
| model-not-loading:disk-full | the model downloads to a node whose disk is full: "[Errno 28] No space left on device" | the predictor pod on another node (cordon the full node and delete the pod) or a new storageUri |
| model-not-loading:kv-cache | the model downloads, then vLLM in the kserve-container refuses its context length: max seq len 32768 > the 19888 tokens its KV cache holds (ValueError); CrashLoopBackOff, modelStatus FailedToLoad with the error | the runtime's `--max-model-len` lowered (or `--gpu-memory-utilization` raised, or a larger GPU): a human's change |
| kserve-gpu-pending | new InferenceService mlops-serving/llama-3-8b (1 GPU): Pending, "Insufficient nvidia.com/gpu"; two idle research notebooks hold every free GPU of gpu-node-1/-2, gpu-node-3 is tainted dedicated=training:NoSchedule | GPUs freed for it: a notebook scaled to 0 / deleted, or the taint removed (or a node added) |
| kserve-high-latency | mlops-serving/mistral-7b (minReplicas 1) gets 2.5x its usual requests: its one replica runs at ~150 %, p99 ~8 s, queue > 10 | enough predictor replicas that each runs at or below 90 % (seed 004: `minReplicas` 3) |
| high-error-rate:model-corrupted | the mlops-serving/mistral-7b predictor pods running at injection load a corrupted shard (safetensors "incomplete metadata") and answer ~30 % of requests with 500 | seed 004 step 5: the InferenceService redeployed (`kubectl delete isvc` + apply: new pods download the model again) |
| canary-rollback | mlops-serving/mistral-7b canaries s3://llm-mlops-models/mistral-7b/v3 at 20 %: the canary's pods answer ~60 % of requests with 500 | canaryTrafficPercent 0 and storageUri back to .../mistral-7b/v1 (the canary revision gone) |
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from simulator import kube
from simulator.kubelet import Fate, Mode
from simulator.kserve import CANARY_SUFFIX, ISVC_LABEL
from simulator.scenarios import DENIED_STORAGE, Fault, carries, inference_service

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

SERVING = "mlops-serving"
NOT_LOADING = (SERVING, "mistral-7b-v2")
MISSING_MODEL = "s3://llm-mlops-models/mistral-7b/v2.1"
GOOD_MODEL = "s3://llm-mlops-models/mistral-7b/v1"
CANARY_MODEL = "s3://llm-mlops-models/mistral-7b/v3"
CANARY_ISVC = (SERVING, "mistral-7b")
PENDING_ISVC = (SERVING, "llama-3-8b")
HOARDER_NAMESPACE = "research"
TAINTED_NODE = "gpu-node-3"
TAINT = {"key": "dedicated", "value": "training", "effect": "NoSchedule"}


def _ready(sim: ClusterBehaviour, ns: str, name: str) -> bool:
    isvc = sim.store.get("inferenceservices", ns, name)
    return isvc is not None and (kube.condition(isvc, "Ready") or {}).get("status") == "True"


def _of(pod: dict, ns: str, name: str) -> bool:
    return pod["metadata"]["namespace"] == ns and (pod["metadata"].get("labels") or {}).get(ISVC_LABEL) == name


def _initializer_uri(pod: dict) -> str:
    init = next((c for c in pod["spec"].get("initContainers") or [] if c["name"] == "storage-initializer"), None)
    return ((init or {}).get("args") or [""])[0]


def _download(uri: str) -> tuple[str, ...]:
    return (
        "Traceback (most recent call last):",
        '  File "/storage-initializer/scripts/initializer-entrypoint", line 18, in <module>',
        "    kserve.Storage.download(src_uri, dest_path)",
        '  File "/kserve/kserve/storage/storage.py", line 94, in download',
        "    model_dir = Storage._download_s3(uri, out_dir)",
    )


# vLLM refusing a context length its KV cache cannot hold (the kserve-container's own error).
KV_CACHE_ERROR = (
    "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be "
    "stored in KV cache (19888). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
    "initializing the engine."
)


def _vllm_kv_cache_log() -> tuple[str, ...]:
    return (
        "INFO 12-08 01:02:03 [model_runner.py:1115] Loading model weights took 13.4967 GB",
        "INFO 12-08 01:02:07 [worker.py:267] the current vLLM instance can use total_gpu_memory (22.05GiB) x "
        "gpu_memory_utilization (0.90) = 19.85GiB; the rest of the memory reserved for KV Cache is 4.86GiB.",
        "Traceback (most recent call last):",
        '  File "/usr/local/lib/python3.12/dist-packages/vllm/engine/llm_engine.py", line 435, in _initialize_kv_caches',
        "    raise ValueError(",
        KV_CACHE_ERROR,
    )


class ModelNotLoading(Fault):
    CAUSES = ("access-denied", "not-found", "disk-full", "kv-cache")

    def __init__(self, cause: str) -> None:
        self.cause = cause
        self.name = f"model-not-loading:{cause}"
        self.full_node: str | None = None

    def inject(self, sim: ClusterBehaviour) -> None:
        sim.store.delete_with_dependents("inferenceservices", *NOT_LOADING)
        uri = {"access-denied": DENIED_STORAGE, "not-found": MISSING_MODEL, "kv-cache": GOOD_MODEL}.get(
            self.cause, DENIED_STORAGE
        )
        if self.cause == "access-denied":
            sim.denied_storage.add(DENIED_STORAGE)  # the cluster's own fate: the IAM role's answer
        if self.cause == "disk-full":
            sim.denied_storage.discard(DENIED_STORAGE)
        sim.store.create(inference_service(*NOT_LOADING, uri))

    def tick(self, sim: ClusterBehaviour) -> None:
        if self.cause == "disk-full" and self.full_node is None:
            for pod in sim.store.list("pods", NOT_LOADING[0]):
                if _of(pod, *NOT_LOADING) and pod["spec"].get("nodeName"):
                    self.full_node = pod["spec"]["nodeName"]
                    sim.event(
                        sim.store.require("nodes", None, self.full_node),
                        "Warning",
                        "FreeDiskSpaceFailed",
                        "Failed to garbage collect required amount of images. Attempted to free "
                        "64424509440 bytes, but only found 0 bytes eligible to free.",
                        "kubelet",
                        once=True,
                    )

    def fate(self, sim: ClusterBehaviour, pod: dict) -> Fate | None:
        if not _of(pod, *NOT_LOADING):
            return None
        uri = _initializer_uri(pod)
        if self.cause == "not-found" and uri == MISSING_MODEL:
            return Fate(
                Mode.INIT_CRASH,
                "Error",
                1,
                log=_download(uri) + (f"RuntimeError: Failed to fetch model. No model found in {uri}.",),
            )
        if self.cause == "kv-cache":
            # the download works; the model server starts, profiles its memory and exits
            return Fate(Mode.CRASH, "Error", 1, log=_vllm_kv_cache_log())
        if self.cause == "disk-full" and self.full_node and pod["spec"].get("nodeName") == self.full_node:
            return Fate(
                Mode.INIT_CRASH,
                "Error",
                1,
                log=_download(uri)
                + (
                    '  File "/usr/local/lib/python3.11/site-packages/boto3/s3/transfer.py", line 372, in download_file',
                    "OSError: [Errno 28] No space left on device: '/mnt/models/model-00002-of-00003.safetensors'",
                ),
            )
        return None

    def healed(self, sim: ClusterBehaviour) -> bool:
        return _ready(sim, *NOT_LOADING)


class KServeGpuPending(Fault):
    name = "kserve-gpu-pending"

    def __init__(self) -> None:
        self.staged = False

    def inject(self, sim: ClusterBehaviour) -> None:
        sim.store.delete_with_dependents("inferenceservices", *PENDING_ISVC)
        if sim.store.get("namespaces", None, HOARDER_NAMESPACE) is None:
            sim.store.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": HOARDER_NAMESPACE,
                        "labels": {"kubernetes.io/metadata.name": HOARDER_NAMESPACE},
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
            )
        pods = [p for p in sim.store.list("pods") if not kube.is_terminal(p)]
        for node in ("gpu-node-1", "gpu-node-2"):
            used = sum(kube.pod_request(p, kube.GPU) for p in pods if p["spec"].get("nodeName") == node)
            free = int(sim.node_gpu_capacity(node) - used)
            if free <= 0:
                continue
            name = f"jupyter-gpu-{node}"
            sim.store.delete_with_dependents("deployments", HOARDER_NAMESPACE, name)
            sim.store.create(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": HOARDER_NAMESPACE, "labels": {"app": name}},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app": name}},
                        "template": {
                            "metadata": {"labels": {"app": name, "team": "research"}},
                            "spec": {
                                "nodeSelector": {"kubernetes.io/hostname": node},
                                "containers": [
                                    {
                                        "name": "notebook",
                                        "image": "jupyter/pytorch-notebook:cuda12-2024-05-27",
                                        "resources": {
                                            "requests": {"cpu": "2", "memory": "8Gi", kube.GPU: str(free)},
                                            "limits": {"memory": "16Gi", kube.GPU: str(free)},
                                        },
                                    }
                                ],
                            },
                        },
                    },
                }
            )
        tainted = sim.store.require("nodes", None, TAINTED_NODE)
        taints = [t for t in tainted["spec"].get("taints") or [] if t.get("key") != TAINT["key"]]
        tainted["spec"]["taints"] = taints + [dict(TAINT)]
        sim.store.update(tainted)

    def tick(self, sim: ClusterBehaviour) -> None:
        # the InferenceService arrives once the notebooks hold their GPUs, as it did in the field
        if self.staged:
            return
        hoarders = sim.store.list("pods", HOARDER_NAMESPACE)
        if hoarders and all(p["spec"].get("nodeName") for p in hoarders):
            sim.store.create(inference_service(*PENDING_ISVC, "s3://llm-mlops-models/llama-3-8b/v1"))
            self.staged = True

    def healed(self, sim: ClusterBehaviour) -> bool:
        return self.staged and _ready(sim, *PENDING_ISVC)


class CanaryRollback(Fault):
    name = "canary-rollback"
    FRACTION = 0.6
    PERCENT = 20

    def inject(self, sim: ClusterBehaviour) -> None:
        isvc = sim.store.require("inferenceservices", *CANARY_ISVC)
        predictor = isvc["spec"]["predictor"]
        predictor["canaryTrafficPercent"] = self.PERCENT
        predictor["model"]["storageUri"] = CANARY_MODEL
        sim.store.update(isvc)

    def _canary_pod(self, pod: dict) -> bool:
        return (
            _of(pod, *CANARY_ISVC)
            and (pod["metadata"].get("labels") or {}).get("app", "").endswith(CANARY_SUFFIX)
            and _initializer_uri(pod) == CANARY_MODEL
        )

    def error_fraction(self, pod: dict) -> float | None:
        return self.FRACTION if self._canary_pod(pod) else None

    def symptoms(self, pod: dict) -> list[str]:
        if not self._canary_pod(pod):
            return []
        return [
            "ERROR 01-01 00:00:00 serving_completion.py:342] Error in completion: RuntimeError: Error(s) in "
            "loading state_dict for MistralForCausalLM: size mismatch for lm_head.weight: copying a param with "
            "shape torch.Size([32768, 4096]) from checkpoint, the shape in current model is "
            "torch.Size([32000, 4096])",
            'INFO:     10.0.4.17:52344 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
            'INFO:     10.0.4.21:40112 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
        ]

    def healed(self, sim: ClusterBehaviour) -> bool:
        isvc = sim.store.get("inferenceservices", *CANARY_ISVC)
        if isvc is None:
            return True
        canary = sim.store.get("deployments", CANARY_ISVC[0], f"{CANARY_ISVC[1]}-predictor{CANARY_SUFFIX}")
        return canary is None and isvc["spec"]["predictor"]["model"].get("storageUri") != CANARY_MODEL


class ModelCorrupted(Fault):
    """Seed 004 "High Error Rate", 5. "If model is corrupted, redeploy": a restart reuses the pod's
    downloaded copy, only new pods (a redeploy) fetch the model again."""

    name = "high-error-rate:model-corrupted"
    FRACTION = 0.3

    def __init__(self) -> None:
        self.poisoned: set[str] = set()

    def inject(self, sim: ClusterBehaviour) -> None:
        self.poisoned = {p["metadata"]["uid"] for p in sim.store.list("pods", SERVING) if _of(p, *CANARY_ISVC)}

    def error_fraction(self, pod: dict) -> float | None:
        return self.FRACTION if pod["metadata"]["uid"] in self.poisoned else None

    def symptoms(self, pod: dict) -> list[str]:
        if pod["metadata"]["uid"] not in self.poisoned:
            return []
        return [
            "ERROR 01-01 00:00:00 serving_completion.py:342] Error in completion: "
            "safetensors_rust.SafetensorError: Error while deserializing header: incomplete metadata, "
            "file not fully covered (/mnt/models/model-00002-of-00003.safetensors)",
            'INFO:     10.0.4.17:52344 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
        ]

    def healed(self, sim: ClusterBehaviour) -> bool:
        return not any(sim.pod_by_uid(uid) for uid in self.poisoned)


class KServeHighLatency(Fault):
    """Seed 004 "High Latency (P99 > 2s)": more requests than the predictor's replicas can serve."""

    name = "kserve-high-latency"
    DEMAND = 2.5
    SERVICE = (CANARY_ISVC[0], f"{CANARY_ISVC[1]}-predictor")  # the predictor Service (metrics' `service`)

    def demand(self, namespace: str, service: str) -> float:
        return self.DEMAND if (namespace, service) == self.SERVICE else 1.0

    def healed(self, sim: ClusterBehaviour) -> bool:
        return carries(sim, self.SERVICE, self.DEMAND)


KSERVE_FAULTS: dict[str, Callable[[], Fault]] = {
    **{f"model-not-loading:{c}": functools.partial(ModelNotLoading, c) for c in ModelNotLoading.CAUSES},
    "kserve-gpu-pending": KServeGpuPending,
    "canary-rollback": CanaryRollback,
    "kserve-high-latency": KServeHighLatency,
    "high-error-rate:model-corrupted": ModelCorrupted,
}
