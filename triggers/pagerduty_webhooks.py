"""POST /pagerduty: PagerDuty's v3 webhooks, the way back from PagerDuty to the incident (issue 23).

Checked before anything is believed: `X-PagerDuty-Signature` holds one `v1=<hex>` per signing secret
(several while a secret rotates), each the hex HMAC-SHA256 of the raw body; the delivery is taken
when one of them matches one of our secrets (`pagerduty.webhook_secret`, comma-separated), compared
in constant time. A missing or bad signature is answered 401 and changes nothing.

PagerDuty waits 5 s for a 2xx and delivers at least once: a verified delivery is answered 202 as soon
as the incident has accepted it (not once its handler is done), once per `X-Webhook-Id` (the same on
every retry of a delivery): this process remembers recent ids, and the id is also the Temporal update
id, so a repeat that reaches another replica is still applied once. Temporal unreachable: 503, which
PagerDuty retries.

Our incidents' alerts carry the incident id as their dedup key (workflows/incident/paging.py), and
PagerDuty gives it back as `event.data.incident_key`; a role's page is `<incident id>:<role>`.
- `incident.acknowledged`: acknowledge our incident as the responder (`event.agent.summary`);
- `incident.resolved`: a human's resolution (automation stops acting);
- `incident.escalated`, `incident.reassigned`, `incident.annotated` (and other incident events): a note
  on the timeline;
- an event whose incident we did not raise (no incident key, or no such incident running): logged
  and ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from triggers.alertmanager import TemporalUnavailable
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-pagerduty-signature"
WEBHOOK_ID_HEADER = "x-webhook-id"
# PagerDuty drops any webhook over 256 KB itself; a bigger body is not PagerDuty's.
MAX_BODY = 256 * 1024
_REMEMBERED = 10_000
_FINISH_WAIT = 1.0  # seconds: how long an answer waits for the incident to finish the action


def signature_matches(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """One of the header's `v1=` signatures is HMAC-SHA256(secret, body) for one of `secrets`."""
    if not header or not secrets:
        return False
    given = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    expected = [hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets]
    # Every pair is compared, so the time taken says nothing about which one matched.
    matched = False
    for value in given:
        for want in expected:
            matched |= hmac.compare_digest(value.encode(), want.encode())
    return matched


@dataclass(frozen=True)
class PagerDutyEvent:
    """What a verified delivery says, in our terms."""

    webhook_id: str
    event_type: str
    incident_id: str | None  # our incident (workflow id); None: not one of ours, or not said
    pagerduty_incident: str | None  # PagerDuty's own incident id (data.id, or data.incident.id for a note)
    agent: str | None  # the responder's name
    detail: str  # for the timeline: the event in words


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_event(body: bytes, webhook_id: str) -> PagerDutyEvent | None:
    """The event of a v3 delivery; None when it is not one (then it is acknowledged and ignored)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    event = _obj(_obj(payload).get("event"))
    event_type = event.get("event_type")
    if not isinstance(event_type, str):
        return None
    data = _obj(event.get("data"))
    # An incident event's data is the incident; a note's (incident.annotated) names it as a reference.
    incident = _obj(data.get("incident")) or data
    key = incident.get("incident_key")
    name = _obj(event.get("agent")).get("summary")
    pd_id = incident.get("id")
    detail = f"PagerDuty: {event_type.removeprefix('incident.')}"
    if isinstance(data.get("content"), str) and data["content"]:
        detail += f": {data['content']}"
    elif isinstance(incident.get("title"), str):
        detail += f" ({incident['title']})"
    return PagerDutyEvent(
        webhook_id=webhook_id,
        event_type=event_type,
        # `<incident id>:<role>` for a role's page; our ids never hold a colon (scope.py)
        incident_id=key.split(":", 1)[0] if isinstance(key, str) and key else None,
        pagerduty_incident=pd_id if isinstance(pd_id, str) else None,
        agent=name if isinstance(name, str) and name else None,
        detail=detail[:1000],
    )


class PagerDutyDesk:
    """Applies verified PagerDuty events to our incidents (module docstring)."""

    def __init__(self, client: Callable[[], Awaitable[Client]], *, rpc_timeout: timedelta) -> None:
        self._client = client
        self._rpc_timeout = rpc_timeout
        self._seen: OrderedDict[str, None] = OrderedDict()
        # PagerDuty's incident id -> ours, learnt from events that carry the incident key: a note's
        # event names the incident only by PagerDuty's id.
        self._ours: OrderedDict[str, str] = OrderedDict()

    def first_delivery(self, webhook_id: str) -> bool:
        """True the first time this process sees `webhook_id` (it remembers the last 10,000)."""
        if webhook_id in self._seen:
            self._seen.move_to_end(webhook_id)
            return False
        self._seen[webhook_id] = None
        if len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        return True

    def forget(self, webhook_id: str) -> None:
        """A delivery that could not be applied (Temporal unreachable) may be applied on a retry."""
        self._seen.pop(webhook_id, None)

    async def handle(self, event: PagerDutyEvent) -> tuple[int, str]:
        """Apply the event: (the HTTP status to answer, what happened in words, also logged).

        Waits only until the incident has accepted the update (its validator passed), well within
        PagerDuty's 5 s; Temporal unreachable is a 503, which PagerDuty retries."""
        if event.incident_id is not None and event.pagerduty_incident:
            self._ours[event.pagerduty_incident] = event.incident_id
            if len(self._ours) > _REMEMBERED:
                self._ours.popitem(last=False)
        elif event.pagerduty_incident is not None and event.pagerduty_incident in self._ours:
            event = dataclasses.replace(event, incident_id=self._ours[event.pagerduty_incident])
        if event.incident_id is None:
            return 202, self._ignored(event, "no incident key: not an incident we raised")
        try:
            client = await self._client()
            update = await client.get_workflow_handle(event.incident_id).start_update(
                UPDATE_HUMAN_ACTION,
                _action(event),
                id=f"pagerduty-{event.webhook_id}",  # one delivery, one update, on any replica
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=str,
                rpc_timeout=self._rpc_timeout,
            )
            # A validator's refusal is known with the start; an accepted action may still be posting
            # to Slack: it finishes on its own, the answer does not wait for it.
            try:
                await asyncio.wait_for(update.result(rpc_timeout=self._rpc_timeout), timeout=_FINISH_WAIT)
            except asyncio.TimeoutError:
                pass
        except WorkflowUpdateFailedError as err:  # the incident refused it (already acknowledged, resolved)
            return 202, self._ignored(event, f"incident {event.incident_id} refused it: {_cause(err)}")
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return 202, self._ignored(event, f"no incident {event.incident_id} is running")
            return self._unavailable(event, err.message)
        except (WorkflowUpdateRPCTimeoutOrCancelledError, TemporalUnavailable) as err:
            return self._unavailable(event, str(err))
        log.info("PagerDuty %s applied to %s", event.event_type, event.incident_id)
        return 202, f"{event.event_type} applied to {event.incident_id}"

    def _unavailable(self, event: PagerDutyEvent, why: str) -> tuple[int, str]:
        self.forget(event.webhook_id)  # PagerDuty retries a 503: that retry must be applied
        log.error("PagerDuty %s for %s not applied, answering 503: %s", event.event_type, event.incident_id, why)
        return 503, f"the incident engine could not be reached: {why}"

    def _ignored(self, event: PagerDutyEvent, why: str) -> str:
        log.info("PagerDuty %s (delivery %s) ignored: %s", event.event_type, event.webhook_id, why)
        return f"ignored: {why}"


