"""SOP-003's vocabulary: its input and timings, one look at GPU visibility, the cordon-drain gate and
patch ids, and the pure helpers the steps share. The steps themselves are in workflows/playbooks/gpu_nodes/gpu_unavailable.py,
the cordon and drain of one node in workflows/playbooks/gpu_nodes/drain.py, the repeated reads in
workflows/playbooks/gpu_nodes/visibility.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from workflows.incident import IncidentInput, SopTimings, gate_name

with workflow.unsafe.imports_passed_through():
    from activities.kube.gpus_models import DevicePluginQuery, NodeGpuProbe
    from activities.models import ClusterChange

CORDONED = "node cordoned"  # KubeGpus' word for a cordoned node: not a GPU visibility problem

GATE_CORDON_DRAIN = "cordon-drain"  # the gate's kind (approvers are set per kind); its target is the node


def cordon_gate(node: str) -> str:
    """The approval gate for cordoning and draining one node, as a decision names it."""
    return gate_name(GATE_CORDON_DRAIN, node)


# What checking and draining GPU nodes asks of Kubernetes (kubectl can-i words): nvidia-smi probe and
# test pods, their logs, cordon, the drain's evictions, and the workloads on the node.
GPU_NODE_ACCESS = (
    "get nodes",
    "list nodes",
    "patch nodes",
    "get pods",
    "list pods",
    "create pods",
    "delete pods",
    "get pods/log",
    "create pods/eviction",
    "list events",
    "list services",
    "list llmdeployments.inference.llm-d.io",
)


class GpuTimings(SopTimings):
    """How long SOP-003 waits, polls and allows each call; SOP values by default, shorter for drills."""

    # Probe and test pod timeouts stay: they bound one pod (and its activeDeadlineSeconds), not a wait.
    cluster_waits = (
        "plugin_rollout_timeout_seconds",
        "rollout_poll_seconds",
        "pod_poll_seconds",
        "visibility_timeout_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
        "drain_timeout_seconds",
        "eviction_retry_seconds",
    )

    model_config = ConfigDict(extra="forbid")

    plugin_rollout_timeout_seconds: float = Field(180, gt=0, description="kubectl rollout status --timeout=180s")
    rollout_poll_seconds: float = Field(5, gt=0)
    probe_timeout_seconds: float = Field(120, gt=0, description="one nvidia-smi probe pod, start to finish")
    test_pod_timeout_seconds: float = Field(120, gt=0, description="the gpu-test pod, start to finish")
    pod_poll_seconds: float = Field(2, gt=0, description="how often probe and test pods are looked at")
    visibility_timeout_seconds: float = Field(
        120, gt=0, description="step 4: how long the GPUs get to come back after the plugin restart"
    )
    verification_timeout_seconds: float = Field(
        300, gt=0, description="bounded wait for a verified recovery after cordoning and draining"
    )
    verification_poll_seconds: float = Field(15, gt=0)
    drain_timeout_seconds: float = Field(300, gt=0, description="kubectl drain --timeout")
    eviction_retry_seconds: float = Field(
        5, gt=0, description="kubectl drain: wait before retrying evictions a PodDisruptionBudget refused"
    )


class GpuUnavailableInput(IncidentInput):
    """IncidentInput plus SOP-003's knobs, all defaulted: a plain IncidentInput starts it too."""

    gpu_node_selector: str | None = Field(
        None, description="label selector of the GPU nodes; None: the worker's (nvidia.com/gpu.present=true)"
    )
    device_plugin: DevicePluginQuery = Field(default_factory=DevicePluginQuery)
    test_gpus: int = Field(1, ge=1, description="kubectl run gpu-test --limits='nvidia.com/gpu=1'")
    max_temp_c: float = Field(85, gt=0, description="a GPU hotter than this is reported faulty")
    timings: GpuTimings = Field(default_factory=GpuTimings)


class Visibility(BaseModel):
    """One look at GPU visibility: what is wrong per GPU node, and cluster-wide."""

    node_problems: dict[str, list[str]] = Field(description="GPU node -> what is wrong with it (empty: fine)")
    cluster_problems: list[str] = Field(
        default_factory=list, description="plugin missing, GPU test, pods waiting for GPUs, models not Ready"
    )
    models_checked: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.node_problems) and not self.failing_nodes and not self.cluster_problems

    @property
    def failing_nodes(self) -> list[str]:
        return [n for n, problems in self.node_problems.items() if problems]

    def __str__(self) -> str:
        if not self.node_problems:
            return "no schedulable GPU node found"
        if self.ok:
            return (
                f"GPU capacity on all {len(self.node_problems)} GPU nodes, device plugin pods running, "
                "GPU test pod passed, no pod waiting for GPUs"
                + (", every LLMDeployment Ready" if self.models_checked else "")
            )
        parts = [f"{n}: {'; '.join(p)}" for n, p in self.node_problems.items() if p]
        return " | ".join(parts + self.cluster_problems)


def probe_reasons(probe: NodeGpuProbe | str) -> list[str]:
    """Why nvidia-smi condemns the node; a probe that could not run condemns nothing."""
    if isinstance(probe, str) or not probe.completed:
        return []
    return probe.reasons


def probe_summary(probe: NodeGpuProbe | str) -> str:
    """One line for Slack and the timeline: the reasons, why the probe did not finish, or `N GPUs healthy`."""
    if isinstance(probe, str):
        return probe
    if not probe.completed:
        return f"probe did not finish: {probe.problem}"
    if probe.reasons:
        return "; ".join(probe.reasons)
    return f"{len(probe.report.gpus) if probe.report else 0} GPUs healthy"


def recorded_cordons(changes: list[ClusterChange]) -> list[ClusterChange]:
    """The cordons this incident made (before != after), newest first, each node once."""
    first: dict[str, ClusterChange] = {}
    for c in changes:
        if c.kind == "Node" and c.action == "cordon node" and c.before != c.after and not c.dry_run:
            first.setdefault(c.name, c)
    return list(reversed(first.values()))
