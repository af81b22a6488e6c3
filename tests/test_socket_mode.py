"""Slack approval clicks over Socket Mode, end to end: the triggers process (uvicorn, with
`slack.app_token`) opens a websocket through `apps.connections.open` on the Web API stand-in to
the Socket Mode stand-in, which pushes envelopes as Slack does; a worker runs a gated incident
on the dev server with its Slack messages on the Web API stand-in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle

from tests.helpers.fixtures_alertmanager import RunningTriggers, block_actions_body, slack_signed
from tests.helpers.fixtures_slack_clicks import CHANNEL, LEAD, slack_settings
from tests.helpers.waiting import wait_for_async
from standins.slack_socket import APP_ID, APP_TOKEN, SocketModeStandIn
from standins.slack import SlackStandIn, channel_id
from settings import ConfigError, load_settings
from workflows.incident.models import QUERY_STATE

TEAM = "T0RUNBOOKS"  # the workspace the stand-in's auth.test reports for the bot token


@pytest_asyncio.fixture(loop_scope="session")
async def socket_standin(slack_standin: SlackStandIn) -> AsyncIterator[SocketModeStandIn]:
    standin = await SocketModeStandIn().start()
    slack_standin.socket_mode = standin.open_connection
    try:
        yield standin
    finally:
        slack_standin.socket_mode = None
        await standin.stop()


def click_payload(
    handle: WorkflowHandle,
    message: dict,
    standin: SlackStandIn,
    *,
    rid: str,
    user: str = LEAD,
    approve: bool = True,
    app: str = APP_ID,
    team: str = TEAM,
) -> dict[str, Any]:
    """The block_actions payload Slack puts in a Socket Mode envelope (the same as over HTTP)."""
    body = block_actions_body(
        incident=handle.id,
        gate="scale-up",
        user=user,
        approve=approve,
        channel=channel_id(CHANNEL),
        message=message,
        response_url=standin.response_url(rid),
    )
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    payload["api_app_id"], payload["team"]["id"], payload["user"]["team_id"] = app, team, team
    return payload


async def _reply(standin: SlackStandIn, rid: str, timeout: float = 15) -> str:
    await wait_for_async(lambda: standin.responses(rid), f"a post to response_url {rid}", timeout, every=0.05)
    [reply] = standin.responses(rid)
    assert reply["response_type"] == "ephemeral"
    return reply["text"]


async def _gate(handle: WorkflowHandle) -> dict[str, Any]:
    [gate] = (await handle.query(QUERY_STATE))["approvals"]
    return gate


async def test_a_socket_mode_click_approves_a_gate_and_forged_or_unlisted_ones_do_not(
    dev_client: Client,
    task_queue: str,
    slack_standin: SlackStandIn,
    socket_standin: SocketModeStandIn,
    gated_incident,
):
    handle, message = gated_incident
    settings = slack_settings(task_queue, slack_standin, app_token=APP_TOKEN)

    async def connect() -> Client:
        return dev_client

    async with RunningTriggers(settings, connect) as triggers:
        await socket_standin.wait_connected()
        push = socket_standin.push
        # Not for us: another app's payload, another workspace's, and envelopes that are not clicks.
        forged_app = await push(click_payload(handle, message, slack_standin, rid="other-app", app="AOTHERAPP"))
        forged_team = await push(click_payload(handle, message, slack_standin, rid="other-team", team="TOTHER"))
        malformed = await push(
            {"type": "block_actions", "api_app_id": APP_ID, "team": {"id": TEAM}, "actions": [{"action_id": "approve"}]}
        )  # ours, but no user: not a click
        event = await push({"type": "event_callback"}, type="events_api")
        await socket_standin.push_raw(
            {"type": "interactive", "payload": click_payload(handle, message, slack_standin, rid="no-envelope")}
        )  # no envelope_id: not a request at all
        # A user not on the gate's list, over the socket and (to compare) over HTTP.
        outsider = await push(click_payload(handle, message, slack_standin, rid="socket-outsider", user="UOUTSIDER"))
        body = block_actions_body(
            incident=handle.id,
            gate="scale-up",
            user="UOUTSIDER",
            approve=True,
            channel=channel_id(CHANNEL),
            message=message,
            response_url=slack_standin.response_url("http-outsider"),
        )
        async with httpx.AsyncClient(base_url=triggers.url) as http:
            assert (await http.post("/slack/interactions", content=body, headers=slack_signed(body))).status_code == 200

        # Every envelope is acknowledged at once (Slack redelivers after 3 s otherwise).
        for envelope in (forged_app, forged_team, malformed, event, outsider):
            assert await socket_standin.wait_ack(envelope) == {"envelope_id": envelope}

        socket_refusal, http_refusal = (
            await _reply(slack_standin, "socket-outsider"),
            await _reply(slack_standin, "http-outsider"),
        )
        assert socket_refusal == http_refusal
        assert "'UOUTSIDER' may not decide gate 'scale-up'" in socket_refusal
        gate = await _gate(handle)
        assert gate["decision"] is None, gate

        # The approver's click over the socket decides the gate; the incident scales and resolves.
        valid = await push(click_payload(handle, message, slack_standin, rid="valid"))
        await socket_standin.wait_ack(valid)
        report = await asyncio.wait_for(handle.result(), timeout=30)
        async with httpx.AsyncClient(base_url=triggers.url) as http:
            metrics = (await http.get("/metrics")).text

    assert "scale" in report
    decision = (await _gate(handle))["decision"]
    assert (decision["by"], decision["approved"], decision["via"]) == (LEAD, True, "slack")
    # Forged and malformed envelopes told nobody anything and changed nothing.
    for rid in ("other-app", "other-team", "no-envelope"):
        assert slack_standin.responses(rid) == [], rid
    updates = [c.body for c in slack_standin.calls("chat.update") if c.body.get("ts") == message["ts"]]
    ours = [u for u in updates if f"<@{LEAD}>" in json.dumps(u.get("blocks"))]
    assert len(ours) == 1 and "Approved" in json.dumps(ours[0]["blocks"])
    assert 'runbooks_approvals_total{outcome="forged"} 2.0' in metrics
    assert 'runbooks_approvals_total{outcome="malformed"} 1.0' in metrics
    assert 'runbooks_approvals_total{outcome="refused"} 2.0' in metrics
    assert 'runbooks_approvals_total{outcome="approved"} 1.0' in metrics


async def test_slack_asking_to_reconnect_gets_a_fresh_socket_that_still_delivers(
    dev_client: Client,
    task_queue: str,
    slack_standin: SlackStandIn,
    socket_standin: SocketModeStandIn,
    gated_incident,
):
    # Slack refreshes Socket Mode connections every few hours with a `disconnect` message.
    handle, message = gated_incident
    settings = slack_settings(task_queue, slack_standin, app_token=APP_TOKEN)

    async def connect() -> Client:
        return dev_client

    async with RunningTriggers(settings, connect):
        await socket_standin.wait_connected()
        await socket_standin.push_raw({"type": "disconnect", "reason": "refresh_requested"})
        await wait_for_async(
            lambda: len(slack_standin.calls("apps.connections.open")) >= 2,
            "a new connection after the disconnect",
            15,
            every=0.05,
        )
        await socket_standin.wait_connected()
        await socket_standin.wait_ack(
            await socket_standin.push(click_payload(handle, message, slack_standin, rid="after-refresh"))
        )
        await asyncio.wait_for(handle.result(), timeout=30)
    assert (await _gate(handle))["decision"]["by"] == LEAD


async def test_a_wrong_app_token_opens_no_socket_and_http_keeps_serving(
    dev_client: Client,
    task_queue: str,
    slack_standin: SlackStandIn,
    socket_standin: SocketModeStandIn,
):
    settings = slack_settings(task_queue, slack_standin, app_token="xapp-1-not-ours")

    async def connect() -> Client:
        return dev_client

    async with RunningTriggers(settings, connect) as triggers:
        await wait_for_async(
            lambda: slack_standin.calls("apps.connections.open"), "apps.connections.open", 10, every=0.05
        )
        with pytest.raises(TimeoutError):
            await socket_standin.wait_connected(timeout=0.5)
        async with httpx.AsyncClient(base_url=triggers.url) as http:
            assert (await http.get("/healthz")).status_code == 200


def test_app_token_must_be_an_app_level_token():
    with pytest.raises(ConfigError, match="slack.app_token: .*app-level token"):
        load_settings(environ={"RUNBOOKS_SLACK__APP_TOKEN": "xoxb-a-bot-token"})
    assert load_settings(environ={"RUNBOOKS_SLACK__APP_TOKEN": APP_TOKEN}).slack.app_token is not None
