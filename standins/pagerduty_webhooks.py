"""PagerDuty's v3 webhooks as PagerDuty sends them, for tests: payloads, signatures, deliveries.

A delivery is one JSON object `{"event": {...}}` (one event each, never a batch), POSTed with
- `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`: per signing secret of the subscription (several
  while a secret rotates), the hex HMAC-SHA256 of the raw body keyed by the secret;
- `X-Webhook-Id`: the delivery's id, the same on every retry of it (delivery is at least once);
- `X-Webhook-Subscription`: the subscription's id; `User-Agent: PagerDuty-Webhook/V3.0`.
PagerDuty waits 5 s for a 2xx; it retries 5xx, 429 and timeouts, and drops a delivery on any other 4xx.

An incident event's `data` is the incident: `id`, `number`, `status`, `title`, `incident_key` (for an
incident opened by an Events API alert, the alert's dedup key), `service`, `assignees`; the `agent`
is who did it (`summary`: the responder's name). `incident.annotated`'s `data` is the note, with
its `incident` as a reference.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

USER_AGENT = "PagerDuty-Webhook/V3.0"


def signature(body: bytes, secrets: Sequence[str]) -> str:
    """The `X-PagerDuty-Signature` value of `body` signed with each of `secrets`."""
    return ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)


def _reference(kind: str, ident: str, summary: str) -> dict[str, Any]:
    path = {"user_reference": "users", "service_reference": "services", "incident_reference": "incidents"}[kind]
    return {
        "id": ident,
        "type": kind,
        "summary": summary,
        "self": f"https://api.pagerduty.com/{path}/{ident}",
        "html_url": f"https://example.pagerduty.com/{path}/{ident}",
    }


@dataclass
class PagerDutyIncident:
    """An incident PagerDuty opened from an Events API alert (`incident_key` = its dedup key)."""

    incident_key: str
    title: str = "llm-d service is down"
    id: str = field(default_factory=lambda: "Q" + uuid.uuid4().hex[:13].upper())
    number: int = 1
    service: str = "LLM Platform"

    def data(self, status: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "incident",
            "self": f"https://api.pagerduty.com/incidents/{self.id}",
            "html_url": f"https://example.pagerduty.com/incidents/{self.id}",
            "number": self.number,
            "status": status,
            "incident_key": self.incident_key,
            "created_at": "2026-01-01T00:00:00Z",
            "title": self.title,
            "service": _reference("service_reference", "PSERVICE", self.service),
            "assignees": [],
            "urgency": "high",
            "priority": None,
        }


_STATUS = {
    "incident.acknowledged": "acknowledged",
    "incident.resolved": "resolved",
    "incident.unacknowledged": "triggered",
}


def incident_event(
    event_type: str,
    incident: PagerDutyIncident,
    *,
    agent: str | None = "Earline Greenholt",
    agent_id: str = "PXPGF42",
    note: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One v3 webhook payload about `incident`: `incident.acknowledged`, `.resolved`, `.escalated`,
    `.reassigned`, `.annotated` (with `note`), ... ; `agent` the responder's name (None: no agent)."""
    if event_type == "incident.annotated":
        data: dict[str, Any] = {
            "incident": _reference("incident_reference", incident.id, incident.title),
            "id": "N" + uuid.uuid4().hex[:13].upper(),
            "content": note or "",
            "type": "incident_note",
        }
    else:
        data = incident.data(_STATUS.get(event_type, "triggered"))
    return {
        "event": {
            "id": event_id or uuid.uuid4().hex,
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "agent": _reference("user_reference", agent_id, agent) if agent else None,
            "client": None,
            "data": data,
        }
    }


@dataclass
class Delivery:
    """One webhook as sent: its raw body and headers (re-send it to test a repeat)."""

    body: bytes
    headers: dict[str, str]


class PagerDutyWebhookSender:
    """Sends v3 webhooks to `url` signed with `secrets` (the subscription's, newest first)."""

    def __init__(self, url: str, secrets: Sequence[str], *, subscription_id: str = "PSUBSCR") -> None:
        self.url = url
        self.secrets = list(secrets)
        self.subscription_id = subscription_id

    def delivery(
        self, payload: dict[str, Any], *, secrets: Sequence[str] | None = None, webhook_id: str | None = None
    ) -> Delivery:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Webhook-Subscription": self.subscription_id,
        }
        signing = self.secrets if secrets is None else list(secrets)
        if signing:
            headers["X-PagerDuty-Signature"] = signature(body, signing)
        return Delivery(body, headers)

    async def send(self, delivery: Delivery, client: httpx.AsyncClient | None = None) -> httpx.Response:
        """POST it, with PagerDuty's 5 s deadline for the answer."""
        if client is not None:
            return await client.post(self.url, content=delivery.body, headers=delivery.headers, timeout=5)
        async with httpx.AsyncClient() as own:
            return await own.post(self.url, content=delivery.body, headers=delivery.headers, timeout=5)
