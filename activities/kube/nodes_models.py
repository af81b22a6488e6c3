"""Requests and answers of the node activities (activities/kube/nodes.py), free of the `kubernetes`
package: `kubectl get nodes`, `kubectl cordon|uncordon|drain` and a node's own events, with the
NVIDIA XID codes the kernel logged."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field, computed_field

from activities.kube.models import PodRef
from activities.models import ClusterChange, Request

# On a node we cordoned: which incident step did it and the spec.unschedulable it replaced
# (JSON). A retried cordon reads its original back from here; `kubectl describe node` shows
# humans who cordoned it and why.
CORDONED_BY_ANNOTATION = "llm-runbooks.io/cordoned-by"
# kubectl's mirror-pod annotation: static pods the kubelet owns, which drain leaves alone.
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# `NVRM: Xid (PCI:0000:3b:00): 48, pid=..., name=..., An uncorrectable double bit error ...`
XID_PATTERN = re.compile(r"\bXid\s*\([^)]*\):\s*(\d+)", re.IGNORECASE)


# ---- reads ----------------------------------------------------------------------------------


class NodeQuery(Request):
    label_selector: str | None = None


class NodeSummary(BaseModel):
    name: str
    ready: bool
    unschedulable: bool = False
    conditions: dict[str, str] = Field(default_factory=dict, description="type -> status")
    gpu_capacity: int = 0
    gpu_allocatable: int = 0
    labels: dict[str, str] = Field(default_factory=dict)


class NodeHint(Request):
    """What an alert names a node by, as exporters label it: `node` (a relabelled node name),
    `Hostname` (DCGM exporter's: the node's hostname, or in Kubernetes the exporter pod's name),
    `instance` (host:port of the scraped target: the node's address, or the exporter pod's IP), and
    `pod`/`namespace` (or `exported_pod`/`exported_namespace`: the workload pod DCGM maps a GPU to)."""

    labels: dict[str, str] = Field(default_factory=dict, description="the alert's labels")


class FoundNode(BaseModel):
    """The node an alert is about, and how it was found; `node` None: none could be found (`tried`
    says what each label led to)."""

    node: str | None = None
    how: str = ""
    tried: list[str] = Field(default_factory=list)


class NodeEventsQuery(Request):
    """`kubectl get events -A --field-selector involvedObject.kind=Node,involvedObject.name=NODE`."""

    node: str = Field(min_length=1)
    warnings_only: bool = Field(True, description="only type=Warning events, as `kubectl describe node` lists them")
    since: datetime | None = Field(None, description="only events last seen at or after this time")


class NodeEvent(BaseModel):
    reason: str
    message: str
    source: str = Field("", description="the component that reported it (kernel-monitor, kubelet ...)")
    count: int = 1
    last_seen: datetime | None = None

    @computed_field
    @property
    def xid(self) -> int | None:
        """The XID code of an `NVRM: Xid` line, else None."""
        m = XID_PATTERN.search(self.message)
        return int(m.group(1)) if m else None

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" + (f" (x{self.count})" if self.count > 1 else "")


class NodeEvents(BaseModel):
    node: str
    events: list[NodeEvent] = Field(default_factory=list, description="newest first")


# ---- cordon and drain ------------------------------------------------------------------------


class NodeCordon(Request):
    """`kubectl cordon NODE`; `change_key` (incident id + step + node) lets a retry know its own cordon."""

    node: str = Field(min_length=1)
    change_key: str = Field(min_length=1)
    reason: str = Field("", description="why, for the node's annotation and the report")
    dry_run: bool = False


class NodeUncordon(Request):
    """Undo our cordon: spec.unschedulable back to the value the cordon replaced (None: unset)."""

    node: str = Field(min_length=1)
    original: bool | None = Field(None, description="the recorded spec.unschedulable before the cordon")
    dry_run: bool = False


class BlockedEviction(BaseModel):
    """A pod whose eviction the API server refused with 429: a PodDisruptionBudget allows no disruption now."""

    namespace: str
    name: str
    budgets: list[str] = Field(default_factory=list, description="'ns/name' of the budgets that block it")
    message: str = Field(
        "",
        description="the API server's words, e.g. 'The disruption budget X needs 3 healthy pods and has 3 currently'",
    )

    def __str__(self) -> str:
        if not self.budgets and "disruption budget" not in self.message:
            # a 429 from the API server's own throttling (priority and fairness), not a budget
            return f"{self.namespace}/{self.name} (429: {self.message})"
        by = ", ".join(self.budgets) or "a PodDisruptionBudget"
        return f"{self.namespace}/{self.name} (blocked by {by}: {self.message})"


class RefusedEviction(BaseModel):
    """A pod whose eviction the API server refused with an answer retrying will not change: kubectl
    drain gives up on it ("error when evicting pods/..."). A pod covered by more than one
    PodDisruptionBudget gets 500 InternalError, which the eviction subresource does not support."""

    namespace: str
    name: str
    code: int = Field(description="the HTTP status, e.g. 500")
    reason: str = Field("", description="the Status reason, e.g. 'InternalError'")
    message: str = Field("", description="the API server's words")

    @property
    def several_budgets(self) -> bool:
        return "more than one PodDisruptionBudget" in self.message

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} (eviction refused, {self.code} {self.reason}: {self.message})"


class NodeEvictionRound(Request):
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
    evicted_pods: list[PodRef] = Field(default_factory=list, description="the same pods, with their uid")
    blocked: list[BlockedEviction] = Field(default_factory=list)
    refused: list[RefusedEviction] = Field(default_factory=list, description="not evicted, and a retry will not help")
    daemonset_pods: list[str] = Field(default_factory=list, description="left in place (--ignore-daemonsets)")
    left: list[str] = Field(default_factory=list, description="'ns/name: why' for pods drain does not evict")
    terminating: int = Field(0, description="pods already evicted and still terminating (not evicted again)")


class PodsGoneWait(Request):
    """kubectl drain's last step: wait until every evicted pod is deleted (or replaced by another uid)."""

    node: str = Field(min_length=1)
    pods: list[PodRef]
    timeout_seconds: float = Field(300, gt=0)
    poll_seconds: float = Field(2, gt=0)


class PodsGone(BaseModel):
    left: list[str] = Field(default_factory=list, description="'ns/name: still terminating after Ns'")
