"""SOP-003's escalation marks (10 and 15 minutes after the alert's startsAt) on the time-skipping server.

The cluster is a recording fake registered under the GPU, remediation and kube activity names:
these tests are about timing, the integration test (test_gpu_unavailable.py) about the real cluster.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from activities.kube.daemonsets_models import DaemonSetRestart, DaemonSetRolloutStatus, DaemonSetRolloutWait
from activities.kube.gpus_models import (
    DevicePluginHealth,
    DevicePluginPod,
    DevicePluginQuery,
    GpuInventory,
    GpuInventoryQuery,
    GpuNodeInventory,
    GpuPendingPods,
    GpuPendingPodsQuery,
    GpuTestPodRequest,
    GpuTestPodResult,
    NodeGpuProbe,
    NodeGpuProbeRequest,
)
from activities.kube.llmdeployments_models import LLMDeploymentQuery, LLMDeploymentSummary
from activities.kube.nodes_models import (
    NodeCordon,
    NodeEvictionRound,
    NodeEvictionRoundResult,
    NodeUncordon,
    PodsGone,
    PodsGoneWait,
)
from activities.models import ClusterChange
from activities.nvidia_smi import GpuProbeReport
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import ServerClock, escalation_pages, minutes_after, run_playbook
from workflows.playbooks.gpu_nodes.gpu_unavailable import POLICY, GpuUnavailable
from workflows.playbooks.gpu_nodes.models import GpuTimings, GpuUnavailableInput, cordon_gate
from workflows.incident.state import IncidentState
from workflows.incident.models import Alert

pytestmark = pytest.mark.timeout(90)
NODES = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]


class FakeCluster:
    """Three GPU nodes whose device plugin lost its registration; the restart heals it if `restart_works`.
    `no_driver` names a node whose nvidia-smi fails (a driver issue the restart cannot fix)."""

    def __init__(self, *, restart_works: bool, no_driver: str | None = None) -> None:
        self.restart_works = restart_works
        self.no_driver = no_driver
        self.restarted = False
        self.writes: list[str] = []

    def _gpus(self, node: str) -> int:
        return 0 if node == self.no_driver or not (self.restart_works and self.restarted) else 8

    @property
    def activities(self) -> list:
        return [
            self.gpu_inventory,
            self.device_plugin_health,
            self.gpu_pending_pods,
            self.probe_node_gpus,
            self.gpu_test_pod,
            self.list_llm_deployments,
            self.restart_daemonset,
            self.wait_for_daemonset_rollout,
            self.cordon_node,
            self.uncordon_node,
            self.evict_node_pods,
            self.wait_for_pods_gone,
        ]

    @activity.defn(name="gpu_inventory")
    async def gpu_inventory(self, query: GpuInventoryQuery) -> GpuInventory:
        return GpuInventory(
            node_selector="nvidia.com/gpu.present=true",
            nodes=[
                GpuNodeInventory(
                    node=n,
                    ready=True,
                    unschedulable=False,
                    capacity=self._gpus(n),
                    allocatable=self._gpus(n),
                    in_use=0,
                    expected_gpus=8,
                )
                for n in NODES
            ],
        )

    @activity.defn(name="device_plugin_health")
    async def device_plugin_health(self, query: DevicePluginQuery) -> DevicePluginHealth:
        pods = [
            DevicePluginPod(
                name=f"plugin-{n}",
                node=n,
                phase="Running",
                ready=self._gpus(n) > 0,
                restarts=3,
                reason=None if self._gpus(n) else "CrashLoopBackOff",
            )
            for n in NODES
        ]
        ready = sum(p.ready for p in pods)
        return DevicePluginHealth(
            namespace=query.namespace,
            daemonset=query.daemonset,
            found=True,
            desired=3,
            current=3,
            ready=ready,
            updated=3,
            available=ready,
            pods=pods,
        )

    @activity.defn(name="gpu_pending_pods")
    async def gpu_pending_pods(self, query: GpuPendingPodsQuery) -> GpuPendingPods:
        return GpuPendingPods(pods=[])

    @activity.defn(name="probe_node_gpus")
    async def probe_node_gpus(self, req: NodeGpuProbeRequest) -> NodeGpuProbe:
        failure = "NVIDIA driver not loaded or not responding" if req.node == self.no_driver else None
        return NodeGpuProbe(
            node=req.node,
            pod_name=f"gpu-probe-{req.node}",
            completed=True,
            exit_code=9 if failure else 0,
            report=GpuProbeReport(node_failure=failure, expected_gpus=8),
        )

    @activity.defn(name="gpu_test_pod")
    async def gpu_test_pod(self, req: GpuTestPodRequest) -> GpuTestPodResult:
        return GpuTestPodResult(
            pod_name="gpu-test", scheduled=True, node="gpu-node-1", succeeded=True, phase="Succeeded"
        )

    @activity.defn(name="list_llm_deployments")
    async def list_llm_deployments(self, query: LLMDeploymentQuery) -> list[LLMDeploymentSummary]:
        phase = "Ready" if self.restart_works and self.restarted else "Pending"
        return [LLMDeploymentSummary(namespace="production", name="llama-3-8b", phase=phase, replicas=4)]

    @activity.defn(name="restart_daemonset")
    async def restart_daemonset(self, req: DaemonSetRestart) -> ClusterChange:
        self.writes.append(f"restart {req.name}")
        self.restarted = True
        return ClusterChange(
            action="restart daemonset",
            kind="DaemonSet",
            namespace=req.namespace,
            name=req.name,
            field="spec.template.metadata.annotations[kubectl.kubernetes.io/restartedAt]",
            after=req.restarted_at,
        )

    @activity.defn(name="wait_for_daemonset_rollout")
    async def wait_for_daemonset_rollout(self, wait: DaemonSetRolloutWait) -> DaemonSetRolloutStatus:
        done = self.restart_works
        return DaemonSetRolloutStatus(
            namespace=wait.namespace,
            name=wait.name,
            complete=done,
            desired=3,
            updated=3,
            available=3 if done else 0,
            waited_seconds=5 if done else wait.timeout_seconds,
            message="rolled out" if done else "0 of 3 updated pods are available",
        )

    @activity.defn(name="cordon_node")
    async def cordon_node(self, req: NodeCordon) -> ClusterChange:
        self.writes.append(f"cordon {req.node}")
        return ClusterChange(action="cordon node", kind="Node", name=req.node, field="spec.unschedulable", after=True)

    @activity.defn(name="evict_node_pods")
    async def evict_node_pods(self, req: NodeEvictionRound) -> NodeEvictionRoundResult:
        self.writes.append(f"drain {req.node}")
        return NodeEvictionRoundResult(node=req.node)

    @activity.defn(name="wait_for_pods_gone")
    async def wait_for_pods_gone(self, req: PodsGoneWait) -> PodsGone:
        return PodsGone()

    @activity.defn(name="uncordon_node")
    async def uncordon_node(self, req: NodeUncordon) -> ClusterChange:
        self.writes.append(f"uncordon {req.node}")
        return ClusterChange(
            action="rollback: uncordon node",
            kind="Node",
            name=req.node,
            field="spec.unschedulable",
            before=True,
            after=req.original,
        )


def gpu_input(starts_at: datetime) -> GpuUnavailableInput:
    alert = Alert(
        alertname="LLMDGPUCapacityLost",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=starts_at,
        annotations={"summary": "GPU nodes report no allocatable nvidia.com/gpu"},
    )
    # the visibility wait outlasts both marks, so only the policy's timers page
    timings = GpuTimings(
        visibility_timeout_seconds=40 * 60, verification_poll_seconds=120, verification_timeout_seconds=40 * 60
    )
    return GpuUnavailableInput(
        alert=alert, runbook="gpu-unavailable", incident_commander="alice", approval_timeout_minutes=60, timings=timings
    )


async def run_incident(
    env: WorkflowEnvironment,
    task_queue: str,
    cluster: FakeCluster,
    slack: RecordingSlack,
    *,
    resolve_after: timedelta | None,
    watch: timedelta,
) -> tuple[ServerClock, IncidentState]:
    clock = await ServerClock.read(env)
    begin = clock.begin
    state = await run_playbook(
        env,
        task_queue,
        GpuUnavailable,
        gpu_input(begin),
        [*slack.activities, *cluster.activities],
        resolve_after=resolve_after,
        watch=watch,
    )
    return clock, state


def test_policy_is_the_sops_10_and_15_minutes() -> None:
    assert [(s.after_minutes, s.level, s.notify) for s in POLICY.escalation.steps] == [
        (10, 1, "Senior SRE"),
        (15, 2, "Engineering team"),
    ]


async def test_escalates_at_10_and_15_minutes_while_the_plugin_restart_does_not_help(time_skipping, task_queue) -> None:
    cluster, slack = FakeCluster(restart_works=False), RecordingSlack()
    clock, state = await run_incident(
        time_skipping, task_queue, cluster, slack, resolve_after=timedelta(minutes=25), watch=timedelta(minutes=60)
    )
    posts = escalation_pages(slack)
    clock.assert_at([p.at for p in posts], [10, 15])
    assert "Senior SRE" in posts[0].text and "Engineering team" in posts[1].text
    assert [e.level for e in state.escalations] == [1, 2]
    assert state.status == "resolved" and state.resolved_by == "bob"
    # one restart, never repeated; no node taken out when every node lacks GPUs (the plugin's fault)
    assert cluster.writes == ["restart nvidia-device-plugin-daemonset"]


async def test_no_escalation_once_the_restart_restores_the_gpus(time_skipping, task_queue) -> None:
    cluster, slack = FakeCluster(restart_works=True), RecordingSlack()
    clock, state = await run_incident(
        time_skipping, task_queue, cluster, slack, resolve_after=None, watch=timedelta(minutes=45)
    )
    assert escalation_pages(slack) == []
    assert state.status == "resolved" and state.resolved_by == "automation"
    assert minutes_after(state.resolved_at, clock.begin) < 10


async def test_driver_issue_escalates_at_once_and_the_15_minute_mark_still_fires(time_skipping, task_queue) -> None:
    """The diagnosis pages level 1 when found; the 10-minute mark (level 1) is then already reached."""
    cluster, slack = FakeCluster(restart_works=True, no_driver="gpu-node-3"), RecordingSlack()
    clock, state = await run_incident(
        time_skipping, task_queue, cluster, slack, resolve_after=timedelta(minutes=25), watch=timedelta(minutes=60)
    )
    first, *marks = state.escalations
    assert first.level == 1 and minutes_after(first.at, clock.begin) < 1 and "NVIDIA driver not loaded" in first.reason
    assert [e.level for e in marks] == [2]
    clock.assert_at([e.at for e in marks], [15])
    assert [g.gate for g in state.pending_gates] == [] and state.approvals[0].gate == cordon_gate("gpu-node-3")
    assert cluster.writes == ["restart nvidia-device-plugin-daemonset"], "no cordon without an approval"
