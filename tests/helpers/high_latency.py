"""Seed 001's high-latency runbook in tests: its alert, timings for a simulator at 30x and a Prometheus
that scrapes every second, and how a test runs one incident against a given Prometheus."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import httpx

from tests.helpers.fixtures_prometheus import query
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import state_of, timeline_of
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.incident.models import Alert
from workflows.playbooks.high_latency.models import HighLatencyInput, LatencyTimings
from workflows.playbooks.high_latency.playbook import HighLatency

CHANNEL = "#incidents-latency"
NS = "production"
STEPS = ["1. Verify the alert", "2. Check system resources and request patterns", "4. Check cache performance"]
# Prometheus scrapes every second; the simulator runs 30x faster than life.
FAST = LatencyTimings(
    rate_window_seconds=10,
    verify_window_seconds=60,
    verify_step_seconds=2,
    verification_timeout_seconds=60,
    verification_poll_seconds=1,
    kube_call_timeout_seconds=10,
)


def latency_input(alertname: str = "LLMDHighLatency", **timings) -> HighLatencyInput:
    alert = Alert(
        alertname=alertname,
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": alertname, "severity": "warning", "service": "llm-d"},
        annotations={"summary": "High inference latency detected"},
    )
    return HighLatencyInput(
        alert=alert,
        runbook="high-latency",
        incident_commander="alice",
        slack_channel=CHANNEL,
        timings=FAST.model_copy(update=timings),
    )


async def shows(url: str, expr: str, what: str, timeout: float = 40) -> None:
    """Wait until Prometheus has scraped enough for `expr` to hold (the alert's `for:` period)."""

    async def holds() -> bool:
        return bool(await asyncio.to_thread(query, url, expr))

    await wait_for_async(holds, what, timeout)


async def run_incident(client, kube_api, slack_client, prometheus, task_queue, inp, during=None, history=None):
    """Run one incident with a worker pointed at `prometheus`; `during(handle)` steers it; `history`
    names the saved history (RUNBOOKS_SAVE_HISTORIES=1) that tests/test_replay.py replays."""
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                HighLatency.run, inp, id=f"high-latency-{inp.alert.fingerprint}", task_queue=task_queue
            )
            if during is not None:
                await during(handle)
            report = await asyncio.wait_for(handle.result(), 100)
            state = await state_of(handle)
            timeline = await timeline_of(handle)
    if history:
        await save_history(handle, history)
    return report, state, timeline
