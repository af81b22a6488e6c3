"""A local stand-in for Slack's Web API, for tests: the only fake of Slack's servers we use.

Speaks the methods the project calls, with Slack's response shapes, so the real slack-sdk
client talks to it through `base_url`:
chat.postMessage, chat.update, chat.postEphemeral, conversations.history,
conversations.replies, conversations.list, auth.test; plus `response_url` POSTs at /response/{id}.
`apps.connections.open` (app-level token) answers with the URL of a Socket Mode stand-in when
one is plugged in (`socket_mode`, see standins/slack_socket.py).

As strict as Slack where the project could get it wrong:
- The workspace has the channels it was given (`channels=`, `add_channel`); any other is
  `channel_not_found`. chat.postMessage and chat.postEphemeral take a channel's id or its name
  (`#x`, `x`); chat.update, conversations.history and conversations.replies take only its id
  (Slack answers `channel_not_found` to a name there). Archived: `is_archived`; the bot not
  invited: `not_in_channel`.
- `rate_limit(method, seconds, times)`: the next calls answer HTTP 429 `ratelimited` with
  `Retry-After: seconds`, as Slack does.
- Messages are kept as posted (text and blocks, mrkdwn unrendered); `rendered(...)` shows them
  as a reader would (standins/slack_workspace.py), so tests see what escaping did.

It records every call (method, token, body) and keeps the messages per channel id.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from standins.slack_methods import HANDLERS, SlackCall, Failure, RateLimit, Store
from standins.slack_workspace import Channel, Rendered, channel_id, find_channel, mrkdwn_texts, render_mrkdwn

__all__ = ["DEFAULT_CHANNELS", "Rendered", "SlackCall", "SlackStandIn", "channel_id", "render_mrkdwn"]

TOKEN_PREFIXES = ("xoxb-", "xoxp-")
# The seeds' channels (seed 000 #incident-response, seed 001's per severity) and #incidents.
DEFAULT_CHANNELS = (
    "incidents",
    "incident-response",
    "incidents-critical",
    "incidents-high",
    "incidents-medium",
    "incidents-low",
    "llm-platform",
)


class SlackStandIn:
    """Start with `start()`, stop with `stop()`; `base_url` goes to AsyncWebClient."""

    def __init__(self, channels: tuple[str, ...] | list[str] = DEFAULT_CHANNELS) -> None:
        self._lock = threading.Lock()
        self._workspace = tuple(c.removeprefix("#") for c in channels)  # what reset() comes back to
        self._store = self._fresh()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        # apps.connections.open: app-level token -> Slack's answer (the Socket Mode stand-in's URL).
        self.socket_mode: Callable[[str], dict[str, Any]] | None = None
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/response/{rid}", self._response_url, methods=["POST"]),
            ]
        )

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/api/"

    def start(self) -> SlackStandIn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="slack-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("Slack stand-in did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    # -- what tests look at ---------------------------------------------------------------------

    def _fresh(self) -> Store:
        store = Store()
        for name in self._workspace:
            store.channels[channel_id(name)] = Channel(id=channel_id(name), name=name)
        return store

    def reset(self) -> None:
        """No messages, calls or failures; the workspace's own channels only."""
        with self._lock:
            self._store = self._fresh()

    def add_channel(
        self, name: str, *, private: bool = False, archived: bool = False, member: bool = True, id: str | None = None
    ) -> str:
        """A channel in the workspace (until reset()); its id."""
        name = name.removeprefix("#")
        cid = id or channel_id(name)
        with self._lock:
            self._store.channels[cid] = Channel(
                id=cid, name=name, is_private=private, is_archived=archived, is_member=member
            )
        return cid

    def rate_limit(self, method: str, seconds: int, times: int = 1) -> None:
        """The next `times` calls of `method` answer 429 `ratelimited` with `Retry-After: seconds`."""
        with self._lock:
            self._store.rate_limits[method] = RateLimit(seconds, times)

    def rendered(self, channel: str, ts: str | None = None) -> list[Rendered]:
        """How a reader sees the channel's messages (or the one at `ts`): text first, then each mrkdwn block text."""
        messages = [m for m in self.messages(channel) if ts is None or m["ts"] == ts]
        return [render_mrkdwn(t) for m in messages for t in mrkdwn_texts(m)]

    def calls(self, method: str | None = None) -> list[SlackCall]:
        with self._lock:
            return [c for c in self._store.calls if method is None or c.method == method]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every message in the channel (thread replies included), oldest first."""
        with self._lock:
            found = find_channel(self._store.channels, channel, names=True)
            cid = found.id if found else channel_id(channel)
            return [dict(m) for m in self._store.messages.get(cid, [])]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages(channel) if m["ts"] == ts or m.get("thread_ts") == ts]

    def responses(self, rid: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._store.responses.get(rid, []))

    def response_url(self, rid: str) -> str:
        return f"{self.url}/response/{rid}"

    def fail_next(
        self, method: str, *, error: str = "internal_error", status: int = 500, after_recording: bool = False
    ) -> None:
        """Make the next call of `method` fail; `after_recording` lets the write land first (a lost reply)."""
        with self._lock:
            self._store.failures.setdefault(method, []).append(Failure(error, status, after_recording))

    def fail_every(self, status: int = 500, error: str = "internal_error") -> None:
        """An outage: every call answers `status` until reset()."""
        with self._lock:
            self._store.outage = Failure(error, status, False)

    # -- the API --------------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        body = await _body(request)
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() or body.pop("token", None)
        with self._lock:
            self._store.calls.append(SlackCall(method, token, dict(body)))
            failures = self._store.failures.get(method) or []
            failure = failures.pop(0) if failures else self._store.outage
            limited = self._store.rate_limits.get(method)
            if limited and limited.times > 0:
                limited.times -= 1
            else:
                limited = None
        if not token:
            return _json({"ok": False, "error": "not_authed"})
        if method == "apps.connections.open":  # the one method that takes an app-level token
            if not token.startswith("xapp-"):
                return _json({"ok": False, "error": "not_allowed_token_type"})
            return _json(self.socket_mode(token) if self.socket_mode else {"ok": False, "error": "invalid_auth"})
        if not token.startswith(TOKEN_PREFIXES):
            return _json({"ok": False, "error": "invalid_auth"})
        if limited:
            return JSONResponse(
                {"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": str(limited.seconds)}
            )
        if failure and not failure.after_recording:
            return _json({"ok": False, "error": failure.error}, failure.status)
        handler = HANDLERS.get(method)
        if handler is None:
            return _json({"ok": False, "error": "unknown_method"})
        with self._lock:
            result = handler(self._store, body)
        if failure:
            return _json({"ok": False, "error": failure.error}, failure.status)
        return _json(result)

    async def _response_url(self, request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        with self._lock:
            self._store.responses.setdefault(request.path_params["rid"], []).append(body)
        return _json({"ok": True})


async def _body(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    if not raw:
        return params
    if request.headers.get("content-type", "").startswith("application/json"):
        params.update(json.loads(raw))
    else:
        params.update(parse_qsl(raw.decode()))
    for key in ("blocks", "metadata", "attachments"):  # form posts carry these as JSON strings
        if isinstance(params.get(key), str):
            params[key] = json.loads(params[key])
    return params


def _json(data: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
