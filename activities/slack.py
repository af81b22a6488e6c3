"""Slack: the incident's first message, its thread, approval buttons, message edits.

Channels are configured by name or id; every call goes to the id (activities/slack_channels.py),
as Slack's methods other than chat.postMessage take only ids.

Every post carries an idempotency key in the message metadata. A retried attempt first looks
for a message with that key (conversations.history / conversations.replies with metadata) and
returns it instead of posting twice. Without a token the messages go to the log and stdout,
marked `[slack:console]` and the incident's id (`[slack:console] <incident> #channel: text`, once: not
also logged), so a drill on a laptop still shows what would have been said, and about which incident.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.slack_channels import ChannelDirectory
from activities.slack_models import (
    ApprovalRequest,
    IncidentMessage,
    MessageLink,
    MessageUpdate,
    SlackMessageRef,
    ThreadMessage,
)
from activities.slack_mrkdwn import cut, escape, escape_blocks, link

METADATA_EVENT = "llm_runbooks_message"
CONSOLE_MARK = "[slack:console]"
# Errors no retry can fix: wrong token, wrong channel, malformed message.
_PERMANENT = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "invalid_blocks",
    "msg_too_long",
    "no_text",
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
}
# Failures other than a rate limit: attempts before giving up (1 + 2 + 4 + 8 + 16 s of backoff).
TRANSIENT_ATTEMPTS = 6
# A 429 without Retry-After (Slack always sends one): wait this long.
_DEFAULT_RETRY_AFTER = 1.0
_SEVERITY_ICON = {
    "P0": ":rotating_light:",
    "P1": ":red_circle:",
    "P2": ":large_orange_circle:",
    "P3": ":large_blue_circle:",
}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    # Already escaped (activities/slack_mrkdwn.py); a section's text is capped at 3000 characters by Slack.
    return {"type": "mrkdwn", "text": cut(text, 3000)}


def text_blocks(text: str) -> list[dict[str, Any]]:
    """Sections of at most 3000 characters, split at line ends, so a long report shows whole (`text` escaped)."""
    chunks: list[str] = []
    for line in text.splitlines() or [text]:
        if chunks and len(chunks[-1]) + 1 + len(line) <= 3000:
            chunks[-1] += "\n" + line
        else:
            chunks.append(cut(line, 3000) or " ")
    return [{"type": "section", "text": _mrkdwn(chunk)} for chunk in chunks[:50]]  # Slack allows 50 blocks


def incident_blocks(msg: IncidentMessage) -> list[dict[str, Any]]:
    """Header with severity and summary, the description, links, key labels. Alert text is escaped;
    the header is plain_text (shown as given)."""
    icon = _SEVERITY_ICON.get(msg.severity, ":warning:")
    summary = f"*{escape(msg.summary)}*" + (f"\n{escape(msg.description)}" if msg.description else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{icon} {msg.severity} INCIDENT: {msg.title}", 150)},
        {"type": "section", "text": _mrkdwn(summary)},
        {
            "type": "section",
            "fields": [
                _mrkdwn(f"*Status:*\n{escape(msg.status)}"),
                _mrkdwn(f"*Incident Commander:*\n{escape(msg.incident_commander)}"),
                _mrkdwn(f"*Started:*\n{msg.started_at:%Y-%m-%d %H:%M:%S %Z}"),
                _mrkdwn(f"*Incident:*\n`{escape(msg.incident_id)}`"),
                *([_mrkdwn(f"*Cluster:*\n`{escape(msg.cluster)}`")] if msg.cluster else []),
            ],
        },
    ]
    links = []
    if msg.runbook_url:
        links.append(link(msg.runbook_url, "Runbook"))
    if msg.ui_url:
        links.append(link(msg.ui_url, "Temporal UI"))
    if links:
        blocks.append({"type": "section", "text": _mrkdwn(" · ".join(links))})
    if msg.labels:
        labels = "  ".join(f"`{escape(k)}={escape(v)}`" for k, v in sorted(msg.labels.items()))
        blocks.append({"type": "context", "elements": [_mrkdwn(labels)]})
    return blocks


def incident_text(msg: IncidentMessage) -> str:
    """The notification fallback, unescaped (the console shows it; `escape` before posting)."""
    return (
        f"{msg.severity} INCIDENT: {msg.title} — {msg.summary}\n"
        f"Incident Commander: {msg.incident_commander}\nStatus: {msg.status}"
        + (f"\nCluster: {msg.cluster}" if msg.cluster else "")
    )


def on_cluster(cluster: str | None, text: str, blocks: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Every message names its cluster: `[east] ` before the (escaped) notification text, a context line under the blocks."""
    if not cluster:
        return text, blocks
    context = {"type": "context", "elements": [_mrkdwn(f"cluster `{escape(cluster)}`")]}
    return f"[{escape(cluster)}] {text}", [*blocks[:49], context]


