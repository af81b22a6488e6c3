"""Requests and answers of the pod activities (activities/kube/pods.py), free of the `kubernetes`
package: `kubectl get pods`, `kubectl logs`, `kubectl top pods`, memory events, limits, readiness,
and the pod deletions the playbooks make."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from activities.kube.models import PodRef
from activities.models import Request

MIB = 1024 * 1024


# ---- reads ----------------------------------------------------------------------------------


class PodQuery(Request):
    namespace: str | None = Field(None, description="None: all namespaces")
    label_selector: str | None = None


class LogQuery(Request):
    """`kubectl logs -n NS deployment/NAME --tail=N` or `kubectl logs -n NS POD --tail=N`."""

    namespace: str
    deployment: str | None = None
    pod: str | None = None
    container: str | None = None
    tail_lines: int = Field(20, ge=1, le=5000)

    @model_validator(mode="after")
    def _one_target(self) -> LogQuery:
        if (self.deployment is None) == (self.pod is None):
            raise ValueError("give exactly one of deployment or pod")
        return self


class PodLog(BaseModel):
    namespace: str
    pod: str
    text: str


class TopPodsQuery(Request):
    """`kubectl top pods [-n NS | -A] --sort-by=memory | head -N`."""

    namespace: str | None = Field(None, description="None: all namespaces")
    limit: int = Field(10, ge=1, le=500)
    # metrics-server answers 503 for minutes after it (re)starts: a glitch-sized retry is not enough.
    metrics_wait_seconds: float = Field(180, ge=0, description="how long a metrics API answering 503 is waited for")
    metrics_poll_seconds: float = Field(5, gt=0)


class PodMemory(BaseModel):
    """One line of `kubectl top pods`: a pod's working-set memory, summed over its containers."""

    namespace: str
    name: str
    memory_bytes: int
    containers: dict[str, int] = Field(default_factory=dict, description="container -> bytes")

    @property
    def mib(self) -> int:
        return round(self.memory_bytes / MIB)


class MemoryEventsQuery(Request):
    """`kubectl get events -A --field-selector type=Warning | grep -i memory` (or `grep -i oom`)."""

    namespace: str | None = Field(None, description="None: all namespaces")
    oom_only: bool = Field(False, description="only OOM kills, as the SOP's verification greps for")
    since: datetime | None = Field(None, description="only events last seen at or after this time")


class MemoryEvent(BaseModel):
    namespace: str
    kind: str = Field(description="involvedObject.kind")
    name: str = Field(description="involvedObject.name")
    reason: str
    message: str
    count: int = 1
    last_seen: datetime | None = None

    @property
    def oom(self) -> bool:
        return "oom" in f"{self.reason} {self.message}".lower()


class MemoryLimitsQuery(Request):
    """`kubectl get pod POD -n NS -o jsonpath='{.spec.containers[*].resources.limits.memory}'` for each pod."""

    pods: list[PodRef] = Field(min_length=1)


class ContainerMemoryLimit(BaseModel):
    container: str
    limit: str | None = Field(None, description="resources.limits.memory as written, e.g. 32Gi")
    limit_bytes: int | None = None
    request_bytes: int | None = None


class PodMemoryLimits(BaseModel):
    namespace: str
    name: str
    found: bool = True  # False: the pod is gone (replaced since it was listed)
    uid: str | None = None
    owner: str | None = Field(None, description="the pod's controller, 'ReplicaSet/name'; None: a bare pod")
    containers: list[ContainerMemoryLimit] = Field(default_factory=list)

    @property
    def limit_bytes(self) -> int | None:
        """The pod's memory limit: the sum of its containers', None when any container has none."""
        limits = [c.limit_bytes for c in self.containers]
        return sum(limits) if limits and None not in limits else None  # type: ignore[arg-type]


class ReadinessQuery(Request):
    """One look of `kubectl wait --for=condition=ready pod -l app=NAME`."""

    namespace: str
    app: str
    replicas: int = Field(1, ge=0, description="how many Ready pods the deployment wants")


class PodEvidence(BaseModel):
    """What `kubectl describe pod` shows that tells why a model pod is not Ready."""

    name: str
    uid: str = ""
    phase: str = "Unknown"
    ready: bool = False
    restarts: int = 0
    node: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    init_waiting_reason: str | None = None
    last_terminated_reason: str | None = None
    last_exit_code: int | None = None
    unschedulable: str | None = Field(None, description="the PodScheduled=False message")
    status_reason: str | None = Field(None, description="pod.status.reason, e.g. Evicted, OutOfnvidia.com/gpu")
    status_message: str | None = None
    claims: list[str] = Field(default_factory=list)
    terminating: bool = False

    @property
    def line(self) -> str:
        state = self.waiting_reason or self.init_waiting_reason or self.status_reason or self.phase
        extra = f", last exit {self.last_terminated_reason}" if self.last_terminated_reason else ""
        return f"{self.name}: {self.phase}/{state}, ready={self.ready}, restarts={self.restarts}{extra}"


class PodsReadiness(BaseModel):
    namespace: str
    app: str
    wanted: int
    ready: int
    not_ready: list[str] = Field(default_factory=list, description="pod: status, for the thread")

    @property
    def all_ready(self) -> bool:
        return self.ready >= self.wanted and not self.not_ready


# ---- writes ---------------------------------------------------------------------------------


class PodDeletion(Request):
    """`kubectl delete pod NAME -n NS`; `uid` pins the very pod chosen, not a namesake."""

    namespace: str
    name: str
    uid: str | None = None
    why: str = "restart the highest memory consumer"
    dry_run: bool = False


class FailedPodsDeletion(Request):
    """`kubectl delete pods -l app=NAME --field-selector 'status.phase!=Running'`, for the pods the
    diagnosis saw failing (by uid: a retry never deletes their replacements)."""

    namespace: str
    app: str
    pods: list[PodRef] = Field(min_length=1, description="in `namespace`, each with its uid")
    dry_run: bool = False

    @model_validator(mode="after")
    def _pods_in_namespace(self) -> FailedPodsDeletion:
        strays = [f"{p.namespace}/{p.name}" for p in self.pods if p.namespace != self.namespace]
        if strays:
            raise ValueError(f"pods outside namespace {self.namespace}: {', '.join(strays)}")
        return self
