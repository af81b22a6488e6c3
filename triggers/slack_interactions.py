"""Slack approval buttons: verify, decide, tell Slack who decided.

Clicks arrive two ways: HTTP (`POST /slack/interactions`, here) or Socket Mode
(triggers/slack_socket.py). Both turn the payload into a `Click` with `click_from_payload` and
hand it to `ApprovalDesk.decide`; only how the sender is authenticated differs.

Order matters: over HTTP the signature is checked over the raw body (5-minute window, each signature
accepted once) before anything in the body is believed. Slack wants an answer within 3 s,
so a verified click is acknowledged at once and the `decide` Update runs after the
response; the incident's own validator is the authority on gates and approvers (the
approvers list it was started with already has user groups expanded). A refused click
changes nothing and its user gets an ephemeral reply saying why.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from triggers.alertmanager import TemporalUnavailable
from triggers.metrics import TriggerMetrics
from workflows.incident.models import UPDATE_DECIDE, Decision

log = logging.getLogger(__name__)

WINDOW_SECONDS = 300
APPROVAL_ACTIONS = {"approve": True, "reject": False}
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class Refused(Exception):
    """A request that changes nothing; `status` and the message go back to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ReplayGuard:
    """Remembers every accepted signature for the window; a second sighting is a replay."""

    def __init__(self, window_s: float = WINDOW_SECONDS, max_entries: int = 100_000) -> None:
        self._window = window_s
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_sighting(self, signature: str, now: float) -> bool:
        while self._seen and (next(iter(self._seen.values())) < now - self._window or len(self._seen) >= self._max):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


def verify(secret: str, body: bytes, headers: dict[str, str], guard: ReplayGuard, now: float) -> None:
    """Raises Refused (401) unless the request is Slack's, fresh and seen for the first time."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not _TIMESTAMP.match(timestamp):
        raise Refused(401, "missing or malformed X-Slack-Request-Timestamp")
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        raise Refused(401, "stale request: timestamp outside the 5-minute window")
    if not _SIGNATURE.match(signature):
        raise Refused(401, "missing or malformed X-Slack-Signature")
    try:
        text = body.decode("utf-8")  # the verifier signs text; Slack only ever sends UTF-8
    except UnicodeDecodeError:
        raise Refused(401, "body is not UTF-8: not a request Slack signed") from None
    verifier = SignatureVerifier(secret, clock=_FixedClock(now))
    if not verifier.is_valid(body=text, timestamp=timestamp, signature=signature):
        raise Refused(401, "signature does not match: not signed with this app's signing secret")
    if not guard.first_sighting(signature, now):
        raise Refused(401, "replayed request: this signature was already used")


class _FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64)


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_id: str
    block_id: str | None = None
    value: str | None = None


class _Channel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ts: str
    text: str = ""
    blocks: list[dict[str, Any]] = Field(default_factory=list)


class BlockActions(BaseModel):
    """The part of Slack's block_actions payload a decision needs."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["block_actions"]
    user: _User
    actions: list[_Action] = Field(min_length=1)
    response_url: str | None = None
    channel: _Channel | None = None
    message: _Message | None = None


class _ButtonValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incident: str = Field(min_length=1, max_length=1000)
    gate: str = Field(min_length=1, max_length=255)


@dataclass(frozen=True)
class Click:
    incident: str
    gate: str
    approved: bool
    user: str
    action_block: str | None
    channel: str | None
    message: _Message | None
    response_url: str | None