def _cause(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    return str(getattr(cause, "message", None) or cause or err)


def _action(event: PagerDutyEvent) -> HumanAction:
    by = event.agent or "PagerDuty"
    if event.event_type == "incident.acknowledged":
        return HumanAction(action="acknowledge", by=by, note="acknowledged in PagerDuty")
    if event.event_type == "incident.resolved":
        return HumanAction(action="resolve", by=by, note="resolved in PagerDuty")
    return HumanAction(action="note", by=by, note=event.detail)


OPENAPI_PATH: dict[str, Any] = {
    "post": {
        "summary": "PagerDuty v3 webhook (signed with the subscription's secret)",
        "description": (
            "401 for a missing or bad X-PagerDuty-Signature (nothing changes); 202 at once for a verified "
            "delivery, handled after the answer, once per X-Webhook-Id."
        ),
        "parameters": [
            {"name": "X-PagerDuty-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
            {"name": "X-Webhook-Id", "in": "header", "required": True, "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
            "202": {"description": "applied, a repeat, or ignored (not our incident)"},
            "401": {"description": "missing or bad signature"},
            "413": {"description": "body over 256 KB"},
            "503": {"description": "Temporal unreachable (PagerDuty retries), or no pagerduty.webhook_secret"},
        },
    }
}


def pagerduty_endpoint(
    secrets: Callable[[], list[str]], desk: PagerDutyDesk, outcomes: Callable[[str], None]
) -> Callable[[Request], Awaitable[Response]]:
    """The `POST /pagerduty` handler; `secrets()` the signing secrets, `outcomes(label)` counts each answer."""

    async def pagerduty(request: Request) -> Response:
        signing = secrets()
        if not signing:
            outcomes("not-configured")
            return JSONResponse({"error": "PagerDuty webhooks are not configured (pagerduty.webhook_secret)"}, 503)
        body = await _read_limited(request)
        if body is None:
            outcomes("too-large")
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, 413)
        # Nothing in the body is believed, nor its id, before the signature is.
        if not signature_matches(body, request.headers.get(SIGNATURE_HEADER), signing):
            outcomes("forged")
            return PlainTextResponse("missing or bad X-PagerDuty-Signature", status_code=401)
        webhook_id = request.headers.get(WEBHOOK_ID_HEADER) or hashlib.sha256(body).hexdigest()
        if not desk.first_delivery(webhook_id):
            outcomes("repeat")
            return JSONResponse({"result": "a repeat of a delivery already handled"}, 202)
        event = parse_event(body, webhook_id)
        if event is None:
            outcomes("not-an-event")
            return JSONResponse({"result": "ignored: not a v3 webhook event"}, 202)
        status, result = await desk.handle(event)
        outcomes(
            "applied"
            if status == 202 and not result.startswith("ignored")
            else "ignored"
            if status == 202
            else "unavailable"
        )
        return JSONResponse({"result": result}, status)

    return pagerduty


async def _read_limited(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