def thread_content(
    text: str, blocks: list[dict[str, Any]] | None, links: list[MessageLink]
) -> tuple[str, list[dict[str, Any]]]:
    """(escaped text, blocks) for a message: its blocks with their mrkdwn escaped, or sections of the
    text; our links on a last line."""
    shown = escape(text)
    built = escape_blocks(blocks) if blocks else text_blocks(shown)
    if links:
        line = " · ".join(link(x.url, x.label) for x in links)
        shown += "\n" + line
        built = [*built[:49], {"type": "section", "text": _mrkdwn(line)}]
    return shown, built


def approval_blocks(req: ApprovalRequest) -> list[dict[str, Any]]:
    """The question, who may answer, and Approve (primary) / Reject (danger) buttons."""
    value = json.dumps({"incident": req.incident_id, "gate": req.gate}, separators=(",", ":"))
    question = escape(req.question)
    approve: dict[str, Any] = {
        "type": "button",
        "action_id": "approve",
        "style": "primary",
        "text": _plain("Approve", 75),
        "value": value,
    }
    if req.destructive:
        approve["confirm"] = {
            "title": _plain("Approve a destructive action?", 100),
            "text": _mrkdwn(question),
            "confirm": _plain("Approve", 30),
            "deny": _plain("Cancel", 30),
            "style": "danger",
        }
    reject = {"type": "button", "action_id": "reject", "style": "danger", "text": _plain("Reject", 75), "value": value}
    context = [f"gate `{escape(req.gate)}`", *([f"cluster `{escape(req.cluster)}`"] if req.cluster else [])]
    if req.approvers:
        context.append("approvers: " + escape(", ".join(req.approvers)))
    if req.deadline:
        context.append(f"not approved if no answer by {req.deadline:%H:%M:%S %Z}")
    return [
        {"type": "section", "text": _mrkdwn(f":raised_hand: *Approval needed:* {question}")},
        {"type": "context", "elements": [_mrkdwn(" · ".join(context))]},
        {"type": "actions", "block_id": f"approval:{req.gate}"[:255], "elements": [approve, reject]},
    ]


def _retry_after(headers: Any) -> float:
    """Seconds from a Retry-After header (Slack sends whole seconds)."""
    for name, value in dict(headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value[0] if isinstance(value, list) else value))
            except (TypeError, ValueError):
                break
    return _DEFAULT_RETRY_AFTER


def _console_text(cluster: str | None, text: str, links: list[MessageLink]) -> str:
    """A message as the console shows it: as given, no mrkdwn escaping; links as `label: url`."""
    shown = (f"[{cluster}] " if cluster else "") + text
    return shown + "".join(f"\n{x.label}: {x.url}" for x in links)


def _console_ts(key: str) -> str:
    return "console-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _print(line: str) -> None:
    print(line, flush=True)


