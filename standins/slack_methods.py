"""The Web API methods of the Slack stand-in (standins/slack.py), over its store: Slack's answers,
its errors, and which methods take a channel's name besides its id."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from standins.slack_workspace import Channel, find_channel, list_conversations


@dataclass
class SlackCall:
    method: str
    token: str | None
    body: dict[str, Any]


@dataclass
class Failure:
    error: str
    status: int
    after_recording: bool  # the post lands, but the caller sees a failure (a lost response)


@dataclass
class RateLimit:
    seconds: int
    times: int


@dataclass
class Store:
    channels: dict[str, Channel] = field(default_factory=dict)  # id -> channel, in creation order
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # channel id -> oldest first
    responses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    outage: Failure | None = None  # fail_every(): every call fails
    last_ts: float = 0.0


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


def _next_ts(store: Store) -> str:
    ts = max(time.time(), store.last_ts + 0.000001)
    store.last_ts = ts
    return f"{ts:.6f}"


def _view(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
    view = {k: v for k, v in message.items() if k != "metadata"}
    if with_metadata and "metadata" in message:
        view["metadata"] = message["metadata"]
    return view


def _find(store: Store, channel: str, ts: str) -> dict[str, Any] | None:
    return next((m for m in store.messages.get(channel, []) if m["ts"] == ts), None)


def _channel(store: Store, body: dict[str, Any], *, names: bool, write: bool = False) -> Channel | str:
    """The channel of the call, or Slack's error for it."""
    found = find_channel(store.channels, str(body.get("channel") or ""), names=names)
    if found is None:
        return "channel_not_found"
    if write and found.is_archived:
        return "is_archived"
    if not found.is_member:
        return "not_in_channel"
    return found


def _post_message(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    found = _channel(store, body, names=True, write=True)
    if isinstance(found, str):
        return {"ok": False, "error": found}
    if not body.get("text") and not body.get("blocks"):
        return {"ok": False, "error": "no_text"}
    channel = found.id
    thread_ts = body.get("thread_ts")
    if thread_ts and _find(store, channel, thread_ts) is None:
        return {"ok": False, "error": "thread_not_found"}
    message: dict[str, Any] = {
        "type": "message",
        "user": "U0RUNBOOKS",
        "bot_id": "B0RUNBOOKS",
        "text": body.get("text", ""),
        "ts": _next_ts(store),
    }
    if body.get("blocks"):
        message["blocks"] = body["blocks"]
    if thread_ts:
        message["thread_ts"] = thread_ts
    if body.get("metadata"):
        message["metadata"] = body["metadata"]
    store.messages.setdefault(channel, []).append(message)
    return {"ok": True, "channel": channel, "ts": message["ts"], "message": _view(message, False)}


def _update(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    found = _channel(store, body, names=False, write=True)
    if isinstance(found, str):
        return {"ok": False, "error": found}
    channel = found.id
    message = _find(store, channel, body.get("ts", ""))
    if message is None:
        return {"ok": False, "error": "message_not_found"}
    message["text"] = body.get("text", message["text"])
    if "blocks" in body:
        message["blocks"] = body["blocks"]
    message["edited"] = {"user": "U0RUNBOOKS", "ts": _next_ts(store)}
    return {
        "ok": True,
        "channel": channel,
        "ts": message["ts"],
        "text": message["text"],
        "message": _view(message, False),
    }


def _ephemeral(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    found = _channel(store, body, names=True)
    if isinstance(found, str):
        return {"ok": False, "error": found}
    if not body.get("user"):
        return {"ok": False, "error": "user_not_in_channel"}
    return {"ok": True, "message_ts": _next_ts(store)}


def _history(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    found = _channel(store, body, names=False)
    if isinstance(found, str):
        return {"ok": False, "error": found}
    channel = found.id
    limit = int(body.get("limit") or 100)
    top = [m for m in store.messages.get(channel, []) if "thread_ts" not in m][::-1][:limit]  # newest first
    meta = _truthy(body.get("include_all_metadata"))
    return {"ok": True, "channel": channel, "messages": [_view(m, meta) for m in top], "has_more": False}


def _replies(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    found = _channel(store, body, names=False)
    if isinstance(found, str):
        return {"ok": False, "error": found}
    channel = found.id
    parent = _find(store, channel, body.get("ts", ""))
    if parent is None:
        return {"ok": False, "error": "thread_not_found"}
    limit = int(body.get("limit") or 1000)
    thread = [parent] + [m for m in store.messages[channel] if m.get("thread_ts") == parent["ts"]]
    meta = _truthy(body.get("include_all_metadata"))
    return {"ok": True, "channel": channel, "messages": [_view(m, meta) for m in thread[:limit]], "has_more": False}


def _list(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    return list_conversations(store.channels, body)


def _auth_test(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": True,
        "url": "https://runbooks-test.slack.com/",
        "team": "Runbooks Test",
        "user": "runbooks",
        "team_id": "T0RUNBOOKS",
        "user_id": "U0RUNBOOKS",
        "bot_id": "B0RUNBOOKS",
    }


HANDLERS = {
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _ephemeral,
    "conversations.history": _history,
    "conversations.replies": _replies,
    "conversations.list": _list,
    "auth.test": _auth_test,
}
