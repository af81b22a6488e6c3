"""Seed 004's KServe requests and answers: an InferenceService described, its predictor's logs,
`kubectl patch isvc` (JSON patch of one field), a redeploy, the cluster's GPU allocation. Pure
pydantic (activities/kserve.py does the work), plus the seed's error classes for the logs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from activities.kube_models import PodSummary

ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.knative.dev/revision"

# The fields the seed's procedures patch (seed 004 "Scaling", "Rollback Procedures").
PatchPath = Literal["/spec/predictor/canaryTrafficPercent", "/spec/predictor/model/storageUri",
                    "/spec/predictor/minReplicas"]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InferenceServiceRef(_Input):
    """`kubectl describe isvc NAME -n NS` plus its predictor pods (`-l serving.kserve.io/inferenceservice=NAME`)."""

    namespace: str
    name: str


class TrafficTarget(BaseModel):
    revision: str
    percent: int
    latest: bool = False


class PredictorPod(BaseModel):
    pod: PodSummary
    revision: str | None = None
    storage_uri: str | None = Field(None, description="the storage-initializer's source")
    canary: bool = Field(False, description="a pod of the latest created revision while it is not rolled out")
    init_state: str | None = Field(None, description="the storage-initializer's state: CrashLoopBackOff, Error, ...")
    scheduling: str | None = Field(None, description="the latest FailedScheduling message of a Pending pod")


class InferenceServiceDescription(BaseModel):
    namespace: str
    name: str
    found: bool = True
    ready: bool = False
    reason: str | None = None
    message: str | None = None
    storage_uri: str | None = Field(None, description="spec.predictor.model.storageUri")
    canary_traffic_percent: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    latest_created_revision: str | None = None
    latest_rolled_out_revision: str | None = None
    previous_rolled_out_revision: str | None = None
    traffic: list[TrafficTarget] = Field(default_factory=list)
    rolled_out_storage_uri: str | None = Field(
        None, description="what the rolled-out revision loads (its predictor Deployment's storage-initializer)")
    predictor_deployments: list[str] = Field(default_factory=list)
    pods: list[PredictorPod] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list, description="the InferenceService's events: 'REASON at TIME: message'")
    canary_started_at: str | None = Field(None, description="when the live canary revision was created (its event)")
    spec: dict[str, Any] = Field(default_factory=dict, description="the InferenceService's spec, as read")

    @property
    def canary(self) -> TrafficTarget | None:
        """The canary revision while one is live (a latest revision beside the rolled-out one)."""
        if len(self.traffic) < 2:
            return None
        return next((t for t in self.traffic if t.latest and t.revision != self.latest_rolled_out_revision), None)

    def line(self) -> str:
        state = "Ready" if self.ready else f"not Ready ({self.reason}: {self.message})" if self.reason else "not Ready"
        split = ", ".join(f"{t.revision} {t.percent}%" for t in self.traffic) or "no traffic status"
        return f"isvc {self.namespace}/{self.name} {state}; storageUri {self.storage_uri}; traffic: {split}"


class PredictorLogQuery(_Input):
    """`kubectl logs -n NS POD -c CONTAINER --tail=N` for every predictor pod of one InferenceService."""

    namespace: str
    name: str
    container: Literal["kserve-container", "storage-initializer"] = "kserve-container"
    tail_lines: int = Field(100, ge=1, le=5000)


class PodLogLines(BaseModel):
    pod: str
    container: str
    canary: bool = False
    lines: list[str] = Field(default_factory=list)
    unavailable: str | None = Field(None, description="why the log could not be read (container waiting, ...)")


class InferenceServicePatch(_Input):
    """`kubectl patch isvc NAME -n NS --type=json -p '[{"op": "replace", "path": PATH, "value": VALUE}]'`;
    the value it replaced is recorded (`before`), so a rollback restores it."""

    namespace: str
    name: str
    path: PatchPath
    value: int | str
    action: str = "patch InferenceService"
    rollback: bool = False
    dry_run: bool = False


class InferenceServiceRedeploy(_Input):
    """Seed 004's "If model is corrupted, redeploy": `kubectl delete isvc NAME` then `kubectl apply`
    of the same spec (as read before the delete)."""

    namespace: str
    name: str
    wait_seconds: float = Field(60, gt=0, description="how long to wait for the old object to go")
    dry_run: bool = False


class GpuAllocationQuery(_Input):
    """`kubectl describe nodes | grep -A5 'Allocated resources'`, taints, and every pod holding GPUs."""

    node_selector: str = "nvidia.com/gpu.present=true"


class GpuNodeAllocation(BaseModel):
    name: str
    allocatable: int
    requested: int
    unschedulable: bool = False
    taints: list[str] = Field(default_factory=list, description="'key=value:Effect'")

    @property
    def free(self) -> int:
        return max(0, self.allocatable - self.requested)


class GpuPod(BaseModel):
    namespace: str
    name: str
    node: str | None
    gpus: int
    ready: bool
    owner: str | None = Field(None, description="its controller: 'Deployment/NAME' (via its ReplicaSet) or 'KIND/NAME'")
    age_seconds: float | None = None


class GpuAllocation(BaseModel):
    nodes: list[GpuNodeAllocation] = Field(default_factory=list)
    pods: list[GpuPod] = Field(default_factory=list)

    @property
    def free(self) -> int:
        return sum(n.free for n in self.nodes if not n.unschedulable)


# ---- seed 004's error classes ----------------------------------------------------------------

ErrorClass = Literal["cuda-oom", "oom", "model-loading", "transient", "http-5xx"]

_CLASSES: list[tuple[ErrorClass, re.Pattern[str]]] = [
    ("cuda-oom", re.compile(r"CUDA out of memory|torch\.OutOfMemoryError|torch\.cuda\.OutOfMemoryError", re.I)),
    ("oom", re.compile(r"OOMKilled|Out of memory: Killed process|MemoryError|Cannot allocate memory", re.I)),
    ("model-loading", re.compile(r"Error\(s\) in loading state_dict|size mismatch|Failed to fetch model|No model found|"
                                 r"AccessDenied|Error loading model|safetensors_rust\.SafetensorError", re.I)),
    ("transient", re.compile(r"CUDA error: an illegal memory access|Engine background task failed|"
                             r"Connection reset by peer|NCCL error|Timeout while waiting", re.I)),
    ("http-5xx", re.compile(r'HTTP/1\.[01]" 5\d\d')),
]

# The seed's "Common errors and solutions", per class.
SOLUTIONS: dict[ErrorClass, str] = {
    "cuda-oom": "CUDA OOM: reduce concurrent requests, increase GPU memory",
    "oom": "OOM: reduce batch size or max_tokens",
    "model-loading": "Model loading: check S3 permissions, storage URI",
    "transient": "transient engine error: restart the predictor pods",
    "http-5xx": "requests failing with 5xx",
}


def classify_line(line: str) -> ErrorClass | None:
    """The seed's error class of one log line (`grep -i error`), None for a line that is not one."""
    for kind, pattern in _CLASSES:
        if pattern.search(line):
            return kind
    return None


