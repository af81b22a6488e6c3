"""Running the test playbooks on the time-skipping server with recording Slack fakes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.slack import SlackActivities
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_playbooks import (
    ActEveryFiveMinutes,
    FailingFix,
    GatedFix,
    RegisterInRun,
    WaitForHumans,
    WaitForKServeHumans,
    touch_deployment,
    touch_forbidden,
)
from tests.helpers.waiting import wait_for_async
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, UPDATE_HUMAN_ACTION, Alert, HumanAction, IncidentInput
from workflows.playbooks.triage.playbook import Triage

PLAYBOOKS = [WaitForHumans, WaitForKServeHumans, GatedFix, ActEveryFiveMinutes, RegisterInRun, FailingFix, Triage]


def incident_input(starts_at: datetime, **fields: Any) -> IncidentInput:
    alert = Alert(
        alertname="LLMDServiceDown",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=starts_at,
        labels={"alertname": "LLMDServiceDown", "namespace": "llm", "severity": "critical"},
        annotations={"summary": "llm-d service is down", "runbook_url": "https://runbooks.example/sop-001"},
    )
    fields.setdefault("runbook", "test-outage")
    fields.setdefault("incident_commander", "alice")
    return IncidentInput(alert=alert, **fields)


@asynccontextmanager
async def incident_worker(
    env: WorkflowEnvironment, task_queue: str, slack: RecordingSlack, *, activities: list | None = None
) -> AsyncIterator[Worker]:
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=PLAYBOOKS,
        # The time-skipping server sometimes loses an eagerly dispatched activity ("ACTIVITY_UNKNOWN").
        disable_eager_activity_execution=True,
        activities=[*slack.activities, touch_deployment, touch_forbidden, *(activities or [])],
    ) as worker:
        yield worker


def slack_worker(env: WorkflowEnvironment, task_queue: str, slack: SlackActivities, *workflows: type) -> Worker:
    """A worker for `workflows` whose Slack posts go through the real SlackActivities (a stand-in's URL)."""
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=[slack.post_incident, slack.post_in_thread, slack.request_approval, slack.update_message],
        # The time-skipping server sometimes loses an eagerly dispatched activity ("ACTIVITY_UNKNOWN").
        disable_eager_activity_execution=True,
    )


async def start(env: WorkflowEnvironment, playbook: Any, inp: IncidentInput, task_queue: str) -> WorkflowHandle:
    return await env.client.start_workflow(
        playbook.run, inp, id=f"incident-{uuid.uuid4().hex[:12]}", task_queue=task_queue
    )


def escalation_pages(slack: RecordingSlack) -> list:
    """The escalation notices an incident posted in its thread."""
    return [p for p in slack.posted if p.method == "post_in_thread" and ":escalation-" in p.arg.key]


async def run_playbook(
    env: WorkflowEnvironment,
    task_queue: str,
    playbook: Any,
    inp: IncidentInput,
    activities: list,
    *,
    resolve_after: timedelta | None,
    watch: timedelta,
) -> IncidentState:
    """Run a real playbook on the time-skipping server with recording activities; a human resolves
    it after `resolve_after` (None: nobody does); its state once `watch` has passed."""
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[playbook],
        activities=activities,
        disable_eager_activity_execution=True,
    ):
        handle = await start(env, playbook, inp, task_queue)
        if resolve_after is not None:
            await env.sleep(resolve_after)
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="by hand"))
        await env.sleep(watch)
        state = await handle.query(QUERY_STATE, result_type=IncidentState)
        await handle.result()
    return state


async def update_admitted(env: WorkflowEnvironment, handle: WorkflowHandle, update_id: str) -> None:
    """Until the server holds update `update_id` (stage ADMITTED): from then on it rides in the
    workflow's next task. Polls, since the test server refuses to wait for ADMITTED."""
    poll = PollWorkflowExecutionUpdateRequest(
        namespace=env.client.namespace,
        update_ref=UpdateRef(workflow_execution=WorkflowExecution(workflow_id=handle.id), update_id=update_id),
        wait_policy=WaitPolicy(
            lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
        ),
    )

    async def held() -> bool:
        try:
            await env.client.workflow_service.poll_workflow_execution_update(poll)
            return True
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # the update's RPC has not reached the server yet
                return False
            raise

    await wait_for_async(held, f"update {update_id!r} of {handle.id} admitted")


def minutes_after(at: datetime, start: datetime) -> float:
    return (at - start).total_seconds() / 60


@dataclass(frozen=True)
class ServerClock:
    """The time-skipping server's time `begin`, read at real (monotonic) time `real_begin`.

    The server's clock moves by what it skips plus the real time that passes while a worker runs a task
    (a busy machine makes that seconds). So an event due `m` minutes after `begin` (a timer, and the
    activity a workflow schedules when it fires) shows at no less than `m` minutes, and at no more than
    `m` plus the real minutes that have passed since `begin` was read.
    """

    begin: datetime
    real_begin: float

    @classmethod
    async def read(cls, env: WorkflowEnvironment) -> ServerClock:
        real = time.monotonic()  # before the read: the server's `begin` is no earlier than this
        return cls(await env.get_current_time(), real)

    def real_minutes(self) -> float:
        """Real minutes since `begin` was read: the most the server's clock has run on its own."""
        return (time.monotonic() - self.real_begin) / 60

    def assert_at(self, times: list[datetime], due: list[float], origin: datetime | None = None) -> None:
        """`times` are exactly the events due `due` minutes after `origin` (default `begin`), each at its
        mark or after it by no more than the real time that has passed."""
        origin = origin or self.begin
        slack = self.real_minutes()
        got = [minutes_after(t, origin) for t in times]
        assert len(got) == len(due), (got, due)
        for at, mark in zip(got, due):
            assert mark - _ROUNDING_MIN <= at <= mark + slack, (
                f"due at {mark} min, at {at:.4f} min; {slack * 60:.1f} s of real time passed",
                got,
                due,
            )


_ROUNDING_MIN = 0.001 / 60  # the server keeps milliseconds