def parse_click(body: bytes) -> Click | None:
    """The approval click in a verified HTTP body (form-encoded `payload=<json>`); None for an
    action that is not ours (e.g. a link). Raises Refused(400) for a body Slack would not send."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(400, f"body is not form-encoded: {err}") from None
    raw = form.get("payload")
    if not raw or len(raw) != 1:
        raise Refused(400, "expected exactly one 'payload' form field")
    return click_from_payload(raw[0])


def click_from_payload(payload: str | dict[str, Any]) -> Click | None:
    """The approval click in an interaction payload, whichever way it came: the JSON text of an
    HTTP request's `payload` field, or the `payload` object of a Socket Mode envelope.

    None for an action that is not ours; Refused(400) for a payload that is not a block_actions
    click with an {incident, gate} button value. Both paths go through here and then
    `ApprovalDesk.decide`, so what a click may do does not depend on how it arrived.
    """
    try:
        if isinstance(payload, str):
            actions = BlockActions.model_validate_json(payload)
        else:
            actions = BlockActions.model_validate(payload)
    except ValidationError as err:
        raise Refused(400, "not a block_actions payload: " + _first_error(err)) from None
    action = actions.actions[0]
    if action.action_id not in APPROVAL_ACTIONS:
        return None
    try:
        value = _ButtonValue.model_validate_json(action.value or "")
    except ValidationError as err:
        raise Refused(400, "approval button value is not {incident, gate}: " + _first_error(err)) from None
    return Click(
        incident=value.incident,
        gate=value.gate,
        approved=APPROVAL_ACTIONS[action.action_id],
        user=actions.user.id,
        action_block=action.block_id,
        channel=actions.channel.id if actions.channel else None,
        message=actions.message,
        response_url=actions.response_url,
    )


def _first_error(err: ValidationError) -> str:
    e = err.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"


Outcome = Literal["approved", "rejected", "refused", "no-incident", "unavailable"]


class ApprovalDesk:
    """Delivers a verified click to its incident and reports back in Slack."""

    def __init__(
        self,
        client: Callable[[], Awaitable[Client]],
        metrics: TriggerMetrics,
        *,
        slack: AsyncWebClient | None,
        http: httpx.AsyncClient,
        response_url_prefixes: list[str],
        rpc_timeout: timedelta,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._slack = slack
        self._http = http
        self._prefixes = response_url_prefixes
        self._rpc_timeout = rpc_timeout

    async def decide(self, click: Click) -> Outcome:
        outcome, detail = await self._deliver(click)
        self._metrics.approvals.labels(outcome).inc()
        log.info(
            "slack click %s on %s/%s by %s: %s %s",
            click.approved,
            click.incident,
            click.gate,
            click.user,
            outcome,
            detail,
        )
        if outcome in ("approved", "rejected"):
            await self._mark_decided(click, outcome)
        else:
            await self.tell(click.response_url, f":no_entry: Your click changed nothing: {detail}")
        return outcome

    async def _deliver(self, click: Click) -> tuple[Outcome, str]:
        decision = Decision(gate=click.gate, approved=click.approved, by=click.user, via="slack")
        try:
            client = await self._client()
            update = await client.get_workflow_handle(click.incident).start_update(
                UPDATE_DECIDE,
                decision,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=str,
                rpc_timeout=self._rpc_timeout,
            )
            # A validator's refusal is already known here; an accepted decision completes at once.
            await update.result(rpc_timeout=self._rpc_timeout)
        except WorkflowUpdateFailedError as err:
            return "refused", _cause(err)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return "no-incident", f"incident {click.incident} is no longer running"
            return "unavailable", f"the incident engine could not be reached ({err.message}); try again"
        except (WorkflowUpdateRPCTimeoutOrCancelledError, TemporalUnavailable) as err:
            return "unavailable", f"the incident did not answer in time ({err}); try again"
        return ("approved" if click.approved else "rejected"), ""

    async def _mark_decided(self, click: Click, outcome: Outcome) -> None:
        """Replace the buttons on the original message with who decided, when, and how."""
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        icon = ":white_check_mark:" if outcome == "approved" else ":x:"
        line = f"{icon} *{outcome.capitalize()}* by <@{click.user}> at {when} (gate `{click.gate}`, via Slack)"
        original = click.message.blocks if click.message else []
        kept = [b for b in original if not _is_clicked_buttons(b, click.action_block)]
        blocks = kept + [{"type": "section", "text": {"type": "mrkdwn", "text": line}}]
        text = f"{(click.message.text if click.message else '') or 'Approval'} — {outcome} by <@{click.user}>"
        if self._slack and click.channel and click.message:
            try:
                await self._slack.chat_update(channel=click.channel, ts=click.message.ts, text=text, blocks=blocks)
                return
            except SlackApiError as err:
                log.warning("chat.update of %s failed (%s); trying response_url", click.message.ts, err.response)
        await self._post(click.response_url, {"replace_original": True, "text": text, "blocks": blocks})

    async def tell(self, response_url: str | None, text: str) -> None:
        """An ephemeral reply only the clicking user sees."""
        await self._post(response_url, {"response_type": "ephemeral", "replace_original": False, "text": text})

    async def _post(self, response_url: str | None, body: dict[str, Any]) -> None:
        if not response_url or not any(response_url.startswith(p) for p in self._prefixes):
            log.warning("no usable response_url (%r): Slack user not told: %s", response_url, body.get("text"))
            return
        try:
            resp = await self._http.post(response_url, json=body, timeout=5.0)
            resp.raise_for_status()
        except httpx.HTTPError as err:
            log.warning("reply through response_url failed: %s", err)


def _is_clicked_buttons(block: dict[str, Any], block_id: str | None) -> bool:
    if block.get("type") != "actions":
        return False
    return block_id is None or block.get("block_id") == block_id


def _cause(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    return getattr(cause, "message", None) or str(cause or err)
