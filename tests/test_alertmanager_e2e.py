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
from activities.temporal_coordinator import CoordinationActivities
from standins.alertmanager import free_port, prometheus_alert
from tests.helpers.fixtures_alertmanager import RunningTriggers, signal_names, triggers_settings
from tests.helpers.waiting import wait_for_async
from workflows.incident import search
from workflows.incident.search import SEARCH_ATTRIBUTES
from workflows.incident.coordinator import Coordinator
from workflows.playbooks.triage.playbook import Triage
from worker.worker import activities_for

pytestmark = pytest.mark.e2e


def _connect(client: Client) -> Callable[[], Awaitable[Client]]:
    async def factory() -> Client:
        return client

    return factory


async def incident_for(client: Client, task_queue: str, alertname: str, timeout: float = 20) -> str:
    """The incident the webhook opened for `alertname` (its first alert), found by search attribute."""
    found: list[str] = []

    async def listed() -> bool:
        found[:] = [
            w.id async for w in client.list_workflows(f'TaskQueue = "{task_queue}" AND AlertName = "{alertname}"')
        ]
        return bool(found)

    await wait_for_async(listed, f"an incident for {alertname}", timeout)
    return found[0]


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


async def test_alerts_of_one_fault_join_one_incident_and_repeats_or_a_second_alertmanager_start_no_more(
    dev_client, task_queue, alertmanagers
):
    """LLMDServiceDown from two instances is one fault for SOP-001 (the cluster): one incident that
    both join; an alert no playbook claims goes to triage; repeats and the HA peer add no incident."""
    settings = triggers_settings(task_queue)
    starts = datetime.now(timezone.utc) - timedelta(minutes=1)
    sent = [
        prometheus_alert("LLMDServiceDown", starts, namespace="llm-d", instance=instance)
        for instance in ("llm-d/llama-3-8b", "llm-d/mistral-7b")
    ]
    sent.append(prometheus_alert("KubePodCrashLooping", starts, namespace="llm-d"))

    async with RunningTriggers(settings, _connect(dev_client)) as triggers:
        am1 = alertmanagers(f"{triggers.url}/alertmanager?from=am1")
        await am1.post(*sent)
        await wait_for_async(lambda: _count_is(dev_client, task_queue, 2), "two incidents started", 20)
        outage = dev_client.get_workflow_handle(f"{task_queue}.service-outage--cluster")
        triage = dev_client.get_workflow_handle(await incident_for(dev_client, task_queue, "KubePodCrashLooping"))

        # repeat_interval 2 s: each alert comes again and joins as a repeat.
        async def repeated() -> bool:
            return (await signal_names(outage)).count("alert_firing") >= 4 and (await signal_names(triage)).count(
                "alert_firing"
            ) >= 2

        await wait_for_async(repeated, "repeats joined each incident", 20)

        # The HA peer sends the very same alerts.
        am2 = alertmanagers(f"{triggers.url}/alertmanager?from=am2")
        await am2.post(*sent)
        await wait_for_async(
            lambda: len(triggers.statuses("/alertmanager", "from=am2")) >= 2, "the second Alertmanager delivered", 20
        )
        await asyncio.sleep(1)

    assert set(triggers.statuses("/alertmanager")) == {200}
    assert await _count(dev_client, task_queue) == 2
    for handle in (outage, triage):
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert (await triage.describe()).workflow_type == "Triage"
    assert (await outage.describe()).workflow_type == "ServiceOutage"


async def _count_is(client: Client, task_queue: str, n: int) -> bool:
    return await _count(client, task_queue) == n


