"""A playbook started with an invalid input fails at once with the validation error, and
touches nothing: no Kubernetes write, no Slack post."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from standins.slack import SlackStandIn
from worker.worker import build_worker

pytestmark = pytest.mark.integration


def valid_input() -> dict:
    """What the Alertmanager trigger would send, as plain JSON (the Web UI / CLI form)."""
    return {
        "alert": {
            "alertname": "LLMServiceDown",
            "fingerprint": uuid.uuid4().hex[:16],
            "starts_at": datetime.now(timezone.utc).isoformat(),
        },
        "runbook": "service-outage",
        "incident_commander": "alice",
    }


BAD_INPUTS = {
    "unknown severity": ({"severity": "P9"}, "severity"),
    "alert without fingerprint": (
        {"alert": {"alertname": "LLMServiceDown", "starts_at": "2030-01-01T00:00:00Z"}},
        "fingerprint",
    ),
    "misspelt field": ({"incident_comander": "bob"}, "incident_comander"),
    "negative poll interval": ({"timings": {"verification_poll_seconds": -1}}, "verification_poll_seconds"),
}


@pytest.mark.scenario("service-outage")
@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
async def test_invalid_input_fails_clearly_and_touches_nothing(
    case: str,
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    client: Client = temporal_dev.client
    override, field = BAD_INPUTS[case]
    bad = {**valid_input(), **override}
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue):
            handle = await client.start_workflow(
                "ServiceOutage", bad, id=f"bad-input-{uuid.uuid4().hex[:8]}", task_queue=task_queue
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()

    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ValidationError"
    assert "ServiceOutageInput" in cause.message and field in cause.message
    assert simulator.audit() == [], "an invalid incident must not change the cluster"
    assert slack_standin.calls("chat.postMessage") == [], "an invalid incident must not page anyone"
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
