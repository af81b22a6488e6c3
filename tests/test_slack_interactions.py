"""Slack approval clicks through the triggers app into a real incident on the dev server.

The incident is the machinery's GatedFix test playbook (one destructive gate, `scale-up`),
run by a worker whose Slack activities talk to the Slack stand-in, so the approval message
and its buttons are the real ones; clicks are signed with Slack's algorithm.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from temporalio.client import Client, WorkflowHandle

from tests.helpers.fixtures_alertmanager import (
    SIGNING_SECRET,
    RunningTriggers,
    block_actions_body,
    in_process,
    slack_signed,
)
from tests.helpers.fixtures_slack_clicks import (
    CHANNEL,
    LEAD,
    slack_settings,
    start_gated_incident,
)
from tests.helpers.waiting import wait_for_async
from standins.slack import SlackStandIn, channel_id
from workflows.incident.models import QUERY_STATE


async def _click(
    http: httpx.AsyncClient,
    standin: SlackStandIn,
    handle: WorkflowHandle,
    message: dict,
    *,
    rid: str,
    user: str = LEAD,
    gate: str = "scale-up",
    approve: bool = True,
    secret: str = SIGNING_SECRET,
    age_s: int = 0,
) -> httpx.Response:
    body = block_actions_body(
        incident=handle.id,
        gate=gate,
        user=user,
        approve=approve,
        channel=channel_id(CHANNEL),
        message=message,
        response_url=standin.response_url(rid),
    )
    return await http.post(
        "/slack/interactions",
        content=body,
        headers=slack_signed(body, secret=secret, timestamp=int(time.time()) - age_s),
    )


async def test_only_a_valid_authorized_click_decides_and_the_incident_goes_on(
    dev_client, task_queue, slack_standin, gated_incident
):
    handle, message = gated_incident
    async with in_process(slack_settings(task_queue, slack_standin), dev_client) as http:
        forged = await _click(http, slack_standin, handle, message, rid="forged", secret="not-our-secret")
        stale = await _click(http, slack_standin, handle, message, rid="stale", age_s=6 * 60)
        outsider = await _click(http, slack_standin, handle, message, rid="outsider", user="UOUTSIDER")
        unknown_gate = await _click(http, slack_standin, handle, message, rid="unknown", gate="drain-node")

        body = block_actions_body(
            incident=handle.id,
            gate="scale-up",
            user=LEAD,
            approve=True,
            channel=channel_id(CHANNEL),
            message=message,
            response_url=slack_standin.response_url("valid"),
        )
        headers = slack_signed(body)
        valid = await http.post("/slack/interactions", content=body, headers=headers)
        replayed = await http.post("/slack/interactions", content=body, headers=headers)
        late = await _click(http, slack_standin, handle, message, rid="late", approve=False)
        metrics = (await http.get("/metrics")).text

    assert (forged.status_code, stale.status_code, replayed.status_code) == (401, 401, 401)
    assert "signature does not match" in forged.text and "stale" in stale.text and "replayed" in replayed.text
    assert [outsider.status_code, unknown_gate.status_code, valid.status_code, late.status_code] == [200] * 4

    # The incident goes on: approved, it scaled and resolved.
    report = await asyncio.wait_for(handle.result(), timeout=30)
    assert "scale" in report
    state = await handle.query(QUERY_STATE)
    [gate] = state["approvals"]
    assert gate["decision"]["by"] == LEAD and gate["decision"]["approved"] and gate["decision"]["via"] == "slack"
    assert state["status"] == "resolved"

    # Each refused click was told why, privately; nothing reached the forged/stale/replayed senders.
    def told(rid: str) -> str:
        [reply] = slack_standin.responses(rid)
        assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
        return reply["text"]

    assert "'UOUTSIDER' may not decide gate 'scale-up'" in told("outsider")
    assert "unknown gate 'drain-node'" in told("unknown")
    assert "already decided" in told("late")
    assert slack_standin.responses("forged") == slack_standin.responses("stale") == []

    # The original message now says who decided, when and how; its buttons are gone.
    updates = [c.body for c in slack_standin.calls("chat.update") if c.body.get("ts") == message["ts"]]
    ours = [u for u in updates if f"<@{LEAD}>" in json.dumps(u.get("blocks"))]
    assert ours and "Approved" in json.dumps(ours[0]["blocks"])
    final = next(m for m in slack_standin.messages(CHANNEL) if m["ts"] == message["ts"])
    assert not any(b.get("type") == "actions" for b in final.get("blocks", []))

    assert 'runbooks_approvals_total{outcome="approved"} 1.0' in metrics
    assert 'runbooks_approvals_total{outcome="refused"} 3.0' in metrics
    assert 'runbooks_approvals_total{outcome="forged"} 3.0' in metrics


async def test_slack_gets_its_answer_at_once_even_when_the_incident_cannot_answer(
    dev_client, task_queue, slack_standin
):
    # No worker: the Update can never be accepted. Slack must still hear back well within 3 s.
    handle = await start_gated_incident(dev_client, task_queue)
    message = {"ts": "1700000000.000100", "text": "Approval needed", "blocks": []}
    settings = slack_settings(task_queue, slack_standin)

    async def connect() -> Client:
        return dev_client

    async with RunningTriggers(settings, connect) as triggers, httpx.AsyncClient(base_url=triggers.url) as http:
        started = time.perf_counter()
        resp = await _click(http, slack_standin, handle, message, rid="slow")
        answered = time.perf_counter() - started
        await wait_for_async(lambda: slack_standin.responses("slow"), "the reply to the slow click", 15)

    assert resp.status_code == 200 and answered < 1.0
    [reply] = slack_standin.responses("slow")
    assert "changed nothing" in reply["text"] and "try again" in reply["text"]
    await handle.terminate()


async def test_malformed_but_signed_bodies_are_400_and_link_buttons_are_just_acknowledged(
    dev_client, task_queue, slack_standin
):
    link_click = {
        "type": "block_actions",
        "user": {"id": LEAD},
        "actions": [{"action_id": "open-ui", "type": "button", "url": "http://ui"}],
    }
    bodies = {
        b"payload=%7Bnot-json": 400,
        b"nothing=here": 400,
        urlencode({"payload": json.dumps({"type": "view_submission"})}).encode(): 400,
        urlencode({"payload": json.dumps(link_click)}).encode(): 200,
    }
    async with in_process(slack_settings(task_queue, slack_standin), dev_client) as http:
        for body, status in bodies.items():
            resp = await http.post("/slack/interactions", content=body, headers=slack_signed(body))
            assert resp.status_code == status, (body, resp.text)
    assert slack_standin.calls("chat.update") == []


def test_replay_guard_forgets_only_after_the_window():
    from triggers.slack_interactions import ReplayGuard

    guard = ReplayGuard(window_s=300)
    assert guard.first_sighting("v0=a", now=1000)
    assert not guard.first_sighting("v0=a", now=1299)
    assert guard.first_sighting("v0=b", now=1299)
    assert guard.first_sighting("v0=a", now=1400)  # by then its timestamp is stale anyway


async def _runbooks(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "runbooks"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode()


async def test_runbooks_slack_test_click_sends_a_correctly_signed_click_that_decides_the_gate(
    dev_client, task_queue, slack_standin, gated_incident
):
    handle, _ = gated_incident

    async def connect() -> Client:
        return dev_client

    async with RunningTriggers(slack_settings(task_queue, slack_standin), connect) as triggers:
        url = f"{triggers.url}/slack/interactions"
        click = [
            "slack",
            "test-click",
            url,
            "--incident",
            handle.id,
            "--gate",
            "scale-up",
            "--temporal",
            dev_client.service_client.config.target_host,
        ]
        wrong_secret = await _runbooks(*click, "--as", LEAD, "--signing-secret", "not-our-secret")
        outsider = await _runbooks(*click, "--as", "UOUTSIDER", "--signing-secret", SIGNING_SECRET, "--wait", "2")
        # The secret from the configuration, as the triggers have it.
        approver = await _runbooks(
            *click, "--as", LEAD, "--wait", "20", env={"RUNBOOKS_SLACK__SIGNING_SECRET": SIGNING_SECRET}
        )
        no_secret = await _runbooks(*click, "--as", LEAD, env={"RUNBOOKS_SLACK__SIGNING_SECRET": ""})

    assert wrong_secret[0] == 1 and "401" in wrong_secret[1] and "signature does not match" in wrong_secret[1]
    assert outsider[0] == 1 and "200" in outsider[1] and "not decided" in outsider[1], outsider
    assert approver[0] == 0 and "approved by ULEAD1 via slack" in approver[1], approver
    assert no_secret[0] != 0 and "no signing secret" in no_secret[1] and "Traceback" not in no_secret[1]
    await asyncio.wait_for(handle.result(), timeout=30)
    [gate] = (await handle.query(QUERY_STATE))["approvals"]
    assert gate["decision"]["by"] == LEAD


def test_runbooks_dev_prints_the_slack_actions_url_only_when_it_can_answer(tmp_path, capsys):
    from settings import Settings
    from cli.dev import DevStack
    from cli.dev_clusters import DevCluster

    def announced(**slack: str) -> str:
        settings = Settings.model_validate({"slack": slack})
        stack = DevStack(settings=settings, home=tmp_path)
        cluster = DevCluster("default", "llm-runbooks.default", "kubeconfig", 9464)
        stack._announce(settings, [cluster], "127.0.0.1:7233", "http://127.0.0.1:8233", "http://127.0.0.1:8080")
        return capsys.readouterr().out

    assert "/slack/interactions" not in announced()
    assert "Slack clicks      off" in announced()
    with_secret = announced(signing_secret="s3cret")
    assert "http://127.0.0.1:8080/slack/interactions" in with_secret and "runbooks slack test-click" in with_secret
    socket_only = announced(app_token="xapp-1-test")
    assert "/slack/interactions" not in socket_only and "Socket Mode" in socket_only
