"""SlackActivities through the real slack-sdk client against the local Slack Web API stand-in."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.slack import CONSOLE_MARK, SlackActivities
from activities.slack_models import ApprovalRequest, IncidentMessage, MessageUpdate, ThreadMessage
from tests.helpers.incident_harness import incident_input, start
from tests.helpers.incident_playbooks import WaitForHumans
from tests.helpers.incident_queries import until
from standins.slack import channel_id
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction

pytestmark = pytest.mark.timeout(60)
CHANNEL = "#incidents"
STARTED = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc)


def incident_message(key: str = "inc-1:1:incident") -> IncidentMessage:
    return IncidentMessage(
        key=key,
        incident_id="service-outage-abc-20260501T100000",
        severity="P0",
        title="LLM service outage",
        summary="llm-d service is down",
        description="All inference requests failing",
        runbook_url="https://runbooks.example/sop-001",
        ui_url="http://localhost:8233/namespaces/default/workflows/x",
        labels={"namespace": "llm", "severity": "critical"},
        incident_commander="alice",
        started_at=STARTED,
    )


def approval(destructive: bool, key: str = "inc-1:2:approval") -> ApprovalRequest:
    return ApprovalRequest(
        key=key,
        incident_id="inc-1",
        gate="maintenance-mode",
        question="Enable maintenance mode?",
        destructive=destructive,
        approvers=["U1ALICE"],
        deadline=STARTED + timedelta(minutes=10),
    )


@pytest.fixture
def slack(slack_client) -> SlackActivities:
    return SlackActivities(slack_client, default_channel=CHANNEL)


async def test_incident_message_is_block_kit_with_header_links_and_labels(slack, slack_standin) -> None:
    ref = await ActivityEnvironment().run(slack.post_incident, incident_message())
    assert ref.channel == channel_id(CHANNEL) and not ref.console
    [message] = slack_standin.messages(CHANNEL)
    header, summary, fields, links, labels = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "emoji": True, "text": ":rotating_light: P0 INCIDENT: LLM service outage"},
    }
    assert summary["text"]["text"] == "*llm-d service is down*\nAll inference requests failing"
    assert "*Incident Commander:*\nalice" in [f["text"] for f in fields["fields"]]
    assert links["text"]["text"] == (
        "<https://runbooks.example/sop-001|Runbook> · <http://localhost:8233/namespaces/default/workflows/x|Temporal UI>"
    )
    assert labels == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "`namespace=llm`  `severity=critical`"}],
    }
    assert "P0 INCIDENT: LLM service outage" in message["text"]  # the notification fallback
    [call] = slack_standin.calls("chat.postMessage")
    assert call.token == "xoxb-test"
    assert call.body["metadata"] == {"event_type": "llm_runbooks_message", "event_payload": {"key": "inc-1:1:incident"}}


@pytest.mark.parametrize("destructive", [True, False])
async def test_approval_request_has_approve_and_reject_buttons(slack, slack_standin, destructive) -> None:
    parent = await ActivityEnvironment().run(slack.post_incident, incident_message())
    req = approval(destructive).model_copy(update={"channel": parent.channel, "thread_ts": parent.ts})
    ref = await ActivityEnvironment().run(slack.request_approval, req)
    message = slack_standin.thread(CHANNEL, parent.ts)[-1]
    assert (message["ts"], message["thread_ts"]) == (ref.ts, parent.ts)
    actions = message["blocks"][-1]
    assert actions["type"] == "actions"
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"], reject["action_id"], reject["style"]) == (
        "approve",
        "primary",
        "reject",
        "danger",
    )
    assert (
        json.loads(approve["value"]) == json.loads(reject["value"]) == {"incident": "inc-1", "gate": "maintenance-mode"}
    )
    assert ("confirm" in approve) is destructive
    if destructive:
        assert approve["confirm"]["text"]["text"] == "Enable maintenance mode?"


async def test_update_message_rewrites_in_place(slack, slack_standin) -> None:
    ref = await ActivityEnvironment().run(slack.post_incident, incident_message())
    await ActivityEnvironment().run(
        slack.update_message, MessageUpdate(channel=ref.channel, ts=ref.ts, text="approved by alice")
    )
    [message] = slack_standin.messages(CHANNEL)
    assert message["text"] == "approved by alice" and "edited" in message
    assert message["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": "approved by alice"}}]


async def test_a_retried_post_finds_its_earlier_message(slack, slack_standin) -> None:
    parent = await ActivityEnvironment().run(slack.post_incident, incident_message())
    msg = ThreadMessage(key="inc-1:3:scope", channel=parent.channel, thread_ts=parent.ts, text="3 deployments down")
    slack_standin.fail_next("chat.postMessage", after_recording=True)  # the post lands, its answer is lost
    with pytest.raises(ApplicationError, match="will retry"):
        await ActivityEnvironment().run(slack.post_in_thread, msg)
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, attempt=2)
    ref = await retry.run(slack.post_in_thread, msg)
    replies = [m for m in slack_standin.thread(CHANNEL, parent.ts) if m["ts"] != parent.ts]
    assert [m["ts"] for m in replies] == [ref.ts]
    assert len(slack_standin.calls("conversations.replies")) == 1


async def test_permanent_slack_errors_are_not_retried(slack, slack_standin) -> None:
    slack_standin.fail_next("chat.postMessage", error="channel_not_found", status=200)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(slack.post_incident, incident_message())
    assert err.value.non_retryable and "channel_not_found" in str(err.value) and "#incidents" in str(err.value)


async def test_without_a_token_messages_go_to_the_console(capsys) -> None:
    console = SlackActivities(None, default_channel=CHANNEL)
    ref = await ActivityEnvironment().run(console.post_incident, incident_message())
    again = await ActivityEnvironment().run(console.post_incident, incident_message())
    assert ref.console and ref.ts == again.ts  # same key, same synthetic message
    await ActivityEnvironment().run(console.request_approval, approval(True))
    out = capsys.readouterr().out.splitlines()
    # each message once, naming its incident
    assert out[0].startswith(
        f"{CONSOLE_MARK} {incident_message().incident_id} {CHANNEL}: P0 INCIDENT: LLM service outage"
    )
    assert sum(line.startswith(CONSOLE_MARK) for line in out) == 3
    assert any("runbooks approve inc-1 maintenance-mode --as U1ALICE" in line for line in out)


async def test_incident_posts_once_each_through_temporal_retries(
    time_skipping, task_queue, slack, slack_standin
) -> None:
    """The whole machinery with the real client: a lost reply is retried by Temporal and posts once."""
    slack_standin.fail_next("chat.postMessage", after_recording=True)  # the incident's first message
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[WaitForHumans],
        activities=[slack.post_incident, slack.post_in_thread, slack.request_approval, slack.update_message],
        disable_eager_activity_execution=True,
    ):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, incident_input(begin, slack_channel=CHANNEL), task_queue)
        state = await until(handle, lambda s: s.slack_thread is not None)
        slack_standin.fail_next("chat.postMessage", after_recording=True)  # the acknowledgement, in the thread
        await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="acknowledge", by="alice"))
        await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="ok"))
        report = await handle.result()
    messages = slack_standin.messages(CHANNEL)
    thread = state.slack_thread
    assert [m["ts"] for m in messages if "thread_ts" not in m] == [thread.ts]
    thread_messages = slack_standin.thread(CHANNEL, thread.ts)[1:]
    assert [m["text"] for m in thread_messages] == [
        ":eyes: Acknowledged by *alice*",
        ":white_check_mark: *Resolved* by alice: ok",
        report,
    ]
    shown = "\n".join(b["text"]["text"] for b in thread_messages[-1]["blocks"])
    assert shown == report.rstrip("\n")  # the long report is split over sections, not cut off
    assert len(slack_standin.calls("conversations.history")) == 1
    assert len(slack_standin.calls("conversations.replies")) == 1


async def test_a_channel_name_is_resolved_once_and_its_id_used_where_slack_needs_ids(slack, slack_standin) -> None:
    """Named in the configuration: the retry's lookup and the edit go to the id (Slack refuses names there)."""
    for n in range(250):  # more channels than one conversations.list page
        slack_standin.add_channel(f"team-{n:03d}")
    slack_standin.fail_next("chat.postMessage", after_recording=True)  # the announcement lands, its answer is lost
    with pytest.raises(ApplicationError, match="will retry"):
        await ActivityEnvironment().run(slack.post_incident, incident_message())
    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, attempt=2)
    ref = await retry.run(slack.post_incident, incident_message())
    assert ref.channel == channel_id(CHANNEL)
    assert len(slack_standin.messages(CHANNEL)) == 1  # found, not posted twice
    [history] = slack_standin.calls("conversations.history")
    assert history.body["channel"] == channel_id(CHANNEL)
    msg = ThreadMessage(key="inc-1:2:note", channel=CHANNEL, thread_ts=ref.ts, text="threaded by name")
    await ActivityEnvironment().run(slack.post_in_thread, msg)
    await ActivityEnvironment().run(slack.update_message, MessageUpdate(channel=CHANNEL, ts=ref.ts, text="edited"))
    assert [m["text"] for m in slack_standin.messages(CHANNEL)] == ["edited", "threaded by name"]
    listed = slack_standin.calls("conversations.list")
    assert len(listed) > 1 and len({c.body.get("cursor") for c in listed}) == len(listed)  # one listing, paged
    assert all(c.body["exclude_archived"] in (True, "1", "true") for c in listed)
    for c in slack_standin.calls("chat.postMessage") + slack_standin.calls("chat.update"):
        assert c.body["channel"] == channel_id(CHANNEL)


async def test_a_channel_that_does_not_exist_is_one_clear_error_naming_it(slack, slack_standin) -> None:
    slack_standin.add_channel("incidents-archived", archived=True)
    for name in ("#incidents-typo", "#incidents-archived"):
        with pytest.raises(ApplicationError) as err:
            await ActivityEnvironment().run(
                slack.post_incident, incident_message().model_copy(update={"channel": name})
            )
        assert err.value.non_retryable and err.value.type == "SlackChannelNotFound"
        assert repr(name) in str(err.value) and "not found" in str(err.value)
    assert slack_standin.calls("chat.postMessage") == []  # nothing was sent anywhere
