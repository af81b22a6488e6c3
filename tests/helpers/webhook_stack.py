"""Alerts through the real webhook path into a real worker: the triggers app in-process against the
dev server, `build_worker` running the playbooks against the simulator, Slack on the stand-in.

Alerts carry the drill labels (`drills.enabled` is on here), so every cluster wait of the playbook
is `TIME_SCALE` times shorter while API timeouts and approval deadlines stay as the SOP has them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import httpx
from kubernetes import client as k8s
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client

from standins.alertmanager import am_alert, am_payload
from tests.helpers.fixtures_alertmanager import AUTH, in_process, triggers_settings
from settings import Settings
from worker.worker import build_worker
from workflows.incident.scope import scope_incident_id

TIME_SCALE = 60  # SOP-001: 300 s restart grace -> 5 s, 600 s verification -> 10 s
DRILL = {"drill": "true", "time_scale": str(TIME_SCALE)}
CHANNEL = "#incidents"  # triggers_settings' default channel


def stack_settings(task_queue: str) -> Settings:
    return triggers_settings(task_queue, drills={"enabled": True})


def incident_of(task_queue: str, runbook: str, scope: str = "cluster") -> str:
    """The workflow id the webhook gives a playbook's incident on `scope` (the test's prefix + runbook + scope)."""
    return f"{task_queue}." + scope_incident_id(runbook, scope)


def alert(alertname: str, starts_at: datetime, **labels: str) -> dict[str, Any]:
    """An Alertmanager alert with the drill labels."""
    return am_alert(alertname, starts_at=starts_at, **DRILL, **labels)


def resolved(sent: dict[str, Any], ends_at: datetime | None = None) -> dict[str, Any]:
    """The same alert as Alertmanager sends it once it resolved (same fingerprint and startsAt)."""
    ends = (ends_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    return sent | {"status": "resolved", "endsAt": ends}


async def notify(hook: httpx.AsyncClient, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    """One webhook notification; what it did with each alert (incident, action, scope)."""
    resp = await hook.post("/alertmanager", json=am_payload(*alerts), headers=AUTH)
    assert resp.status_code == 200, resp.text
    return resp.json()["incidents"]


@asynccontextmanager
async def webhook_and_worker(
    dev_client: Client, task_queue: str, kube_api: k8s.ApiClient, slack_client: AsyncWebClient
) -> AsyncIterator[httpx.AsyncClient]:
    """The webhook app (an httpx client on it) with a worker running every playbook meanwhile."""
    async with httpx.AsyncClient() as http:
        async with build_worker(dev_client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            async with in_process(stack_settings(task_queue), dev_client) as hook:
                yield hook
