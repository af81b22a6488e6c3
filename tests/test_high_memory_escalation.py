"""SOP-002's escalation marks (10 and 20 minutes after the alert's startsAt) on the time-skipping server.

The cluster is a recording fake registered under the memory and kube activity names: these
tests are about timing, the integration test (test_high_memory.py) about the real cluster.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from activities.kube.llmdeployments_models import LLMDeploymentChange, LLMDeploymentQuery, LLMDeploymentSummary
from activities.kube.pods_models import (
    ContainerMemoryLimit,
    MemoryEvent,
    MemoryEventsQuery,
    MemoryLimitsQuery,
    PodDeletion,
    PodMemory,
    PodMemoryLimits,
    TopPodsQuery,
)
from activities.models import ClusterChange
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import ServerClock, escalation_pages, minutes_after, run_playbook
from workflows.playbooks.high_memory.playbook import POLICY, HighMemory
from workflows.playbooks.high_memory.models import HighMemoryInput, MemoryTimings
from workflows.incident.state import IncidentState
from workflows.incident.models import Alert

pytestmark = pytest.mark.timeout(90)
GIB = 2**30


class FakeCluster:
    """Two serving pods near their 32Gi limits, OOM-killed until the relief (if `relief_works`)."""

    def __init__(self, *, relief_works: bool) -> None:
        self.relief_works = relief_works
        self.relieved = False
        self.writes: list[str] = []

    @property
    def pressure(self) -> bool:
        return not (self.relief_works and self.relieved)

    @property
    def activities(self) -> list:
        return [
            self.top_memory_pods,
            self.memory_events,
            self.pod_memory_limits,
            self.list_llm_deployments,
            self.change_llm_deployment,
            self.delete_pod,
        ]

    @activity.defn(name="top_memory_pods")
    async def top_memory_pods(self, query: TopPodsQuery) -> list[PodMemory]:
        used = 31 * GIB if self.pressure else 16 * GIB
        return [PodMemory(namespace="production", name=f"llama-{i}", memory_bytes=used - i) for i in range(2)]

    @activity.defn(name="memory_events")
    async def memory_events(self, query: MemoryEventsQuery) -> list[MemoryEvent]:
        if not self.pressure:
            return []
        return [
            MemoryEvent(
                namespace="default",
                kind="Node",
                name="gpu-node-1",
                reason="OOMKilling",
                message="Memory cgroup out of memory: Killed process 4101 (python3)",
                last_seen=activity.info().current_attempt_scheduled_time,
            )
        ]

    @activity.defn(name="pod_memory_limits")
    async def pod_memory_limits(self, query: MemoryLimitsQuery) -> list[PodMemoryLimits]:
        return [
            PodMemoryLimits(
                namespace=p.namespace,
                name=p.name,
                uid=f"uid-{p.name}",
                owner="ReplicaSet/llama",
                containers=[ContainerMemoryLimit(container="vllm", limit="32Gi", limit_bytes=32 * GIB)],
            )
            for p in query.pods
        ]

    @activity.defn(name="list_llm_deployments")
    async def list_llm_deployments(self, query: LLMDeploymentQuery) -> list[LLMDeploymentSummary]:
        return [LLMDeploymentSummary(namespace="production", name="llama", phase="Ready", replicas=2)]

    @activity.defn(name="change_llm_deployment")
    async def change_llm_deployment(self, req: LLMDeploymentChange) -> ClusterChange:
        self.writes.append(f"{req.field}={req.value}")
        self.relieved = not req.rollback
        return ClusterChange(
            action=req.action,
            kind="LLMDeployment",
            namespace=req.namespace,
            name=req.name,
            field=f"spec.{req.field}",
            before={"batchSize": 32, "maxConcurrency": 64},
            after=req.value,
        )

    @activity.defn(name="delete_pod")
    async def delete_pod(self, req: PodDeletion) -> ClusterChange:
        self.writes.append(f"delete {req.name}")
        return ClusterChange(
            action=req.why,
            kind="Pod",
            namespace=req.namespace,
            name=req.name,
            field="(object)",
            before={"uid": req.uid},
        )


def memory_input(starts_at: datetime) -> HighMemoryInput:
    alert = Alert(
        alertname="LLMDMemoryPressure",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=starts_at,
        annotations={"summary": "Memory pressure detected"},
    )
    # verification outlasts both marks, so only the policy's timers page
    timings = MemoryTimings(
        relief_settle_seconds=60,
        verification_timeout_seconds=40 * 60,
        verification_poll_seconds=120,
        oom_quiet_minutes=10,
    )
    return HighMemoryInput(alert=alert, runbook="high-memory", incident_commander="alice", timings=timings)


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
        HighMemory,
        memory_input(begin),
        [*slack.activities, *cluster.activities],
        resolve_after=resolve_after,
        watch=watch,
    )
    return clock, state


def test_policy_is_the_sops_10_and_20_minutes() -> None:
    assert [(s.after_minutes, s.level) for s in POLICY.escalation.steps] == [(10, 1), (20, 2)]


async def test_escalates_at_10_and_20_minutes_while_memory_stays_high(time_skipping, task_queue) -> None:
    cluster, slack = FakeCluster(relief_works=False), RecordingSlack()
    clock, state = await run_incident(
        time_skipping, task_queue, cluster, slack, resolve_after=timedelta(minutes=25), watch=timedelta(minutes=60)
    )
    posts = escalation_pages(slack)
    clock.assert_at([p.at for p in posts], [10, 20])
    assert "Senior SRE" in posts[0].text and "Engineering team" in posts[1].text
    assert [e.level for e in state.escalations] == [1, 2]
    assert state.status == "resolved" and state.resolved_by == "bob"
    assert "delete llama-0" in cluster.writes


async def test_no_escalation_once_verification_resolves_it(time_skipping, task_queue) -> None:
    cluster, slack = FakeCluster(relief_works=True), RecordingSlack()
    clock, state = await run_incident(
        time_skipping, task_queue, cluster, slack, resolve_after=None, watch=timedelta(minutes=45)
    )
    assert escalation_pages(slack) == []
    assert state.status == "resolved" and state.resolved_by == "automation"
    # resolved by the first check after the relief settled, well before the first mark
    assert minutes_after(state.resolved_at, clock.begin) < 10
