"""Requests and answers of the GPU activities, free of the `kubernetes` package: the nvidia.com/gpu
resource on nodes and pods (activities/kube/gpus.py) and the nvidia-smi probe pods
(activities/kube/gpu_probes.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from activities.models import Request
from activities.nvidia_smi import GpuProbeReport

DEVICE_PLUGIN_NAMESPACE = "kube-system"
DEVICE_PLUGIN_DAEMONSET = "nvidia-device-plugin-daemonset"
DEVICE_PLUGIN_POD_SELECTOR = "name=nvidia-device-plugin-ds"
# GPU feature discovery's label for how many GPUs the node physically has.
GPU_COUNT_LABEL = "nvidia.com/gpu.count"


# ---- inventory -------------------------------------------------------------------------------


class GpuInventoryQuery(Request):
    node_selector: str | None = Field(
        None, description="label selector of the GPU nodes; None: the one KubeGpus was built with"
    )


class GpuPod(BaseModel):
    """A pod and the GPUs it asks for (limits, as the device plugin allocates them)."""

    namespace: str
    name: str
    gpus: int
    node: str | None = None
    phase: str = "Unknown"
    ready: bool = False
    owner: str | None = Field(
        None,
        description="its controller: 'Deployment/NAME' (via its ReplicaSet) or "
        "'KIND/NAME'; gpu_allocation reads it, gpu_inventory does not",
    )
    age_seconds: float | None = None


class GpuNodeInventory(BaseModel):
    """`kubectl describe node` for one GPU node, the GPU lines only."""

    node: str
    ready: bool
    unschedulable: bool
    capacity: int
    allocatable: int
    in_use: int = Field(description="GPUs held by the node's running and pending pods")
    pods: list[GpuPod] = Field(default_factory=list)
    taints: list[str] = Field(default_factory=list)
    expected_gpus: int | None = Field(
        None, description="GPU count from GPU feature discovery's nvidia.com/gpu.count label"
    )

    @computed_field
    @property
    def problems(self) -> list[str]:
        found = []
        if not self.ready:
            found.append("node NotReady")
        if self.unschedulable:
            found.append("node cordoned")
        if self.capacity == 0:
            found.append("no nvidia.com/gpu capacity: the device plugin is not advertising GPUs")
        elif self.allocatable < self.capacity:
            found.append(f"only {self.allocatable} of {self.capacity} GPUs allocatable")
        if self.expected_gpus and self.capacity and self.capacity < self.expected_gpus:
            found.append(f"capacity {self.capacity} below the {self.expected_gpus} GPUs the node has")
        return found


class GpuInventory(BaseModel):
    node_selector: str
    nodes: list[GpuNodeInventory]

    @computed_field
    @property
    def total_capacity(self) -> int:
        return sum(n.capacity for n in self.nodes)

    @computed_field
    @property
    def total_allocatable(self) -> int:
        return sum(n.allocatable for n in self.nodes)

    @computed_field
    @property
    def total_in_use(self) -> int:
        return sum(n.in_use for n in self.nodes)

    @property
    def nodes_with_problems(self) -> list[GpuNodeInventory]:
        return [n for n in self.nodes if n.problems]


# ---- device plugin ---------------------------------------------------------------------------


class DevicePluginQuery(Request):
    namespace: str = DEVICE_PLUGIN_NAMESPACE
    daemonset: str = DEVICE_PLUGIN_DAEMONSET
    pod_selector: str = DEVICE_PLUGIN_POD_SELECTOR


class DevicePluginPod(BaseModel):
    name: str
    node: str | None
    phase: str
    ready: bool
    restarts: int
    reason: str | None = Field(None, description="CrashLoopBackOff, ImagePullBackOff, Error ...")
    message: str | None = None


class DevicePluginHealth(BaseModel):
    """`kubectl get ds` and `kubectl get pods -l name=nvidia-device-plugin-ds` in one answer."""

    namespace: str
    daemonset: str
    found: bool
    desired: int = 0
    current: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    pods: list[DevicePluginPod] = Field(default_factory=list)

    @computed_field
    @property
    def problems(self) -> list[str]:
        if not self.found:
            return [f"DaemonSet {self.namespace}/{self.daemonset} not found: is the NVIDIA device plugin installed?"]
        found = []
        if self.desired == 0:
            found.append("the DaemonSet schedules no pods: no node matches its node selector")
        if self.ready < self.desired:
            found.append(f"{self.ready}/{self.desired} device plugin pods ready")
        if self.updated < self.desired:
            found.append(f"{self.updated}/{self.desired} device plugin pods updated")
        found += [f"pod {p.name} on {p.node}: {p.reason or p.phase}" for p in self.pods if not p.ready]
        return found

    @computed_field
    @property
    def healthy(self) -> bool:
        return not self.problems


# ---- nvidia-smi probe and GPU test pod -------------------------------------------------------


class NodeGpuProbeRequest(Request):
    incident_id: str = Field(min_length=1, description="with node and purpose, names the probe pod")
    node: str = Field(min_length=1)
    purpose: str = Field("driver-check", description="a second probe in one incident uses another purpose")
    expected_gpus: int | None = Field(
        None, ge=0, description="None: the node's nvidia.com/gpu.count label, else its capacity"
    )
    timeout_seconds: float = Field(120, gt=0)
    poll_seconds: float = Field(1.0, gt=0)
    max_temp_c: float = 85


class NodeGpuProbe(BaseModel):
    """What nvidia-smi said on one node, or why it could not say anything."""

    node: str
    pod_name: str
    completed: bool = Field(description="the probe pod ran to the end (Succeeded or Failed)")
    exit_code: int | None = None
    output: str = ""
    report: GpuProbeReport | None = None
    problem: str | None = Field(None, description="why there is no report: the probe did not run or finish")

    @computed_field
    @property
    def healthy(self) -> bool:
        return self.report is not None and self.report.healthy

    @computed_field
    @property
    def reasons(self) -> list[str]:
        return [self.problem] if self.problem else (self.report.reasons if self.report else [])


class GpuTestPodRequest(Request):
    incident_id: str = Field(min_length=1)
    purpose: str = "verify"
    gpus: int = Field(1, ge=1)
    max_temp_c: float = 85
    node: str | None = Field(None, description="pin the test to one node (by selector, so the scheduler still decides)")
    timeout_seconds: float = Field(120, gt=0)
    poll_seconds: float = Field(1.0, gt=0)


class GpuTestPodResult(BaseModel):
    """SOP-003's `kubectl run gpu-test --limits nvidia.com/gpu=1 -- nvidia-smi`."""

    pod_name: str
    scheduled: bool
    node: str | None = None
    succeeded: bool
    phase: str
    scheduling_message: str | None = Field(None, description="the scheduler's reason while unscheduled")
    output: str = ""
    report: GpuProbeReport | None = None
    problem: str | None = None


