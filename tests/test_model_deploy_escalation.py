"""SOP-004's escalation on the time-skipping server: 15 min while the deployment still fails, and
30 min only when several deployments are affected.

The cluster is a recording fake registered under the activities' names: one (or two) failing
LLMDeployments, an OOM diagnosis, and an approval nobody answers, so only the marks move.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.worker import Worker

from activities.kube.llmdeployments_models import (
    CommonIssues,
    DeploymentDescription,
    DeploymentTarget,
    LLMDeploymentQuery,
    LLMDeploymentSummary,
)
from activities.kube.pods_models import PodEvidence, PodsReadiness, ReadinessQuery
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import ServerClock
from tests.helpers.incident_queries import state_of
from workflows.incident.state import IncidentState
from workflows.playbooks.model_deploy_failure.models import (
    ONE_AFFECTED,
    SEVERAL_AFFECTED,
    ModelDeploymentFailureInput,
    escalation_for,
)
from workflows.playbooks.model_deploy_failure.playbook import ModelDeploymentFailure
from workflows.incident.models import UPDATE_HUMAN_ACTION, Alert, HumanAction

pytestmark = pytest.mark.timeout(60)


class FailingCluster:
    """`failing` LLMDeployments not Ready in production; the first OOMKills."""

    def __init__(self, failing: list[str]) -> None:
        self.failing = failing
        self.calls: list[str] = []

    @property
    def activities(self) -> list:
        return [self.list_llm_deployments, self.describe_llm_deployment, self.check_common_issues, self.pods_readiness]

    @activity.defn(name="list_llm_deployments")
    async def list_llm_deployments(self, query: LLMDeploymentQuery) -> list[LLMDeploymentSummary]:
        self.calls.append("list_llm_deployments")
        healthy = [LLMDeploymentSummary(namespace="production", name="llama-3-8b", phase="Ready")]
        return healthy + [LLMDeploymentSummary(namespace="production", name=n, phase="Failed") for n in self.failing]

    @activity.defn(name="describe_llm_deployment")
    async def describe_llm_deployment(self, target: DeploymentTarget) -> DeploymentDescription:
        self.calls.append(f"describe {target.name}")
        return DeploymentDescription(
            namespace=target.namespace,
            name=target.name,
            phase="Failed",
            resources={"requests": {"memory": "4Gi"}, "limits": {"memory": "6Gi"}},
            pods=[
                PodEvidence(
                    name=f"{target.name}-abc",
                    uid="u1",
                    phase="Running",
                    restarts=3,
                    waiting_reason="CrashLoopBackOff",
                    last_terminated_reason="OOMKilled",
                    last_exit_code=137,
                )
            ],
        )

    @activity.defn(name="check_common_issues")
    async def check_common_issues(self, target: DeploymentTarget) -> CommonIssues:
        return CommonIssues(namespace=target.namespace, name=target.name)

    @activity.defn(name="pods_readiness")
    async def pods_readiness(self, query: ReadinessQuery) -> PodsReadiness:
        raise AssertionError("nothing was approved, so nothing should be monitored")


def incident(begin, failing: list[str]) -> ModelDeploymentFailureInput:
    alert = Alert(
        alertname="LLMDeploymentNotReady",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=begin,
        labels={"namespace": "production", "llmdeployment": failing[0]},
        annotations={"summary": f"{failing[0]} is not Ready"},
    )
    # nobody answers the resource approval within the hour, so only the marks escalate
    return ModelDeploymentFailureInput(
        alert=alert, runbook="model-deploy-failure", namespace="production", approval_timeout_minutes=60
    )


async def run_for(
    env, task_queue: str, failing: list[str], minutes: float
) -> tuple[IncidentState, RecordingSlack, ServerClock]:
    slack, cluster = RecordingSlack(), FailingCluster(failing)
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[ModelDeploymentFailure],
        activities=[*slack.activities, *cluster.activities],
    ):
        clock = await ServerClock.read(env)
        handle = await env.client.start_workflow(
            ModelDeploymentFailure.run,
            incident(clock.begin, failing),
            id=f"mdf-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        await env.sleep(timedelta(minutes=minutes))
        await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="fixed by hand"))
        await handle.result()
        state = await state_of(handle)
    return state, slack, clock


def marks(state: IncidentState, clock: ServerClock, due: list[float]) -> list[tuple[int, str]]:
    """(level, who) of each escalation, once their times are checked against the marks `due`."""
    clock.assert_at([e.at for e in state.escalations], due)
    return [(e.level, e.notify) for e in state.escalations]


def test_policy_has_the_30_minute_mark_only_for_several_deployments() -> None:
    assert [s.after_minutes for s in ONE_AFFECTED.steps] == [15]
    assert [(s.after_minutes, s.notify) for s in SEVERAL_AFFECTED.steps] == [
        (15, "Senior SRE"),
        (30, "Engineering team"),
    ]
    assert escalation_for(1) is ONE_AFFECTED and escalation_for(0) is ONE_AFFECTED
    assert escalation_for(2) is SEVERAL_AFFECTED
    assert escalation_for(None) is SEVERAL_AFFECTED  # scope unknown: page as if several


async def test_one_failing_deployment_escalates_at_15_minutes_only(time_skipping, task_queue) -> None:
    state, slack, clock = await run_for(time_skipping, task_queue, ["mixtral-8x7b"], minutes=45)
    assert marks(state, clock, [15]) == [(1, "Senior SRE")]
    posts = [p for p in slack.posted if p.method == "post_in_thread" and ":escalation-" in p.arg.key]
    clock.assert_at([p.at for p in posts], [15])
    assert state.resolved_by == "bob" and state.changes == []


async def test_several_failing_deployments_escalate_at_15_and_30_minutes(time_skipping, task_queue) -> None:
    state, _slack, clock = await run_for(time_skipping, task_queue, ["mixtral-8x7b", "mistral-7b"], minutes=45)
    assert marks(state, clock, [15, 30]) == [(1, "Senior SRE"), (2, "Engineering team")]


async def test_resolved_before_the_mark_never_escalates(time_skipping, task_queue) -> None:
    state, _slack, _clock = await run_for(time_skipping, task_queue, ["mixtral-8x7b", "mistral-7b"], minutes=10)
    assert state.escalations == []
