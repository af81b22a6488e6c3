"""Seed 004's KServe requests and answers: an InferenceService described, its predictor's logs,
`kubectl patch isvc` (JSON patch of one field), a redeploy. Pure pydantic (activities/kserve.py does
the work).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.kube.models import PodSummary
from activities.models import Request

ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.knative.dev/revision"

# The fields the seed's procedures patch (seed 004 "Scaling", "Rollback Procedures").
PatchPath = Literal[
    "/spec/predictor/canaryTrafficPercent", "/spec/predictor/model/storageUri", "/spec/predictor/minReplicas"
]


class InferenceServiceRef(Request):
    """`kubectl describe isvc NAME -n NS` plus its predictor pods (`-l serving.kserve.io/inferenceservice=NAME`)."""

    namespace: str
    name: str


class TrafficTarget(BaseModel):
    revision: str
    percent: int
    latest: bool = False


class ModelFailure(BaseModel):
    """KServe's `modelStatus.lastFailureInfo`: why the model last failed to load, in the model server's words."""

    reason: str = Field(
        "", description="ModelLoadFailed, RuntimeUnhealthy, NoSupportingRuntime, InvalidPredictorSpec, ..."
    )
    message: str = ""
    exit_code: int | None = None


class PredictorPod(BaseModel):
    pod: PodSummary
    revision: str | None = None
    storage_uri: str | None = Field(None, description="the storage-initializer's source")
    canary: bool = Field(False, description="a pod of the latest created revision while it is not rolled out")
    init_state: str | None = Field(None, description="the storage-initializer's state: CrashLoopBackOff, Error, ...")
    server_state: str | None = Field(
        None, description="the kserve-container's state when not running: CrashLoopBackOff, Error, OOMKilled, ..."
    )
    server_message: str | None = Field(
        None, description="the kserve-container's last termination message (its log's tail, as KServe sets it)"
    )
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
        None, description="what the rolled-out revision loads (its predictor Deployment's storage-initializer)"
    )
    predictor_deployments: list[str] = Field(default_factory=list)
    pods: list[PredictorPod] = Field(default_factory=list)
    events: list[str] = Field(
        default_factory=list, description="the InferenceService's events: 'REASON at TIME: message'"
    )
    canary_started_at: str | None = Field(None, description="when the live canary revision was created (its event)")
    model_state: str | None = Field(
        None, description="status.modelStatus.states.targetModelState: Pending, Loading, Loaded, FailedToLoad"
    )
    transition_status: str | None = Field(
        None, description="status.modelStatus.transitionStatus: UpToDate, InProgress, BlockedByFailedLoad, InvalidSpec"
    )
    last_failure: ModelFailure | None = Field(None, description="status.modelStatus.lastFailureInfo")
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


class PredictorLogQuery(Request):
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


class InferenceServicePatch(Request):
    """`kubectl patch isvc NAME -n NS --type=json -p '[{"op": "replace", "path": PATH, "value": VALUE}]'`;
    the value it replaced is recorded (`before`), so a rollback restores it."""

    namespace: str
    name: str
    path: PatchPath
    value: int | str
    action: str = "patch InferenceService"
    rollback: bool = False
    dry_run: bool = False


class InferenceServiceRedeploy(Request):
    """Seed 004's "If model is corrupted, redeploy": `kubectl delete isvc NAME` then `kubectl apply`
    of the same spec (as read before the delete)."""

    namespace: str
    name: str
    wait_seconds: float = Field(60, gt=0, description="how long to wait for the old object to go")
    dry_run: bool = False