# ---- pods waiting for GPUs -------------------------------------------------------------------


class GpuPendingPodsQuery(Request):
    namespace: str | None = Field(None, description="None: all namespaces")


class GpuPendingPod(BaseModel):
    namespace: str
    name: str
    gpus: int
    message: str = Field(
        description="the scheduler's words, e.g. '0/4 nodes are available: 3 Insufficient nvidia.com/gpu'"
    )
    since: str | None = Field(None, description="when the scheduler first said so (RFC 3339)")


class GpuPendingPods(BaseModel):
    pods: list[GpuPendingPod]

    @computed_field
    @property
    def gpus_wanted(self) -> int:
        return sum(p.gpus for p in self.pods)


# ---- GPU allocation (seed 004 "GPU Not Available") -----------------------------------------------


class GpuAllocationQuery(Request):
    """`kubectl describe nodes | grep -A5 'Allocated resources'`, taints, and every pod holding GPUs."""

    node_selector: str = "nvidia.com/gpu.present=true"


# Taints the node lifecycle controller and the kubelet manage (not-ready, unreachable, *-pressure,
# unschedulable, network-unavailable) and the cloud provider's "uninitialized": they say what is
# wrong with the node, and go when it is fixed. Removing one by hand hides the fault; never offered.
LIFECYCLE_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")


def lifecycle_taint(taint: str) -> bool:
    """A 'key=value:Effect' the cluster itself manages (see LIFECYCLE_TAINT_PREFIXES)."""
    return taint.startswith(LIFECYCLE_TAINT_PREFIXES)


class GpuNodeAllocation(BaseModel):
    name: str
    allocatable: int
    requested: int
    unschedulable: bool = False
    taints: list[str] = Field(default_factory=list, description="'key=value:Effect'")
    ready: str = Field(
        "True",
        description="the node's Ready condition: 'True', 'False' (NotReady) or 'Unknown' (its kubelet stopped "
        "posting status); allocatable is then the last the kubelet reported, not capacity to count on",
    )

    @property
    def free(self) -> int:
        """GPUs a new pod could get here: none on a node that is not Ready."""
        return max(0, self.allocatable - self.requested) if self.ready == "True" else 0

    @property
    def removable_taints(self) -> list[str]:
        """Taints a human may remove (an owner's call), without the cluster's own lifecycle taints."""
        return [t for t in self.taints if not lifecycle_taint(t)]


class GpuAllocation(BaseModel):
    nodes: list[GpuNodeAllocation] = Field(default_factory=list)
    pods: list[GpuPod] = Field(default_factory=list)

    @property
    def free(self) -> int:
        """Free GPUs on Ready, schedulable nodes."""
        return sum(n.free for n in self.nodes if not n.unschedulable)