class SlackActivities:
    """Slack Web API through slack-sdk; `client=None` means console mode (no token configured)."""

    def __init__(
        self,
        client: AsyncWebClient | None,
        *,
        default_channel: str,
        console: Callable[[str], None] = _print,
        cluster: str | None = None,
    ) -> None:
        self._client = client
        self._default_channel = default_channel
        self._console = console
        self._cluster = cluster  # the worker's: named in messages that name no cluster of their own
        self._channels = ChannelDirectory(client) if client is not None else None

    @activity.defn
    async def post_incident(self, msg: IncidentMessage) -> SlackMessageRef:
        """The incident's first message: everything later is threaded under it."""
        if msg.cluster is None and self._cluster:
            msg = msg.model_copy(update={"cluster": self._cluster})
        raw = incident_text(msg)
        return await self._post(msg.key, msg.channel, None, escape(raw), incident_blocks(msg), msg.incident_id, raw)

    @activity.defn
    async def post_in_thread(self, msg: ThreadMessage) -> SlackMessageRef:
        cluster = msg.cluster or self._cluster
        text, blocks = on_cluster(cluster, *thread_content(msg.text, msg.blocks, msg.links))
        raw = _console_text(cluster, msg.text, msg.links)
        return await self._post(msg.key, msg.channel, msg.thread_ts, text, blocks, msg.incident_id, raw)

    @activity.defn
    async def request_approval(self, req: ApprovalRequest) -> SlackMessageRef:
        if req.cluster is None and self._cluster:
            req = req.model_copy(update={"cluster": self._cluster})
        raw = f"[{req.cluster}] " if req.cluster else ""
        raw += f"Approval needed ({req.gate}): {req.question}"
        if self._client is None:
            who = req.approvers[0] if req.approvers else "USER"
            raw += f"\n  decide with: runbooks approve {req.incident_id} {req.gate} --as {who}  (or reject)"
        return await self._post(
            req.key, req.channel, req.thread_ts, escape(raw), approval_blocks(req), req.incident_id, raw
        )

    @activity.defn
    async def update_message(self, upd: MessageUpdate) -> SlackMessageRef:
        """Rewrite a message in place (an answered approval loses its buttons). Editing twice is harmless."""
        cluster = upd.cluster or self._cluster
        if self._client is None:
            self._say(upd.channel, f"(edit {upd.ts}) {_console_text(cluster, upd.text, [])}", upd.incident_id)
            return SlackMessageRef(channel=upd.channel, ts=upd.ts, console=True)
        text, blocks = on_cluster(cluster, *thread_content(upd.text, upd.blocks, []))
        channel = await self._channel_id(upd.channel)
        resp = await self._call(self._client.chat_update, channel=channel, ts=upd.ts, text=text, blocks=blocks)
        return SlackMessageRef(channel=resp["channel"], ts=resp["ts"])

    async def _post(
        self,
        key: str,
        channel: str | None,
        thread_ts: str | None,
        text: str,
        blocks: list[dict[str, Any]],
        incident_id: str | None,
        console_text: str,
    ) -> SlackMessageRef:
        """Post `text` (escaped mrkdwn) and `blocks`; in console mode print `console_text` (as given)."""
        channel = channel or self._default_channel
        if self._client is None:
            shown = console_text if thread_ts is None else f"(thread {thread_ts}) {console_text}"
            self._say(channel, shown, incident_id)
            return SlackMessageRef(channel=channel, ts=_console_ts(key), console=True)
        channel = await self._channel_id(channel)
        # Only a retry can find its own earlier post; the first attempt skips the lookup.
        if activity.info().attempt > 1:
            found = await self._find(key, channel, thread_ts)
            if found:
                activity.logger.info("Slack message %s already posted as %s; not posting again", key, found.ts)
                return found
        resp = await self._call(
            self._client.chat_postMessage,
            channel=channel,
            thread_ts=thread_ts,
            text=text,
            blocks=blocks,
            metadata={"event_type": METADATA_EVENT, "event_payload": {"key": key}},
        )
        return SlackMessageRef(channel=resp["channel"], ts=resp["ts"])

    async def _channel_id(self, channel: str) -> str:
        assert self._channels is not None
        return await self._channels.channel_id(channel, self._call)

    async def _find(self, key: str, channel: str, thread_ts: str | None) -> SlackMessageRef | None:
        assert self._client is not None
        if thread_ts:
            resp = await self._call(
                self._client.conversations_replies, channel=channel, ts=thread_ts, include_all_metadata=True, limit=1000
            )
        else:
            resp = await self._call(
                self._client.conversations_history, channel=channel, include_all_metadata=True, limit=200
            )
        for message in resp.get("messages", []):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("key") == key:
                return SlackMessageRef(channel=resp.get("channel", channel), ts=message["ts"])
        return None

    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await method(**kwargs)
        except SlackApiError as err:
            error = err.response.get("error", "") if isinstance(err.response.data, dict) else ""
            if error in _PERMANENT:
                channel = kwargs.get("channel")
                where = self._channels.describe(channel) if self._channels and channel else channel
                raise ApplicationError(
                    f"Slack refused {method.__name__}: {error}. Check the bot token, its scopes"
                    + (f" and that the bot is in channel {where}." if where else "."),
                    type="SlackPermanentError",
                    non_retryable=True,
                ) from err
            if err.response.status_code == 429 or error == "ratelimited":
                # Slack says when to come back: Temporal waits that long (durably, no worker slot held)
                # and the Slack activities' schedule-to-close bound (workflows/incident/slack.py) ends it.
                wait = _retry_after(err.response.headers)
                raise ApplicationError(
                    f"Slack rate-limited {method.__name__} (Retry-After {wait:g} s); will retry then",
                    type="SlackRateLimited",
                    next_retry_delay=timedelta(seconds=wait),
                ) from err
            raise self._transient(f"Slack {method.__name__} failed ({error or err.response.status_code})") from err
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise self._transient(f"Slack {method.__name__} unreachable ({type(err).__name__}: {err})") from err

    @staticmethod
    def _transient(what: str) -> ApplicationError:
        # A rate limit may last minutes and is waited out; any other failure gets a few quick attempts,
        # counted here because the retry policy itself has no attempt cap (a limit would eat it).
        last = activity.info().attempt >= TRANSIENT_ATTEMPTS
        return ApplicationError(
            f"{what}; " + (f"giving up after {TRANSIENT_ATTEMPTS} attempts" if last else "will retry"),
            type="SlackTransientError",
            non_retryable=last,
        )

    def _say(self, channel: str, text: str, incident_id: str | None = None) -> None:
        # One sink: the console callable (stdout by default). Logging it as well printed every message
        # twice wherever the worker logs to the same terminal (`python -m worker.worker`).
        self._console(f"{CONSOLE_MARK} {incident_id + ' ' if incident_id else ''}{channel}: {text}")