async def test_an_alert_resolved_through_endsat_signals_its_incident_and_stops_its_escalation(
    dev_client, task_queue, alertmanagers, slack_standin
):
    """Two Triage incidents: one 16 min old (escalates at once, proving escalation runs here) and
    one whose 15-minute mark is 20 s away (room for a busy machine); resolving the second before the
    mark means no page."""
    settings = triggers_settings(task_queue)
    now = datetime.now(timezone.utc)
    # P0: the seeds' marks every 15 minutes (triage has no SOP marks of its own).
    late = prometheus_alert("E2EStaleAlert", now - timedelta(minutes=16), severity="P0")
    mark = now + timedelta(seconds=20)  # the fresh incident's 15-minute mark
    fresh = prometheus_alert("E2EFreshAlert", mark - timedelta(minutes=15), severity="P0")
    slack = SlackActivities(
        AsyncWebClient(token="xoxb-test", base_url=slack_standin.base_url), default_channel="#incidents"
    )
    activities = [
        slack.post_incident,
        slack.post_in_thread,
        slack.request_approval,
        slack.update_message,
        *activities_for(CoordinationActivities(dev_client, task_queue)),
    ]

    async with (
        Worker(dev_client, task_queue=task_queue, workflows=[Triage, Coordinator], activities=activities),
        RunningTriggers(settings, _connect(dev_client)) as triggers,
    ):
        am = alertmanagers(f"{triggers.url}/alertmanager")
        await am.post(late, fresh)
        stale_h = dev_client.get_workflow_handle(await incident_for(dev_client, task_queue, "E2EStaleAlert"))
        fresh_h = dev_client.get_workflow_handle(await incident_for(dev_client, task_queue, "E2EFreshAlert"))

        async def stale_escalated() -> bool:
            return (
                await _exists(dev_client, stale_h.id)
                and ((await stale_h.describe()).typed_search_attributes.get(search.ESCALATION_LEVEL) or 0) >= 1
            )

        await wait_for_async(stale_escalated, "the 16-minute-old incident escalated", 20)
        await wait_for_async(lambda: _exists(dev_client, fresh_h.id), "fresh incident started", 10)

        # Prometheus says it is over: an endsAt in the past resolves the alert in Alertmanager.
        await am.post({**fresh, "endsAt": (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()})
        report = await asyncio.wait_for(fresh_h.result(), timeout=20)
        assert datetime.now(timezone.utc) < mark, "resolved before its mark (else the test proves nothing)"
        await asyncio.sleep(max(0.0, (mark + timedelta(seconds=2) - datetime.now(timezone.utc)).total_seconds()))
        await stale_h.terminate()  # before the worker stops, so no cached run is evicted mid-step

    assert "alert_resolved" in await signal_names(fresh_h)
    assert "alert resolved" in report.lower() or "resolved" in report.lower()
    desc = await fresh_h.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert (desc.typed_search_attributes.get(search.ESCALATION_LEVEL) or 0) == 0
    # The stale incident's page went out through Slack; the resolved one never paged anybody.
    texts = " ".join(m.get("text", "") for m in slack_standin.messages("#incidents"))
    assert "E2EStaleAlert" in texts
    # Two incidents, no third: counted by workflow id, since a firing notification Alertmanager flushes
    # again after the resolution may start one more run of the same incident (the ledger absorbs it).
    query = f'TaskQueue = "{task_queue}" AND WorkflowType = "Triage"'
    assert {w.id async for w in dev_client.list_workflows(query)} == {stale_h.id, fresh_h.id}


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
            [
                binary,
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--headless",
                "--db-filename",
                str(self._db),
                "--log-level",
                "error",
                *attrs,
            ],
            stdout=self._log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
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
            await wait_for_async(
                lambda: 503 in triggers.statuses("/alertmanager"),
                "the webhook answered 503 while Temporal was down",
                30,
            )
            temporal.start()
            checker = await temporal.ready()
            wf_id = f"{task_queue}.service-outage--cluster"
            await wait_for_async(lambda: _exists(checker, wf_id), "the incident started once Temporal was back", 60)
            await asyncio.sleep(3)  # more repeats arrive: still one incident
        statuses = triggers.statuses("/alertmanager")
        assert statuses.index(503) < statuses.index(200)
        assert await _count(checker, task_queue) == 1
    finally:
        temporal.stop()
