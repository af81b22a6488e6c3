"""POST /pagerduty on the triggers: PagerDuty's v3 webhooks, signed as PagerDuty signs them
(standins/pagerduty_webhooks.py), reaching a real incident on the dev server.

A signed `incident.acknowledged` acknowledges the incident as the responder; a forged one, one signed
with an old secret and an unsigned one get 401 and change nothing; the same delivery twice
acknowledges once; `incident.resolved` is a human's resolution; a note goes on the timeline; events
for incidents we did not raise are ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from standins.pagerduty_webhooks import PagerDutyIncident, PagerDutyWebhookSender, incident_event
from tests.helpers.fixtures_alertmanager import in_process, triggers_settings
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import incident_input
from tests.helpers.incident_playbooks import WaitForHumans
from tests.helpers.incident_queries import state_of, timeline_of, until
from triggers.pagerduty_webhooks import signature_matches

pytestmark = pytest.mark.timeout(120)

SECRET, OLD_SECRET, NEXT_SECRET = "pd-secret-now", "pd-secret-before", "pd-secret-next"


@pytest_asyncio.fixture(loop_scope="session")
async def incident(dev_client: Client, task_queue: str) -> AsyncIterator[WorkflowHandle]:
    slack = RecordingSlack()
    async with Worker(dev_client, task_queue=task_queue, workflows=[WaitForHumans], activities=slack.activities):
        handle = await dev_client.start_workflow(
            WaitForHumans.run,
            incident_input(datetime.now(timezone.utc)),
            id=f"incident-pd-{uuid.uuid4().hex[:10]}",
            task_queue=task_queue,
        )
        yield handle
        try:
            await handle.terminate("test over")
        except Exception:  # noqa: BLE001 - already finished
            pass


@pytest_asyncio.fixture(loop_scope="session")
async def triggers(dev_client: Client, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = triggers_settings(task_queue, pagerduty={"webhook_secret": f"{SECRET},{NEXT_SECRET}"})
    async with in_process(settings, dev_client) as client:
        yield client


def sender(*secrets: str) -> PagerDutyWebhookSender:
    return PagerDutyWebhookSender("http://triggers/pagerduty", secrets)


async def post(triggers: httpx.AsyncClient, delivery) -> httpx.Response:
    return await triggers.post("/pagerduty", content=delivery.body, headers=delivery.headers)


def test_signature_check_takes_any_v1_value_and_nothing_else() -> None:
    body = b'{"event": {}}'
    header = sender(OLD_SECRET, SECRET).delivery({"event": {}}).headers["X-PagerDuty-Signature"]
    assert signature_matches(body.replace(b" ", b""), header, [SECRET])  # rotating: the second value matches
    assert not signature_matches(body.replace(b" ", b""), header, ["another"])
    assert not signature_matches(body, None, [SECRET]) and not signature_matches(body, "v1=", [SECRET])
    assert not signature_matches(body, header, [])


async def test_forged_old_secret_and_unsigned_get_401_and_change_nothing(
    triggers: httpx.AsyncClient, incident: WorkflowHandle
) -> None:
    pd_incident = PagerDutyIncident(incident_key=incident.id)
    event = incident_event("incident.acknowledged", pd_incident, agent="Mallory")
    for delivery in (
        sender("a forger's guess").delivery(event),
        sender(OLD_SECRET).delivery(event),  # the secret before the rotation: no longer ours
        sender().delivery(event),  # no signature at all
    ):
        answer = await post(triggers, delivery)
        assert answer.status_code == 401, answer.text
    tampered = sender(SECRET).delivery(event)
    tampered.body = tampered.body.replace(b"Mallory", b"Mallorx")
    assert (await post(triggers, tampered)).status_code == 401
    state = await state_of(incident)
    assert state.acknowledged_by is None and state.status == "open"


async def test_a_signed_acknowledgement_acknowledges_as_the_responder_once(
    triggers: httpx.AsyncClient, incident: WorkflowHandle
) -> None:
    pd_incident = PagerDutyIncident(incident_key=incident.id)
    # Signed with both secrets while PagerDuty rotates to the next one: ours is among them.
    delivery = sender(NEXT_SECRET, OLD_SECRET).delivery(
        incident_event("incident.acknowledged", pd_incident, agent="Dana Responder")
    )
    first = await post(triggers, delivery)
    assert first.status_code == 202, first.text
    state = await until(incident, lambda s: s.acknowledged_by == "Dana Responder", "acknowledged from PagerDuty")
    assert state.status == "acknowledged"
    again = await post(triggers, delivery)  # PagerDuty delivers at least once
    assert again.status_code == 202 and "repeat" in again.json()["result"]
    # A second delivery (another id) of an acknowledgement is refused by the incident: already acknowledged.
    other = sender(SECRET).delivery(incident_event("incident.acknowledged", pd_incident, agent="Eve"))
    assert (await post(triggers, other)).json()["result"].startswith("ignored: ")
    timeline = await timeline_of(incident)
    assert [e.by for e in timeline if e.title == "acknowledged"] == ["Dana Responder"]
    metrics = (await triggers.get("/metrics")).text
    assert 'runbooks_pagerduty_webhooks_total{outcome="repeat"} 1.0' in metrics


async def test_a_note_goes_on_the_timeline_and_resolved_is_a_human_resolution(
    triggers: httpx.AsyncClient, incident: WorkflowHandle
) -> None:
    pd_incident = PagerDutyIncident(incident_key=f"{incident.id}:Senior SRE")  # the Senior SRE's page
    escalated = sender(SECRET).delivery(incident_event("incident.escalated", pd_incident, agent="PagerDuty"))
    assert (await post(triggers, escalated)).status_code == 202
    # A note's event names the incident by PagerDuty's id only: the one learnt above.
    note = sender(SECRET).delivery(
        incident_event("incident.annotated", pd_incident, agent="Dana Responder", note="rolling back the canary")
    )
    assert (await post(triggers, note)).status_code == 202
    resolved = sender(SECRET).delivery(incident_event("incident.resolved", pd_incident, agent="Dana Responder"))
    assert (await post(triggers, resolved)).status_code == 202
    await incident.result()
    timeline = await timeline_of(incident)
    notes = [e.outcome for e in timeline if e.title == "note"]
    assert any("PagerDuty: escalated" in (n or "") for n in notes)
    assert "PagerDuty: annotated: rolling back the canary" in notes
    state = await state_of(incident)
    assert (state.resolved_by, state.resolution) == ("Dana Responder", "resolved in PagerDuty")


async def test_events_for_incidents_we_did_not_raise_are_ignored(triggers: httpx.AsyncClient) -> None:
    for key in ("service-outage--nothing-we-run", ""):
        delivery = sender(SECRET).delivery(incident_event("incident.acknowledged", PagerDutyIncident(incident_key=key)))
        answer = await post(triggers, delivery)
        assert answer.status_code == 202 and answer.json()["result"].startswith("ignored: ")
    not_json = sender(SECRET).delivery({"ping": True})
    assert (await post(triggers, not_json)).json()["result"] == "ignored: not a v3 webhook event"


async def test_unconfigured_webhooks_are_refused(dev_client: Client, task_queue: str) -> None:
    async with in_process(triggers_settings(task_queue), dev_client) as client:
        delivery = sender(SECRET).delivery({"event": {}})
        answer = await client.post("/pagerduty", content=delivery.body, headers=delivery.headers)
    assert answer.status_code == 503 and "pagerduty.webhook_secret" in answer.text