def classify(lines: list[str]) -> dict[ErrorClass, int]:
    """How many lines of each error class."""
    counts: dict[ErrorClass, int] = {}
    for line in lines:
        kind = classify_line(line)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# ---- storage-initializer diagnoses (seed 004 "Model Not Loading", 3. Common issues) ---------------

StorageCause = Literal["access-denied", "not-found", "disk-full", "unknown"]

_STORAGE: list[tuple[StorageCause, re.Pattern[str], str]] = [
    ("access-denied", re.compile(r"AccessDenied|not authorized to perform|403 Forbidden", re.I),
     "S3 access denied: check the IRSA role (`kubectl describe sa kserve-controller-manager -n kserve`)"),
    ("not-found", re.compile(r"No model found|NoSuchKey|NoSuchBucket|does not exist|404", re.I),
     "model not found: verify storageUri"),
    ("disk-full", re.compile(r"No space left on device|Errno 28|DiskPressure", re.I),
     "disk full: check node storage"),
]


def storage_diagnosis(lines: list[str]) -> tuple[StorageCause, str, str | None]:
    """(cause, the seed's advice, the line that shows it) for a storage-initializer's log."""
    for cause, pattern, advice in _STORAGE:
        hit = next((line for line in lines if pattern.search(line)), None)
        if hit is not None:
            return cause, advice, hit.strip()
    return "unknown", "no known storage error in the log: a human reads it", None
