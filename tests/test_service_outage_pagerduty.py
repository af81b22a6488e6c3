"""SOP-001 with PagerDuty configured: the real Temporal dev server, the worker in-process (its
PagerDutyEvents on the real `pagerduty` client), the simulated cluster's `service-outage` fault, the
Slack stand-in and the PagerDuty stand-in over HTTPS.

Set RUNBOOKS_SAVE_HISTORIES=1 to (re)write tests/histories/service_outage_heals_pagerduty.json, the
history of a paged incident that tests/test_replay.py replays (the `pagerduty-paging` patch).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from activities.pagerduty import PagerDutyEvents, events_client
from standins.pagerduty import PagerDutyStandIn
from standins.slack import SlackStandIn
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import state_of
from tests.helpers.service_outage import CHANNEL, outage_input
from worker.worker import build_worker
from workflows.incident.models import PagingPlan
from workflows.playbooks.service_outage.playbook import ServiceOutage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pagerduty_standin() -> Iterator[PagerDutyStandIn]:
    server = PagerDutyStandIn(integrations=("LLM Platform", "Senior SRE")).start()
    try:
        yield server
    finally:
        server.stop()


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
