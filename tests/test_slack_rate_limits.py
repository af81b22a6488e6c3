"""Slack's rate limits and failures as an incident meets them: the real SlackActivities and slack-sdk
against the stand-in, on the time-skipping server. A 429 is waited out for its Retry-After (minutes,
bounded), the announcement is not lost, and later posts go in its thread, never unthreaded."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.slack import TRANSIENT_ATTEMPTS, SlackActivities
from activities.slack_models import ThreadMessage
from standins.slack import SlackStandIn, channel_id
from tests.helpers.histories import save_history
from tests.helpers.incident_harness import incident_input, slack_worker, start
from tests.helpers.incident_playbooks import WaitForHumans
from workflows.incident.escalation import EscalationStep
from workflows.incident.models import SIGNAL_HUMAN_ACTION, HumanAction
from workflows.incident.slack import SLACK_THREAD_FIRST
from workflows.playbooks.triage.playbook import Triage

pytestmark = pytest.mark.timeout(120)
CHANNEL = "#incidents"


@pytest.fixture
def slack(slack_client) -> SlackActivities:
    return SlackActivities(slack_client, default_channel=CHANNEL)


def _at_attempt(attempt: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


async def test_a_429_is_retried_after_its_retry_after_however_many_attempts_it_took(slack, slack_standin) -> None:
    slack_standin.rate_limit("chat.postMessage", seconds=45, times=1)
    msg = ThreadMessage(key="inc-1:1:note", channel=CHANNEL, text="hello")
    with pytest.raises(ApplicationError) as err:
        await _at_attempt(TRANSIENT_ATTEMPTS + 3).run(slack.post_in_thread, msg)
    assert err.value.type == "SlackRateLimited" and not err.value.non_retryable
    assert err.value.next_retry_delay == timedelta(seconds=45)
    # any other failure: a few quick attempts, then it is final
    slack_standin.fail_next("chat.postMessage", status=500)
    with pytest.raises(ApplicationError) as err:
        await _at_attempt(TRANSIENT_ATTEMPTS).run(slack.post_in_thread, msg)
    assert err.value.type == "SlackTransientError" and err.value.non_retryable


async def _run_incident(env: WorkflowEnvironment, task_queue: str, slack: SlackActivities, inp, during) -> str:
    async with slack_worker(env, task_queue, slack, WaitForHumans):
        handle = await start(env, WaitForHumans, inp, task_queue)
        await during(handle)
        await handle.result()
        return handle.id


async def _announcement_attempts(env: WorkflowEnvironment, workflow_id: str) -> list[int]:
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "post_incident"
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


async def test_a_rate_limited_announcement_gets_through_and_later_posts_wait_for_its_thread(
    time_skipping: WorkflowEnvironment, task_queue: str, slack: SlackActivities, slack_standin: SlackStandIn
) -> None:
    """Eight minutes of 429s (Retry-After 60 s): more attempts than any fixed cap, inside the bound."""
    slack_standin.rate_limit("chat.postMessage", seconds=60, times=8)
    begin = await time_skipping.get_current_time()

    async def humans(handle) -> None:
        # while the announcement is being retried: an acknowledgement, then the resolution
        await handle.signal(SIGNAL_HUMAN_ACTION, HumanAction(action="acknowledge", by="alice"))
        await handle.signal(SIGNAL_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="ok"))

    wid = await _run_incident(time_skipping, task_queue, slack, incident_input(begin, slack_channel=CHANNEL), humans)
    messages = slack_standin.messages(CHANNEL)
    [announcement] = [m for m in messages if "thread_ts" not in m]  # nothing went out unthreaded
    assert "INCIDENT" in announcement["text"]
    replies = [m["text"] for m in messages if m.get("thread_ts") == announcement["ts"]]
    assert replies[:2] == [":eyes: Acknowledged by *alice*", ":white_check_mark: *Resolved* by alice: ok"]
    assert len(replies) == 3  # and the report
    assert await _announcement_attempts(time_skipping, wid) == [9]  # 8 refusals waited out, then posted
    assert len(slack_standin.calls("chat.postMessage")) == 8 + 1 + 3


async def test_an_announcement_slack_failed_is_made_by_the_next_post_before_it(
    time_skipping: WorkflowEnvironment, task_queue: str, slack: SlackActivities, slack_standin: SlackStandIn
) -> None:
    """Slack fails the announcement for good (500s); the escalation page at 10 min announces first."""
    for _ in range(TRANSIENT_ATTEMPTS):
        slack_standin.fail_next("chat.postMessage", status=500)
    begin = await time_skipping.get_current_time()
    steps = [EscalationStep(after_minutes=10, notify="Senior SRE", level=1)]

    async def later(handle) -> None:
        await time_skipping.sleep(timedelta(minutes=11))
        await handle.signal(SIGNAL_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="ok"))

    await _run_incident(
        time_skipping, task_queue, slack, incident_input(begin, slack_channel=CHANNEL, escalation=steps), later
    )
    messages = slack_standin.messages(channel_id(CHANNEL))
    [announcement] = [m for m in messages if "thread_ts" not in m]
    assert "INCIDENT" in announcement["text"]
    replies = [m["text"] for m in messages if m.get("thread_ts") == announcement["ts"]]
    assert replies[0].startswith(":rotating_light: *Escalation to Senior SRE*")
    assert replies[1] == ":white_check_mark: *Resolved* by alice: ok"


async def test_a_triage_incident_acknowledged_while_slack_rate_limits_its_announcement(
    time_skipping: WorkflowEnvironment, task_queue: str, slack: SlackActivities, slack_standin: SlackStandIn
) -> None:
    """A released playbook on the new path (the acknowledgement waits for the thread): its history is
    saved for tests/test_replay.py (`RUNBOOKS_SAVE_HISTORIES=1`)."""
    slack_standin.rate_limit("chat.postMessage", seconds=30, times=3)
    begin = await time_skipping.get_current_time()
    inp = incident_input(begin, slack_channel=CHANNEL).model_copy(update={"runbook": "triage"})

    async def humans(handle) -> None:
        await handle.signal(SIGNAL_HUMAN_ACTION, HumanAction(action="acknowledge", by="alice"))
        await handle.signal(SIGNAL_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="ok"))

    async with slack_worker(time_skipping, task_queue, slack, Triage):
        handle = await start(time_skipping, Triage, inp, task_queue)
        await humans(handle)
        await handle.result()
    await save_history(handle, "triage_slack_announcement_rate_limited")
    messages = slack_standin.messages(CHANNEL)
    [announcement] = [m for m in messages if "thread_ts" not in m]
    replies = [m["text"] for m in messages if m.get("thread_ts") == announcement["ts"]]
    assert replies[0] == ":eyes: Acknowledged by *alice*"
    history = await handle.fetch_history()
    patches = [
        p.data
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        for p in e.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
    assert any(SLACK_THREAD_FIRST.encode() in data for data in patches)  # this history is on the new path
