"""Inputs and outputs of SOP-003's remediation writes, free of the `kubernetes` package,
so the GpuUnavailable workflow imports them without pulling the client into its sandbox."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from activities.gpu_models import DEVICE_PLUGIN_DAEMONSET, DEVICE_PLUGIN_NAMESPACE
from activities.models import ClusterChange

# On a node we cordoned: which incident step did it and the spec.unschedulable it replaced
# (JSON). A retried cordon reads its original back from here; `kubectl describe node` shows
# humans who cordoned it and why.
CORDONED_BY_ANNOTATION = "llm-runbooks.io/cordoned-by"
# kubectl's mirror-pod annotation: static pods the kubelet owns, which drain leaves alone.
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- device plugin ---------------------------------------------------------------------------


class DaemonSetRestart(_Input):
    """`kubectl rollout restart ds/NAME -n NS`, stamped by one incident step.

    `restarted_at` and `restarted_by` come from the workflow (its clock, its incident id and
    step), so a retry writes the very same values and recognises them as already there.
    """

    namespace: str = DEVICE_PLUGIN_NAMESPACE
    name: str = DEVICE_PLUGIN_DAEMONSET
    restarted_at: str = Field(min_length=1, description="RFC 3339 time for kubectl's restartedAt")
    restarted_by: str = Field(min_length=1, description="incident id / step")
    dry_run: bool = False


class DaemonSetRolloutWait(_Input):
    """`kubectl rollout status ds/NAME -n NS --timeout=180s`."""

    namespace: str = DEVICE_PLUGIN_NAMESPACE
    name: str = DEVICE_PLUGIN_DAEMONSET
    timeout_seconds: float = Field(180, gt=0)
    poll_seconds: float = Field(2, gt=0)


class DaemonSetRolloutStatus(BaseModel):
    namespace: str
    name: str
    complete: bool
    message: str = Field(description="kubectl rollout status's words")
    desired: int = 0
    updated: int = 0
    available: int = 0
    waited_seconds: float = 0


# ---- nodes -----------------------------------------------------------------------------------


class NodeCordon(_Input):
    """`kubectl cordon NODE`; `change_key` (incident id + step + node) lets a retry know its own cordon."""

    node: str = Field(min_length=1)
    change_key: str = Field(min_length=1)
    reason: str = Field("", description="why, for the node's annotation and the report")
    dry_run: bool = False


class NodeUncordon(_Input):
    """Undo our cordon: spec.unschedulable back to the value the cordon replaced (None: unset)."""

    node: str = Field(min_length=1)
    original: bool | None = Field(None, description="the recorded spec.unschedulable before the cordon")
    dry_run: bool = False


class NodeDrain(_Input):
    """`kubectl drain NODE --ignore-daemonsets --delete-emptydir-data --timeout=...`.

    Evicts every pod on the node except DaemonSet pods, mirror pods and finished pods, then
    waits until they are gone. Pods no controller would recreate are left (kubectl drain refuses
    them without --force): evicting them would lose them.
    """

    node: str = Field(min_length=1)
    timeout_seconds: float = Field(300, gt=0)
    poll_seconds: float = Field(2, gt=0)
    dry_run: bool = False


class NodeDrainResult(BaseModel):
    node: str
    evicted: list[ClusterChange] = Field(default_factory=list, description="one per eviction, each once")
    daemonset_pods: list[str] = Field(default_factory=list, description="left in place (--ignore-daemonsets)")
    left: list[str] = Field(default_factory=list, description="'ns/name: why' for pods still on the node")

    @property
    def drained(self) -> bool:
        return not self.left
