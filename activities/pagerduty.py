"""PagerDuty: page the on-call through the Events API v2 with the official `pagerduty` client.

`PagerDutyEvents(clients)` holds one `EventsApiV2Client` per route (a client is bound to one routing
key): "default", a severity ("P0".."P3") and each escalation role ("Senior SRE"). The client is
synchronous, so these are sync activities (the worker's thread pool runs them).

Idempotent by design: every event carries the alert's `dedup_key` (the incident id, + the role for
an escalation page), so a retried or repeated trigger adds to the open alert, never opens another,
and a repeated acknowledge or resolve changes nothing.

Failures, as PagerDuty's Events API v2 documents them: 429 and 5xx (and network errors) are worth a
retry and raise a retryable error (the workflow's retry policy bounds them); any other 4xx (400 for
an invalid event or routing key, 413 for a body over 512 KB) cannot succeed on retry and raises
`ApplicationError(type="PagerDutyRefused", non_retryable=True)` with PagerDuty's own errors.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pagerduty
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.pagerduty_models import MAX_SUMMARY, PagerDutyFollowUp, PagerDutyReceipt, PagerDutyTrigger

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
REFUSED = "PagerDutyRefused"
NOT_CONFIGURED = "PagerDutyNotConfigured"
# One HTTP attempt per activity attempt for 5xx and network errors: Temporal's retry policy is the
# bound, and it shows in the incident's history. The client cannot be told "never" for 429 (0 means
# "without limit" there), so it retries a 429 once itself, then answers with it.
_CLIENT_RETRIES = {429: 1, 500: 0, 502: 0, 503: 0, 504: 0}
CLIENT_TIMEOUT_SECONDS = 10


def events_client(
    routing_key: str, *, events_url: str = DEFAULT_EVENTS_URL, ca_file: Path | None = None
) -> pagerduty.EventsApiV2Client:
    """An Events API v2 client for one routing key, posting to `<events_url>/v2/enqueue`.

    `ca_file`: trust only that CA (a local stand-in's); None: the system's. The client refuses any
    URL but https (`pagerduty.UrlError`)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    client = pagerduty.EventsApiV2Client(routing_key, base_url=events_url.rstrip("/"), verify=verify)
    client.retry = dict(_CLIENT_RETRIES)
    client.max_network_attempts = 0
    client.timeout = CLIENT_TIMEOUT_SECONDS
    return client


class PagerDutyEvents:
    """Trigger, acknowledge and resolve PagerDuty alerts; `clients` by route (module docstring)."""

    def __init__(self, clients: Mapping[str, pagerduty.EventsApiV2Client]) -> None:
        self.clients = dict(clients)

    def _client(self, route: str) -> pagerduty.EventsApiV2Client:
        client = self.clients.get(route)
        if client is None and route in ("P0", "P1", "P2", "P3"):
            client = self.clients.get("default")
        if client is None:
            configured = ", ".join(sorted(self.clients)) or "none"
            raise ApplicationError(
                f"no PagerDuty routing key for {route!r} on this worker (configured: {configured}); "
                "set pagerduty.routing_key, routing_keys or roles (RUNBOOKS_PAGERDUTY__*)",
                type=NOT_CONFIGURED,
                non_retryable=True,
            )
        return client

    @activity.defn(name="pagerduty_trigger")
    def trigger(self, alert: PagerDutyTrigger) -> PagerDutyReceipt:
        """Open (or repeat) the alert `alert.dedup_key` on the route's service."""
        client = self._client(alert.route)
        payload: dict[str, Any] = {}
        for name, value in (("component", alert.component), ("group", alert.group), ("class", alert.event_class)):
            if value:
                payload[name] = value
        summary = alert.summary if len(alert.summary) <= MAX_SUMMARY else alert.summary[: MAX_SUMMARY - 1] + "…"
        return self._send(
            lambda: client.trigger(
                summary,
                alert.source,
                dedup_key=alert.dedup_key,
                severity=alert.severity,
                payload=payload or None,
                custom_details=alert.custom_details or None,
                links=[link.model_dump(exclude_none=True) for link in alert.links] or None,
            ),
            f"trigger {alert.dedup_key}",
        )

    @activity.defn(name="pagerduty_follow_up")
    def follow_up(self, event: PagerDutyFollowUp) -> PagerDutyReceipt:
        """Acknowledge or resolve the alert `event.dedup_key` (PagerDuty drops it when none is open)."""
        client = self._client(event.route)
        send = client.acknowledge if event.action == "acknowledge" else client.resolve
        return self._send(lambda: send(event.dedup_key), f"{event.action} {event.dedup_key}")

    def _send(self, call: Any, what: str) -> PagerDutyReceipt:
        try:
            return PagerDutyReceipt(dedup_key=call())
        except pagerduty.HttpError as err:
            status = err.response.status_code if err.response is not None else 0
            if status == 429 or status >= 500:
                raise ApplicationError(
                    f"PagerDuty answered {status} to {what}; retrying", type="PagerDutyBusy"
                ) from None
            raise ApplicationError(
                f"PagerDuty refused {what} ({status}): {_errors(err.response)}", type=REFUSED, non_retryable=True
            ) from None
        except pagerduty.Error as err:  # no answer at all (connection, TLS, timeout): worth a retry
            raise ApplicationError(f"PagerDuty unreachable for {what}: {err}", type="PagerDutyUnreachable") from None


def _errors(response: Any) -> str:
    """PagerDuty's `errors` list of a 400 (or the body's start when it is not JSON)."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return response.text[:200] or "no detail"
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e) for e in errors)
        return str(body.get("message") or body)[:200]
    return str(body)[:200]
