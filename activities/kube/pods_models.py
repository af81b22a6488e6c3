"""Inputs and outputs of the memory activities (SOP-002), free of the `kubernetes` package,
so the HighMemory workflow imports them without pulling the client into its sandbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# On an LLMDeployment we changed: per spec field, who changed it and the value it replaced.
# A retry of the same write reads its original back from here, so rollback stays exact even
# when the first attempt's result was lost; `kubectl get llmd -o yaml` shows it to humans too.
REPLACED_ANNOTATION = "llm-runbooks.io/replaced"
MIB = 1024 * 1024


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- reads ----------------------------------------------------------------------------------


class TopPodsQuery(_Input):
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


class MemoryEventsQuery(_Input):
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


class PodRef(_Input):
    namespace: str
    name: str


class MemoryLimitsQuery(_Input):
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


# ---- writes ---------------------------------------------------------------------------------


class LLMDeploymentChange(_Input):
    """Set one field of an LLMDeployment's spec (merge patch), remembering the value it replaces.

    A dict value merges into the field (`{"batchSize": 1}` leaves the other serving settings);
    a None removes what it names, as merge patch's `null` does: the rollback of a setting that
    was not there before. `change_key` names this write (incident id + step + object) so a
    retry recognises its own earlier attempt.
    """

    namespace: str
    name: str
    field: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", description="a top-level spec field: serving, replicas")
    value: Any
    change_key: str = Field(min_length=1)
    action: str = Field("patch LLMDeployment", description="what the change is, in the SRE's words")
    rollback: bool = Field(
        False, description="restoring a recorded original: also forget it, leaving the object as it was"
    )
    dry_run: bool = False


class PodDeletion(_Input):
    """`kubectl delete pod NAME -n NS`; `uid` pins the very pod chosen, not a namesake."""

    namespace: str
    name: str
    uid: str | None = None
    why: str = "restart the highest memory consumer"
    dry_run: bool = False
