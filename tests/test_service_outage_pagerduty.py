"""SOP-001 with PagerDuty configured: the real Temporal dev server, the worker in-process (its
PagerDutyEvents on the real `pagerduty` client), the simulated cluster's `service-outage` fault, the
Slack stand-in and the PagerDuty stand-in over HTTPS.

Set RUNBOOKS_SAVE_HISTORIES=1 to (re)write tests/histories/service_outage_heals_pagerduty.json, the
history of a paged incident that tests/test_replay.py replays (the `pagerduty-paging` patch).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from activities.pagerduty import PagerDutyEvents, events_client
from standins.pagerduty import PagerDutyStandIn
from standins.slack import SlackStandIn
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import state_of
from standins.alertmanager import free_port
from tests.helpers.service_outage import CHANNEL, outage_input
from tests.helpers.waiting import wait_for_async
from worker.worker import READY_LINE, build_worker
from workflows.incident.models import PagingPlan
from workflows.playbooks.service_outage.playbook import ServiceOutage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.scenario("service-outage")
async def test_sop_001_pages_once_through_pagerduty_and_its_resolution_resolves_the_alert(
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
    pagerduty_standin: PagerDutyStandIn,
) -> None:
    pd = pagerduty_standin
    client: Client = temporal_dev.client
    keys = {"default": pd.keys["LLM Platform"], "Senior SRE": pd.keys["Senior SRE"]}
    events = PagerDutyEvents(
        {route: events_client(key, events_url=pd.base_url, ca_file=pd.ca_file) for route, key in keys.items()}
    )
    inp = outage_input(severity="P0", paging=PagingPlan(severities=["P0"], roles=["Senior SRE"], source="prod"))
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, pagerduty=events
        ):
            handle = await client.start_workflow(
                ServiceOutage.run, inp, id=f"service-outage-{inp.alert.fingerprint}", task_queue=task_queue
            )
            await handle.result()
            state = await state_of(handle)
    await save_history(handle, "service_outage_heals_pagerduty")

    assert state.status == "resolved" and state.resolved_by == "automation"
    [alert] = pd.alerts(handle.id)  # one alert, its dedup key the incident id
    assert (alert.severity, alert.payload["source"], alert.payload["component"]) == (
        "critical",
        "prod",
        "service-outage",
    )
    assert alert.routing_key == pd.keys["LLM Platform"]
    assert alert.status == "resolved" and alert.log == ["trigger", "resolve"]
    assert [(a.dedup_key, a.status) for a in state.pagerduty_alerts] == [(handle.id, "resolved")]
    assert state.paging_failures == []


async def runbooks_worker(
    address: str, task_queue: str, kubeconfig: Path, slack: SlackStandIn, pd: PagerDutyStandIn
) -> asyncio.subprocess.Process:
    """`runbooks worker` as its own process, PagerDuty configured the way production is (RUNBOOKS_PAGERDUTY__*)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RUNBOOKS_CONFIG": "",
        "RUNBOOKS_TEMPORAL__ADDRESS": address,
        "RUNBOOKS_SLACK__BOT_TOKEN": "xoxb-test",
        "RUNBOOKS_SLACK__BASE_URL": slack.base_url,
        "RUNBOOKS_SLACK__CHANNELS": f'{{"default": "{CHANNEL}"}}',
        "RUNBOOKS_PAGERDUTY__ROUTING_KEY": pd.keys["LLM Platform"],
        "RUNBOOKS_PAGERDUTY__EVENTS_URL": pd.base_url,
        "RUNBOOKS_PAGERDUTY__CA_FILE": str(pd.ca_file),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "worker",
        "--task-queue",
        task_queue,
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-port",
        str(free_port()),
        "--no-schedules",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if not line:
            raise AssertionError("worker exited before it was ready:\n" + "".join(seen))
        seen.append(line.decode())
        if READY_LINE in seen[-1]:
            asyncio.get_running_loop().create_task(_drain(proc))
            return proc


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


@pytest.mark.timeout(240)
@pytest.mark.scenario("service-outage")
async def test_a_worker_killed_mid_page_leaves_one_alert(
    temporal_dev,
    task_queue: str,
    simulator,
    kubeconfig: Path,
    slack_standin: SlackStandIn,
    pagerduty_standin: PagerDutyStandIn,
) -> None:
    """PagerDuty took the trigger, the worker was SIGKILLed before it heard back: another worker's retry
    of the page repeats the same dedup key, and PagerDuty still has one alert; the resolution resolves it."""
    pd = pagerduty_standin
    pd.reset()
    client: Client = temporal_dev.client
    address = client.service_client.config.target_host
    inp = outage_input(severity="P0", paging=PagingPlan(severities=["P0"], source="prod"))
    pd.hold_answers()
    first = await runbooks_worker(address, task_queue, kubeconfig, slack_standin, pd)
    handle = await client.start_workflow(
        ServiceOutage.run, inp, id=f"service-outage-pd-crash-{inp.alert.fingerprint}", task_queue=task_queue
    )
    await wait_for_async(lambda: pd.events("trigger"), "the trigger at PagerDuty", timeout=60, every=0.02)
    first.send_signal(signal.SIGKILL)  # PagerDuty has the event; the worker never hears back
    await first.wait()
    pd.release_answers()
    second = await runbooks_worker(address, task_queue, kubeconfig, slack_standin, pd)
    try:
        # The second worker finishes SOP-001. The killed page is retried once its attempt times out
        # (same dedup key), or withdrawn when the incident resolves first; either way one alert.
        await asyncio.wait_for(handle.result(), timeout=150)
        state = await state_of(handle)
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), timeout=30)
    assert state.resolved_by == "automation"
    [alert] = pd.alerts(handle.id)
    assert alert.status == "resolved" and alert.log[-1] == "resolve"
    assert set(alert.log[:-1]) == {"trigger"}
    assert len(pd.alerts()) == 1
