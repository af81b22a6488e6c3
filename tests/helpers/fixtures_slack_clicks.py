"""A gated incident whose approval message and buttons are the real ones: the machinery's GatedFix test
playbook (one destructive gate, `scale-up`, for `LEAD`) run by a worker whose Slack activities talk to the
Slack stand-in, and the triggers' settings that point Slack there. The `gated_incident` fixture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.slack import SlackActivities
from settings import Settings
from standins.slack import SlackStandIn
from tests.helpers.fixtures_alertmanager import triggers_settings
from tests.helpers.incident_playbooks import GatedFix, touch_deployment
from tests.helpers.waiting import wait_for_async
from workflows.incident.models import Alert, IncidentInput

CHANNEL = "#incidents"
LEAD = "ULEAD1"


def slack_settings(task_queue: str, standin: SlackStandIn, **slack: Any) -> Settings:
    """The triggers' settings with Slack on the stand-in; `slack` adds to (or overrides) its Slack section."""
    return triggers_settings(
        task_queue,
        slack={"bot_token": "xoxb-test", "base_url": standin.base_url, "response_url_prefixes": [standin.url]} | slack,
    )


async def start_gated_incident(client: Client, task_queue: str) -> WorkflowHandle:
    """GatedFix with its `scale-up` gate for `LEAD` only, posting in `CHANNEL`."""
    inp = IncidentInput(
        alert=Alert(
            alertname="LLMDServiceDown",
            fingerprint=uuid.uuid4().hex[:16],
            starts_at=datetime.now(timezone.utc),
            labels={"alertname": "LLMDServiceDown", "namespace": "llm"},
        ),
        runbook="test-outage",
        slack_channel=CHANNEL,
        approvers={"*": ["UONCALL1"], "scale-up": [LEAD]},
    )
    return await client.start_workflow(
        GatedFix.run, inp, id=f"incident-slack-{uuid.uuid4().hex[:10]}", task_queue=task_queue
    )


async def approval_message(standin: SlackStandIn, timeout: float = 15) -> dict[str, Any]:
    """The first message in `CHANNEL` with buttons (the approval request), as the stand-in holds it."""

    def posted() -> dict[str, Any] | None:
        return next(
            (m for m in standin.messages(CHANNEL) if any(b.get("type") == "actions" for b in m.get("blocks", []))), None
        )

    return await wait_for_async(posted, f"an approval message in {CHANNEL}", timeout, every=0.1)


@pytest_asyncio.fixture(loop_scope="session")
async def gated_incident(dev_client, task_queue, slack_standin) -> AsyncIterator[tuple[WorkflowHandle, dict]]:
    """A GatedFix incident on the dev server, run by a worker whose Slack activities talk to the stand-in;
    yields its handle and the approval message once posted."""
    slack = SlackActivities(AsyncWebClient(token="xoxb-test", base_url=slack_standin.base_url), default_channel=CHANNEL)
    activities = [
        slack.post_incident,
        slack.post_in_thread,
        slack.request_approval,
        slack.update_message,
        touch_deployment,
    ]
    async with Worker(dev_client, task_queue=task_queue, workflows=[GatedFix], activities=activities):
        handle = await start_gated_incident(dev_client, task_queue)
        yield handle, await approval_message(slack_standin)
