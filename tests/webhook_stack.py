"""Alerts through the real webhook path into a real worker: the triggers app in-process against the
dev server, `build_worker` running the playbooks against the simulator, Slack on the stand-in.

Shared by tests/test_one_incident_per_fault.py and tests/test_resolution_stops_action.py. Alerts
carry the drill labels (`drills.enabled` is on here), so every cluster wait of the playbook is
`TIME_SCALE` times shorter while API timeouts and approval deadlines stay as the SOP has them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import httpx
from kubernetes import client as k8s
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client, WorkflowHandle

from standins.alertmanager import am_alert, am_payload
from tests.fixtures_alertmanager import AUTH, in_process, triggers_settings
from tests.waiting import wait_for_async
from settings import Settings
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, QUERY_TIMELINE
from workflows.incident.scope import scope_incident_id
from workflows.incident.timeline import TimelineEntry

TIME_SCALE = 60  # SOP-001: 300 s restart grace -> 5 s, 600 s verification -> 10 s
DRILL = {"drill": "true", "time_scale": str(TIME_SCALE)}
CHANNEL = "#incidents"  # triggers_settings' default channel
PROBE_LABEL = ("app.kubernetes.io/managed-by", "llm-runbooks")  # the GPU checks' own probe and test pods


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


async def state_of(handle: WorkflowHandle) -> IncidentState:
    return await handle.query(QUERY_STATE, result_type=IncidentState)


async def timeline_of(handle: WorkflowHandle) -> list[TimelineEntry]:
    return await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])


async def pending_gate(handle: WorkflowHandle, gate: str, timeout: float = 45) -> IncidentState:
    async def asked() -> IncidentState | None:
        state = await state_of(handle)
        return state if any(g.gate == gate for g in state.pending_gates) else None

    try:
        return await wait_for_async(asked, f"gate {gate!r} asked", timeout=timeout)
    except AssertionError as err:
        seen = "\n".join(f"  {e.kind}: {e.title}: {e.outcome}" for e in await timeline_of(handle))
        raise AssertionError(f"{err}; the timeline:\n{seen}") from None


def _probe_pod(e) -> str | None:
    if e.resource != "pods" or e.verb != "create" or not isinstance(e.body, dict):
        return None
    meta = e.body.get("metadata") or {}
    return meta.get("name") if (meta.get("labels") or {}).get(PROBE_LABEL[0]) == PROBE_LABEL[1] else None


def cluster_writes(entries: list) -> list:
    """Writes that change the cluster: everything but the playbooks' own nvidia-smi probe and GPU
    test pods (a check, created and deleted again) and refused requests."""
    ours = {name for e in entries if (name := _probe_pod(e))}
    return [e for e in entries if e.code < 300 and not (_probe_pod(e) or (e.resource == "pods" and e.name in ours))]
