"""Slack approval clicks over Socket Mode: for clusters with no public HTTPS ingress.

With `slack.app_token` (an app-level token, `xapp-…`, scope `connections:write`) set, the
triggers process opens a websocket to Slack with slack-sdk's Socket Mode client (aiohttp, like
the AsyncWebClient) and Slack pushes each button click on it as an envelope
`{"type": "interactive", "envelope_id": …, "payload": <block_actions>}`. The HTTP endpoint stays
available; a Slack app uses one or the other (`socket_mode_enabled` in its manifest).

Who sent it: Socket Mode requests carry no signature. The socket itself is the authentication:
only Slack, holding our app token's ticket (from `apps.connections.open`), can push on it. On
top of that, as the signing check does for HTTP, a payload is believed only when it names our
app (`api_app_id` equal to the `connection_info.app_id` of the socket's `hello`) and, when a
bot token is configured, our workspace (`team.id` as `auth.test` reports it). Anything else
is acknowledged (so Slack does not redeliver it), counted as forged and changes nothing.

What a click may do is decided exactly as for HTTP: `click_from_payload`, then
`ApprovalDesk.decide`, whose `decide` Update the incident validates (gate, approver); a
refused user gets the same ephemeral reply through the payload's `response_url`.

Every envelope is acknowledged (`{"envelope_id": …}`) before anything else: Slack wants the
acknowledgement within 3 s and redelivers an unacknowledged envelope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from triggers.metrics import TriggerMetrics
from triggers.slack_interactions import ApprovalDesk, Refused, click_from_payload

log = logging.getLogger(__name__)


class SocketModeReceiver:
    """Receives approval clicks over Socket Mode while the triggers app runs.

    `start()` returns at once and connects in the background (Slack may be unreachable at
    start; slack-sdk keeps retrying and reconnects on `disconnect` envelopes and stale pings);
    `stop()` closes the socket. `connected` says whether Slack's `hello` has arrived.
    """

    def __init__(
        self,
        app_token: str,
        desk: ApprovalDesk,
        metrics: TriggerMetrics,
        *,
        base_url: str,
        bot: AsyncWebClient | None,
        ping_interval_s: float = 10.0,
    ) -> None:
        self._app_token = app_token
        self._desk = desk
        self._metrics = metrics
        self._base_url = base_url
        self._bot = bot
        self._ping_interval = ping_interval_s
        self._client: SocketModeClient | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._app_id: str | None = None
        self._team: str | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        # The app token goes only to apps.connections.open (slack-sdk passes it per call).
        client = SocketModeClient(
            app_token=self._app_token,
            web_client=AsyncWebClient(base_url=self._base_url),
            ping_interval=self._ping_interval,
            logger=log,
        )
        client.message_listeners.append(self._on_message)
        client.socket_mode_request_listeners.append(self._on_request)
        self._client = client
        self._connecting = asyncio.create_task(client.connect(), name="slack-socket-mode-connect")
        log.info("Slack Socket Mode: connecting through %sapps.connections.open", self._base_url)

    async def stop(self) -> None:
        if self._connecting and not self._connecting.done():
            self._connecting.cancel()
        if self._client:
            await self._client.close()

    async def _on_message(self, _client: AsyncBaseSocketModeClient, message: dict[str, Any], _raw: str | None) -> None:
        if message.get("type") == "hello":
            self._app_id = (message.get("connection_info") or {}).get("app_id")
            log.info(
                "Slack Socket Mode connected (app %s, %s connections)", self._app_id, message.get("num_connections")
            )
            self.connected.set()

    async def _on_request(self, client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "interactive":
            return  # events or slash commands: the manifest subscribes to none
        await self.handle(request.payload, envelope_id=request.envelope_id)

    async def handle(self, payload: dict[str, Any], *, envelope_id: str = "") -> None:
        """One acknowledged interactive payload: believed only if it is for our app and workspace."""
        try:
            await self._check_origin(payload)
        except Refused as refused:
            self._metrics.approvals.labels("forged").inc()
            log.warning("Socket Mode envelope %s refused, nothing changed: %s", envelope_id, refused.reason)
            return
        try:
            click = click_from_payload(payload)
        except Refused as refused:
            self._metrics.approvals.labels("malformed").inc()
            log.warning("Socket Mode envelope %s refused, nothing changed: %s", envelope_id, refused.reason)
            return
        if click is not None:
            await self._desk.decide(click)

    async def _check_origin(self, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise Refused(400, "payload is not an object")
        if self._app_id is None:
            raise Refused(401, "no hello from Slack on this socket yet: the app id is unknown")
        if payload.get("api_app_id") != self._app_id:
            raise Refused(401, f"payload is for app {payload.get('api_app_id')!r}, this socket is app {self._app_id!r}")
        team = await self._our_team()
        given = payload["team"].get("id") if isinstance(payload.get("team"), dict) else None
        if team is not None and given != team:
            raise Refused(401, f"payload is from workspace {given!r}, the bot token is for {team!r}")

    async def _our_team(self) -> str | None:
        """The bot token's workspace (auth.test, asked once); None without a bot token or an answer."""
        if self._bot is not None and self._team is None:
            try:
                self._team = (await self._bot.auth_test()).get("team_id")
            except (SlackClientError, aiohttp.ClientError, asyncio.TimeoutError) as err:
                # The app-id check still holds; ask again at the next click.
                log.warning("auth.test failed (%s): workspace of this Socket Mode click not checked", err)
        return self._team
