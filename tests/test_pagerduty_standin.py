"""The PagerDuty stand-in, driven by the real `pagerduty` client (EventsApiV2Client) over HTTPS with
the stand-in's throwaway CA: PagerDuty's answers, limits, de-duplication, and signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import httpx
import pagerduty
import pytest

from standins.pagerduty import PagerDutyStandIn, routing_key
from standins.pagerduty_webhooks import PagerDutyIncident, PagerDutyWebhookSender, incident_event, signature


def client(pd: PagerDutyStandIn, service: str = "LLM Platform", key: str | None = None) -> pagerduty.EventsApiV2Client:
    events = pagerduty.EventsApiV2Client(
        key or pd.keys[service], base_url=pd.base_url, verify=pd.certificate.client_context()
    )
    events.sleep_timer = 0.01  # the client's own back-off between its retries: not what is tested here
    return events


def test_the_client_refuses_plain_http_so_the_standin_serves_https(pd: PagerDutyStandIn) -> None:
    with pytest.raises(pagerduty.UrlError):
        pagerduty.EventsApiV2Client(pd.keys["LLM Platform"], base_url=f"http://127.0.0.1:{pd.port}")
    assert pd.base_url.startswith("https://")


def test_a_client_that_does_not_trust_the_throwaway_ca_cannot_connect(pd: PagerDutyStandIn) -> None:
    events = pagerduty.EventsApiV2Client(pd.keys["LLM Platform"], base_url=pd.base_url)
    events.max_network_attempts = 0
    with pytest.raises(pagerduty.Error):
        events.trigger("summary", "prod-us-east", dedup_key="x")
    assert pd.events() == []


def test_trigger_acknowledge_resolve_one_alert_by_dedup_key(pd: PagerDutyStandIn) -> None:
    events = client(pd)
    key = f"service-outage--llm-{uuid.uuid4().hex[:6]}"
    answer = events.trigger(
        "llm-d service is down",
        "prod-us-east",
        dedup_key=key,
        severity="critical",
        payload={"component": "service-outage", "group": "llm/llm-d"},
        custom_details={"status": "open"},
        links=[{"href": "https://temporal.example/incident", "text": "Temporal UI"}],
    )
    assert answer == key
    assert events.trigger("llm-d service is down", "prod-us-east", dedup_key=key) == key  # a repeat
    assert events.acknowledge(key) == key
    assert events.resolve(key) == key
    [alert] = pd.alerts(key)
    assert (alert.status, alert.log) == ("resolved", ["trigger", "trigger", "acknowledge", "resolve"])
    assert alert.payload["component"] == "service-outage" and alert.payload["custom_details"] == {"status": "open"}
    assert alert.links == [{"href": "https://temporal.example/incident", "text": "Temporal UI"}]
    # Resolved stays resolved: the next trigger of that key is a new alert.
    events.trigger("llm-d service is down again", "prod-us-east", dedup_key=key)
    assert [a.status for a in pd.alerts(key)] == ["resolved", "triggered"]


def test_the_202_answer_is_pagerdutys(pd: PagerDutyStandIn) -> None:
    body = {
        "routing_key": pd.keys["LLM Platform"],
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "c", "severity": "info"},
    }
    answer = httpx.post(f"{pd.base_url}/v2/enqueue", json=body, verify=pd.certificate.client_context())
    assert answer.status_code == 202
    data = answer.json()
    assert (data["status"], data["message"]) == ("success", "Event processed")
    assert len(data["dedup_key"]) == 32  # none given: PagerDuty makes one


def test_events_for_another_service_do_not_touch_the_alert(pd: PagerDutyStandIn) -> None:
    key = f"incident-{uuid.uuid4().hex[:6]}"
    client(pd).trigger("down", "prod-us-east", dedup_key=key)
    client(pd, "Senior SRE").resolve(key)  # another routing key: dropped
    assert [a.status for a in pd.alerts(key)] == ["triggered"]
    client(pd).acknowledge("no-such-alert")  # nothing open under that key: dropped, still 202
    assert pd.alerts("no-such-alert") == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"summary": "x" * 1025}, "'payload.summary' is too long (maximum is 1024 characters)"),
        ({"severity": "P0"}, "'payload.severity' is invalid (must be one of critical, error, warning, info)"),
        ({"source": ""}, "'payload.source' is missing or blank"),
        ({"dedup_key": "k" * 256}, "'dedup_key' is too long (maximum is 255 characters)"),
    ],
)
def test_pagerdutys_limits_are_refused_with_its_400(pd: PagerDutyStandIn, change: dict, error: str) -> None:
    args = {"summary": "down", "source": "prod-us-east", "severity": "critical", "dedup_key": "k"} | change
    with pytest.raises(pagerduty.HttpError) as caught:
        client(pd).trigger(args.pop("summary"), args.pop("source"), **args)
    response = caught.value.response
    assert response.status_code == 400
    assert response.json() == {"status": "invalid event", "message": "Event object is invalid", "errors": [error]}
    assert pd.events() == [] and pd.alerts() == []


def test_limits_at_their_edge_are_taken(pd: PagerDutyStandIn) -> None:
    key = "k" * 255
    assert client(pd).trigger("x" * 1024, "prod-us-east", dedup_key=key) == key


def test_a_bad_routing_key_is_refused(pd: PagerDutyStandIn) -> None:
    for key, error in [
        ("short", "Length of 'routing_key' is incorrect (should be 32 characters)"),
        (routing_key("no such service"), "Invalid routing key"),
    ]:
        with pytest.raises(pagerduty.HttpError) as caught:
            client(pd, key=key).trigger("down", "prod-us-east", dedup_key="k")
        assert caught.value.response.status_code == 400
        assert error in caught.value.response.json()["errors"]
    assert pd.alerts() == []


def test_a_body_over_512_kb_is_refused(pd: PagerDutyStandIn) -> None:
    with pytest.raises(pagerduty.HttpError) as caught:
        client(pd).trigger("down", "prod-us-east", dedup_key="big", custom_details={"log": "x" * (512 * 1024)})
    assert caught.value.response.status_code == 413
    assert pd.alerts() == []


def test_429_and_5xx_on_request_then_the_event_lands(pd: PagerDutyStandIn) -> None:
    events = client(pd)
    pd.fail_next(429, 503)
    assert events.trigger("down", "prod-us-east", dedup_key="retried") == "retried"  # the client retries both
    assert pd.requests == 3
    assert len(pd.alerts("retried")) == 1
    pd.fail_every(500)
    with pytest.raises(pagerduty.ServerHttpError):
        events.resolve("retried")  # the client gives up on 500 after its own retries
    pd.fail_every(None)
    assert [a.status for a in pd.alerts("retried")] == ["triggered"]


# -- webhooks -------------------------------------------------------------------------------------


def test_webhook_signature_is_hmac_sha256_of_the_raw_body_per_secret() -> None:
    body = b'{"event":{"id":"1"}}'
    header = signature(body, ["new-secret", "old-secret"])
    assert header == ",".join(
        "v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in ("new-secret", "old-secret")
    )


def test_a_delivery_carries_pagerdutys_headers_and_a_v3_incident_event() -> None:
    sender = PagerDutyWebhookSender("https://example.invalid/pagerduty", ["s3cret"])
    incident = PagerDutyIncident(incident_key="service-outage--llm")
    delivery = sender.delivery(incident_event("incident.acknowledged", incident, agent="Dana Responder"))
    event = json.loads(delivery.body)["event"]
    assert event["event_type"] == "incident.acknowledged" and event["resource_type"] == "incident"
    assert event["data"]["incident_key"] == "service-outage--llm" and event["data"]["status"] == "acknowledged"
    assert event["agent"]["summary"] == "Dana Responder" and event["agent"]["type"] == "user_reference"
    assert delivery.headers["X-PagerDuty-Signature"] == signature(delivery.body, ["s3cret"])
    assert delivery.headers["X-Webhook-Id"] and delivery.headers["User-Agent"] == "PagerDuty-Webhook/V3.0"
    unsigned = sender.delivery(incident_event("incident.resolved", incident), secrets=[])
    assert "X-PagerDuty-Signature" not in unsigned.headers
