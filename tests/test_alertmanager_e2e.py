"""End to end with a real Alertmanager (Debian 0.25) delivering to the triggers app on uvicorn.

Incidents are started on a fresh task queue. Without a worker a started or signalled
workflow is the proof; the escalation test runs the real Triage playbook with a worker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.slack import SlackActivities
from tests.fixtures_alertmanager import RunningTriggers, free_port, prometheus_alert, signal_names, triggers_settings
from triggers.payload import AlertmanagerPayload
from workflows import search
from workflows.models import incident_id
from workflows.search import SEARCH_ATTRIBUTES
from workflows.triage import Triage

pytestmark = pytest.mark.e2e


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


async def _async(value: bool) -> bool:
    return value


def _connect(client: Client) -> Callable[[], Awaitable[Client]]:
    async def factory() -> Client:
        return client

    return factory


async def incident_ids(am, settings) -> dict[str, str]:
    """alertname -> the incident id the webhook must use, from what Alertmanager itself reports."""
    catalog = settings.routing.catalog()
    ids = {}
    for a in await am.alerts():
        parsed = AlertmanagerPayload.model_validate(
            {"version": "4", "status": "firing", "alerts": [{**a, "status": "firing", "endsAt": None}]}
        ).alerts[0]
        ids[parsed.alertname] = incident_id(catalog.route(parsed.labels).runbook, parsed.fingerprint, parsed.starts_at)
    return ids


async def _exists(client: Client, wf_id: str) -> bool:
    try:
        await client.get_workflow_handle(wf_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _count(client: Client, task_queue: str) -> int:
    return (await client.count_workflows(f'TaskQueue = "{task_queue}"')).count


async def test_alerts_start_one_incident_each_and_repeats_or_a_second_alertmanager_start_no_more(
    dev_client, task_queue, alertmanagers
):
    settings = triggers_settings(task_queue)
    starts = datetime.now(timezone.utc) - timedelta(minutes=1)
    sent = [prometheus_alert(name, starts, namespace="llm-d")
            for name in ("LLMDServiceDown", "LLMModelNotResponding", "LLMDKVCacheOverflow")]

    async with RunningTriggers(settings, _connect(dev_client)) as triggers:
        am1 = alertmanagers(f"{triggers.url}/alertmanager?from=am1")
        await am1.post(*sent)
        ids = await incident_ids(am1, settings)
        assert len(ids) == 3

        async def all_started() -> bool:
            return all([await _exists(dev_client, i) for i in ids.values()])

        await eventually(all_started, 20, "three incidents started")
        # repeat_interval 2 s: wait for at least one repeat of each, all absorbed.
        handles = {name: dev_client.get_workflow_handle(i) for name, i in ids.items()}

        async def repeated() -> bool:
            return all(["alert_repeated" in await signal_names(h) for h in handles.values()])

        await eventually(repeated, 20, "repeats recorded on each incident")

        # The HA peer sends the very same alerts.
        am2 = alertmanagers(f"{triggers.url}/alertmanager?from=am2")
        await am2.post(*sent)
        await eventually(lambda: _async(len(triggers.statuses("/alertmanager", "from=am2")) >= 3), 20,
                         "the second Alertmanager delivered")
        await asyncio.sleep(1)

    assert set(triggers.statuses("/alertmanager")) == {200}
    assert await _count(dev_client, task_queue) == 3
    for handle in handles.values():
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert (await handles["LLMDKVCacheOverflow"].describe()).workflow_type == "Triage"
    assert (await handles["LLMDServiceDown"].describe()).workflow_type == "ServiceOutage"


async def test_an_alert_resolved_through_endsat_signals_its_incident_and_stops_its_escalation(
    dev_client, task_queue, alertmanagers, slack_standin
):
    """Two Triage incidents: one 16 min old (escalates at once, proving escalation runs here) and
    one whose 15-minute mark is 8 s away; resolving the second before the mark means no page."""
    settings = triggers_settings(task_queue)
    now = datetime.now(timezone.utc)
    late = prometheus_alert("E2EStaleAlert", now - timedelta(minutes=16))
    fresh = prometheus_alert("E2EFreshAlert", now - timedelta(minutes=15) + timedelta(seconds=8))
    slack = SlackActivities(AsyncWebClient(token="xoxb-test", base_url=slack_standin.base_url),
                            default_channel="#incidents")
    activities = [slack.post_incident, slack.post_in_thread, slack.request_approval, slack.update_message]

    async with (
        Worker(dev_client, task_queue=task_queue, workflows=[Triage], activities=activities),
        RunningTriggers(settings, _connect(dev_client)) as triggers,
    ):
        am = alertmanagers(f"{triggers.url}/alertmanager")
        await am.post(late, fresh)
        ids = await incident_ids(am, settings)
        stale_h, fresh_h = dev_client.get_workflow_handle(ids["E2EStaleAlert"]), dev_client.get_workflow_handle(
            ids["E2EFreshAlert"])

        async def stale_escalated() -> bool:
            return await _exists(dev_client, stale_h.id) and (
                (await stale_h.describe()).typed_search_attributes.get(search.ESCALATION_LEVEL) or 0) >= 1

        await eventually(stale_escalated, 20, "the 16-minute-old incident escalated")
        await eventually(lambda: _exists(dev_client, fresh_h.id), 10, "fresh incident started")

        # Prometheus says it is over: an endsAt in the past resolves the alert in Alertmanager.
        await am.post({**fresh, "endsAt": (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()})
        report = await asyncio.wait_for(fresh_h.result(), timeout=20)
        await asyncio.sleep(max(0.0, (now + timedelta(seconds=10) - datetime.now(timezone.utc)).total_seconds()))
        await stale_h.terminate()  # before the worker stops, so no cached run is evicted mid-step

    assert "alert_resolved" in await signal_names(fresh_h)
    assert "alert resolved" in report.lower() or "resolved" in report.lower()
    desc = await fresh_h.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert (desc.typed_search_attributes.get(search.ESCALATION_LEVEL) or 0) == 0
    # The stale incident's page went out through Slack; the resolved one never paged anybody.
    texts = " ".join(m.get("text", "") for m in slack_standin.messages("#incidents"))
    assert "E2EStaleAlert" in texts
    assert await _count(dev_client, task_queue) == 2


class OwnTemporal:
    """`temporal server start-dev` on a fixed port with a db file, so it can be stopped and restarted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._db = workdir / "temporal.db"
        self._log = workdir / "temporal.log"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("temporal") or str(Path(__file__).resolve().parents[1] / ".venv/bin/temporal")
        attrs = [arg for key, _ in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{key.name}={_kind(key)}")]
        self._proc = subprocess.Popen(
            [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port), "--headless",
             "--db-filename", str(self._db), "--log-level", "error", *attrs],
            stdout=self._log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    async def ready(self, timeout: float = 30) -> Client:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await Client.connect(self.address, data_converter=pydantic_data_converter)
            except Exception:
                if time.monotonic() > deadline or (self._proc and self._proc.poll() is not None):
                    raise AssertionError(f"own Temporal did not start: {self._log.read_text()[-2000:]}") from None
                await asyncio.sleep(0.3)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()


def _kind(key) -> str:
    return "Int" if key.name == search.ESCALATION_LEVEL.name else "Keyword"


async def test_with_temporal_stopped_the_webhook_answers_503_and_alertmanager_retries_until_it_is_back(
    tmp_path, task_queue, alertmanagers
):
    temporal = OwnTemporal(tmp_path)
    temporal.start()
    try:
        app_client = await temporal.ready()
        settings = triggers_settings(task_queue, temporal={"rpc_timeout_seconds": 2})
        async with RunningTriggers(settings, _connect(app_client)) as triggers:
            am = alertmanagers(f"{triggers.url}/alertmanager")
            temporal.stop()
            await am.post(prometheus_alert("LLMDServiceDown", datetime.now(timezone.utc) - timedelta(minutes=1)))
            await eventually(lambda: _async(503 in triggers.statuses("/alertmanager")), 30,
                             "the webhook answered 503 while Temporal was down")
            temporal.start()
            checker = await temporal.ready()
            [wf_id] = (await incident_ids(am, settings)).values()
            await eventually(lambda: _exists(checker, wf_id), 60, "the incident started once Temporal was back")
            await asyncio.sleep(3)  # more repeats arrive: still one incident
        statuses = triggers.statuses("/alertmanager")
        assert statuses.index(503) < statuses.index(200)
        assert await _count(checker, task_queue) == 1
    finally:
        temporal.stop()

