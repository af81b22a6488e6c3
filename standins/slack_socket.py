"""A local stand-in for Slack's Socket Mode servers, beside the Web API stand-in.

How Slack does it, and so how this does it: the app calls `apps.connections.open` with its
app-level token (the Web API stand-in forwards that call to `open_connection` here), gets a
one-time `wss://…/link/?ticket=…` URL, opens a websocket on it and receives `hello` (with
`connection_info.app_id`). Slack then pushes envelopes `{"type", "envelope_id", "payload",
"accepts_response_payload"}`; the app acknowledges each with `{"envelope_id": …}`.

Served by aiohttp (already the transport of slack-sdk's async clients) in the test's event
loop; plain `ws://` on 127.0.0.1. A connection without a valid, unused ticket is refused.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

from aiohttp import WSMsgType, web

APP_TOKEN = "xapp-1-A0RUNBOOKS-test"
APP_ID = "A0RUNBOOKS"


class SocketModeStandIn:
    """`await start()`, plug `open_connection` into SlackStandIn.socket_mode, `await stop()`."""

    def __init__(self, *, app_token: str = APP_TOKEN, app_id: str = APP_ID) -> None:
        self.app_token = app_token
        self.app_id = app_id
        self.port = 0
        self.refused_connections = 0
        self.received: list[dict[str, Any]] = []  # what the app sent back (acknowledgements), in order
        self._tickets: set[str] = set()
        self._tickets_lock = threading.Lock()  # open_connection runs on the Web API stand-in's thread
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> SocketModeStandIn:
        app = web.Application()
        app.router.add_get("/link/", self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    # -- apps.connections.open (called by the Web API stand-in) --------------------------------

    def open_connection(self, token: str) -> dict[str, Any]:
        if token != self.app_token:
            return {"ok": False, "error": "invalid_auth"}
        ticket = uuid.uuid4().hex
        with self._tickets_lock:
            self._tickets.add(ticket)
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"}

    # -- the websocket -------------------------------------------------------------------------

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._tickets_lock:
            valid = ticket in self._tickets
            self._tickets.discard(ticket)
        if not valid:
            self.refused_connections += 1
            return web.Response(status=401, text="invalid or used ticket")
        ws = web.WebSocketResponse(autoping=True)  # answers the client's pings with its own data
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "socket-standin", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        async with self._changed:
            self._changed.notify_all()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    async with self._changed:
                        self.received.append(json.loads(msg.data))
                        self._changed.notify_all()
        finally:
            self._sockets.remove(ws)
        return ws

    # -- what tests do -------------------------------------------------------------------------

    async def wait_connected(self, timeout: float = 15.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._sockets)), timeout)

    async def push(self, payload: Any, *, type: str = "interactive", envelope_id: str | None = None) -> str:
        """Send an envelope on the newest connection; returns its envelope_id."""
        envelope_id = envelope_id or uuid.uuid4().hex
        await self.push_raw(
            {"type": type, "envelope_id": envelope_id, "payload": payload, "accepts_response_payload": False}
        )
        return envelope_id

    async def push_raw(self, message: dict[str, Any]) -> None:
        if not self._sockets:
            raise AssertionError("no Socket Mode connection to push on")
        await self._sockets[-1].send_str(json.dumps(message))

    def acknowledged(self, envelope_id: str) -> bool:
        return any(m.get("envelope_id") == envelope_id for m in self.received)

    async def wait_ack(self, envelope_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The app's acknowledgement of the envelope; Slack redelivers after 3 s without one."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.acknowledged(envelope_id)), timeout)
        return next(m for m in self.received if m.get("envelope_id") == envelope_id)
