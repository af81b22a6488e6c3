"""An incident commander's view in the Temporal Web UI, looked at in headless Chromium.

Two real incidents run on a dev server with its UI, a worker in-process, the simulated cluster
and the Slack stand-in: a P0 service outage waiting at its maintenance-mode approval gate, and
a P1 triage whose alert started 61 minutes ago (so it is at escalation level 2: the P1 marks
are every 30 minutes). The saved-view
queries of docs/incident-commander.md must find exactly the right one, in the Temporal client
(the ground truth) and on the UI's workflow list; the outage's page must show its current details.

RUNBOOKS_SAVE_SCREENSHOTS=1 (re)writes docs/img/*.png from this run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle

from tests.helpers.fixtures_ui import HeadlessChromium, TemporalWithUI, needs_chromium
from tests.helpers.incident_queries import gate_asked, until
from tests.helpers.service_outage import FAST, set_health_url
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, UPDATE_HUMAN_ACTION, Alert, HumanAction, IncidentInput, incident_id
from workflows.playbooks.service_outage.models import GATE_MAINTENANCE, ServiceOutageInput
from workflows.playbooks.service_outage.playbook import ServiceOutage
from workflows.playbooks.triage.playbook import Triage

pytestmark = [pytest.mark.integration, needs_chromium]

DOC_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "img"
CHANNEL = "#incidents-ui"
# The saved views of docs/incident-commander.md, and which incident each must show.
OPEN_OUTAGES = 'Runbook="service-outage" AND IncidentStatus!="resolved"'
P0_ONLY = 'IncidentSeverity="P0"'
ESCALATED = "EscalationLevel>=2"
AWAITING_DECISION = 'IncidentStatus="awaiting-approval"'


def _alert(alertname: str, summary: str, starts_at: datetime, namespace: str) -> Alert:
    return Alert(
        alertname=alertname,
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=starts_at,
        labels={"alertname": alertname, "namespace": namespace},
        annotations={"summary": summary},
    )


def outage_waiting_for_approval() -> ServiceOutageInput:
    """SOP-001 whose restarts can't bring service back: it stops at the maintenance-mode gate."""
    alert = _alert("LLMServiceDown", "llm-d inference is down", datetime.now(timezone.utc), "production")
    timings = FAST.model_copy(
        update={"restart_grace_seconds": 3, "verification_timeout_seconds": 3, "approval_timeout_minutes": 30}
    )
    return ServiceOutageInput(
        alert=alert,
        runbook="service-outage",
        incident_commander="alice",
        slack_channel=CHANNEL,
        namespace="production",
        timings=timings,
    )


def escalated_triage() -> IncidentInput:
    """An alert no playbook claims, firing for 61 minutes: escalation level 2 on arrival (P1: 30/60 min)."""
    starts_at = datetime.now(timezone.utc) - timedelta(minutes=61)
    alert = _alert("KVCacheEvictionsHigh", "KV cache evictions are high", starts_at, "production")
    return IncidentInput(
        alert=alert,
        runbook="triage",
        severity="P1",
        incident_commander="bob",
        slack_channel=CHANNEL,
        namespace="production",
    )


async def start(client: Client, workflow, inp: IncidentInput, task_queue: str) -> WorkflowHandle:
    wid = incident_id(inp.runbook, inp.alert.fingerprint, inp.alert.starts_at)
    return await client.start_workflow(workflow, inp, id=wid, task_queue=task_queue)


async def listed(client: Client, query: str, expected: set[str], timeout: float = 15.0) -> set[str]:
    """Workflow ids the visibility store returns for `query`, once it has caught up with `expected`; what it
    returns by then otherwise."""
    ids: set[str] = set()

    async def caught_up() -> bool:
        ids.clear()
        ids.update({wf.id async for wf in client.list_workflows(query)})
        return ids == expected

    with contextlib.suppress(AssertionError):  # the caller's assertion names the difference
        await wait_for_async(caught_up, f"{query} to list {expected}", timeout)
    return ids


