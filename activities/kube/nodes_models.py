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


EVICTION_RETRY_SECONDS_DEFAULT = 5.0  # kubectl drain's wait between evictions a budget refuses


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
    eviction_retry_seconds: float = Field(EVICTION_RETRY_SECONDS_DEFAULT, gt=0,
                                          description="wait before retrying an eviction a budget refused")
    dry_run: bool = False


class BlockedEviction(BaseModel):
    """A pod whose eviction the API server refused with 429: a PodDisruptionBudget allows no disruption now."""

    namespace: str
    name: str
    budgets: list[str] = Field(default_factory=list, description="'ns/name' of the budgets that block it")
    message: str = Field("", description="the API server's words, e.g. 'The disruption budget X needs 3 "
                                         "healthy pods and has 3 currently'")

    def __str__(self) -> str:
        by = ", ".join(self.budgets) or "a PodDisruptionBudget"
        return f"{self.namespace}/{self.name} (blocked by {by}: {self.message})"


class EvictedPod(BaseModel):
    namespace: str
    name: str
    uid: str


class NodeDrainResult(BaseModel):
    node: str
    evicted: list[ClusterChange] = Field(default_factory=list, description="one per eviction, each once")
    daemonset_pods: list[str] = Field(default_factory=list, description="left in place (--ignore-daemonsets)")
    left: list[str] = Field(default_factory=list, description="'ns/name: why' for pods still on the node")
    blocked: list[BlockedEviction] = Field(
        default_factory=list, description="pods a PodDisruptionBudget still protected when the drain timed out")

    @property
    def drained(self) -> bool:
        return not self.left


class NodeEvictionRound(_Input):
    """One pass of `kubectl drain NODE --ignore-daemonsets --delete-emptydir-data`'s evictions.

    Every pod drain would evict is tried once; one a PodDisruptionBudget protects (429) is
    reported as blocked, and the others are evicted anyway. The playbook repeats the round
    every 5 s (kubectl's interval) until nothing is blocked or the drain's timeout passes, so
    each eviction reaches the incident's record as it happens.
    """

    node: str = Field(min_length=1)
    dry_run: bool = False


class NodeEvictionRoundResult(BaseModel):
    node: str
    evicted: list[ClusterChange] = Field(default_factory=list, description="evicted in this round")
    evicted_pods: list[EvictedPod] = Field(default_factory=list, description="the same pods, with their uid")
    blocked: list[BlockedEviction] = Field(default_factory=list)
    daemonset_pods: list[str] = Field(default_factory=list, description="left in place (--ignore-daemonsets)")
    left: list[str] = Field(default_factory=list, description="'ns/name: why' for pods drain does not evict")
    terminating: int = Field(0, description="pods already evicted and still terminating (not evicted again)")


class PodsGoneWait(_Input):
    """kubectl drain's last step: wait until every evicted pod is deleted (or replaced by another uid)."""

    node: str = Field(min_length=1)
    pods: list[EvictedPod]
    timeout_seconds: float = Field(300, gt=0)
    poll_seconds: float = Field(2, gt=0)


class PodsGone(BaseModel):
    left: list[str] = Field(default_factory=list, description="'ns/name: still terminating after Ns'")