def filtered_list_url(ui: TemporalWithUI, query: str) -> str:
    return f"{ui.workflows_url()}?query={urllib.parse.quote(query)}"


def shows_only(browser: HeadlessChromium, url: str, expected: str, others: list[str]) -> str:
    """The list at `url` shows `expected` and, once rendered and settled, none of `others`."""
    browser.open(url)
    browser.wait_for(lambda text: expected in text, f"incident {expected}")
    time.sleep(1.0)  # let any late re-render land before judging what is absent
    text = browser.visible_text()
    assert expected in text
    for other in others:
        assert other not in text, f"{other} should not match {urllib.parse.unquote(url)}"
    return text


def save(browser: HeadlessChromium, name: str, tmp_path: Path, height: int) -> None:
    """The page's content, without the UI's sidebar and top bar (smaller pictures for the docs)."""
    region = (256, 48, 1024, height)
    browser.screenshot(tmp_path / name, region)
    if os.environ.get("RUNBOOKS_SAVE_SCREENSHOTS"):
        browser.screenshot(DOC_IMAGES / name, region)


@pytest.mark.scenario("service-outage")
async def test_incident_commander_filters_incidents_and_reads_current_details(
    temporal_ui: TemporalWithUI,
    chromium: HeadlessChromium,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_client,
    tmp_path: Path,
):
    client = temporal_ui.env.client
    set_health_url(kube_api, "production", "mistral-7b", "http://127.0.0.1:9/health")  # restarts won't help

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            outage = await start(client, ServiceOutage.run, outage_waiting_for_approval(), task_queue)
            triage = await start(client, Triage.run, escalated_triage(), task_queue)
            await gate_asked(outage, GATE_MAINTENANCE)
            await until(triage, lambda s: s.escalation_level >= 2, "escalation level 2", 20)
            a, b = outage.id, triage.id

            # ground truth: the server's visibility store answers each saved view
            assert await listed(client, OPEN_OUTAGES, {a}) == {a}
            assert await listed(client, P0_ONLY, {a}) == {a}
            assert await listed(client, AWAITING_DECISION, {a}) == {a}
            assert await listed(client, ESCALATED, {b}) == {b}

            # the UI's list, filtered by each saved view (a thread: the UI's queries need this loop's worker)
            await asyncio.to_thread(shows_only, chromium, filtered_list_url(temporal_ui, OPEN_OUTAGES), a, [b])
            await asyncio.to_thread(save, chromium, "incident-list-filtered.png", tmp_path, 300)
            await asyncio.to_thread(shows_only, chromium, filtered_list_url(temporal_ui, P0_ONLY), a, [b])
            await asyncio.to_thread(shows_only, chromium, filtered_list_url(temporal_ui, ESCALATED), b, [a])

            # the outage's page: current details say what it is, where it stands and what it waits for
            state = await outage.query(QUERY_STATE, result_type=IncidentState)
            page = f"{temporal_ui.workflows_url()}/{a}/{outage.result_run_id}/user-metadata"
            headline = f"{state.severity} {state.title} — {state.status}"
            gate_line = f"awaiting approval {GATE_MAINTENANCE}: {state.pending_gates[0].question}"
            await asyncio.to_thread(chromium.open, page)
            text = await asyncio.to_thread(
                chromium.wait_for, lambda t: headline in t and gate_line in t, "the outage's current details"
            )
            assert "incident commander: alice" in text
            await asyncio.to_thread(save, chromium, "incident-current-details.png", tmp_path, 700)

            # The IC closes both. Incidents left running get evicted at worker shutdown, where
            # Incident.step's cleanup calls workflow.now() outside the workflow loop.
            for handle, ic in ((outage, "alice"), (triage, "bob")):
                await handle.execute_update(
                    UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by=ic, note="seen in the UI"), result_type=str
                )
                await handle.result()
            assert await listed(client, OPEN_OUTAGES, set()) == set()
