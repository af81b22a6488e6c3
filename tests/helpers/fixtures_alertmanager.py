"""Triggers test kit: settings, Slack-signed requests, the app in-process or on uvicorn, real Alertmanagers.

Alertmanager payloads and the Alertmanager process are standins/alertmanager.py (benchmarks use them too)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from triggers.app import create_app
from settings import Settings
from standins.alertmanager import ALERTMANAGER_BIN, Alertmanager, free_port

WEBHOOK_TOKEN = "am-bearer-token-for-tests"
SIGNING_SECRET = "slack-signing-secret-for-tests"


def triggers_settings(task_queue: str, **sections: Any) -> Settings:
    base: dict[str, Any] = {
        # The task queue is random per test; as the id prefix it keeps each test's incidents apart.
        "temporal": {
            "task_queue": task_queue,
            "ui_url": "http://temporal-ui.example",
            "rpc_timeout_seconds": 3,
            "incident_id_prefix": f"{task_queue}.",
        },
        # The one (default) cluster's incidents run on the test's own queue, where its worker polls.
        "clusters": {"served": {"default": {"task_queue": task_queue}}},
        "webhook": {"bearer_token": WEBHOOK_TOKEN},
        "slack": {"signing_secret": SIGNING_SECRET, "channels": {"default": "#incidents"}},
        "approvers": {"user_groups": {"sre-leads": ["ULEAD1"]}, "default": ["UONCALL1", "@sre-leads"]},
    }
    for name, value in sections.items():
        base[name] = base.get(name, {}) | value
    return Settings.model_validate(base)


def in_process(settings: Settings, client: Client | None, *, connect_error: str | None = None) -> httpx.AsyncClient:
    """The app on httpx's ASGI transport, with the given Temporal client (or a failing connect)."""

    async def factory() -> Client:
        if client is None:
            raise ConnectionError(connect_error or "connection refused")
        return client

    app = create_app(settings, factory)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://triggers")


AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


def slack_signed(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Headers exactly as Slack computes them: v0=HMAC-SHA256(secret, 'v0:{ts}:{body}')."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def block_actions_body(
    *, incident: str, gate: str, user: str, approve: bool, channel: str, message: dict[str, Any], response_url: str
) -> bytes:
    """A block_actions interaction for a click on one of the incident's approval buttons."""
    value = json.dumps({"incident": incident, "gate": gate})
    block_id = next((b.get("block_id") for b in message.get("blocks", []) if b.get("type") == "actions"), None)
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T1"},
        "api_app_id": "A1",
        "team": {"id": "T1", "domain": "sre"},
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
        "channel": {"id": channel, "name": "incidents"},
        "message": message,
        "response_url": response_url,
        "trigger_id": "1.2.3",
        "actions": [
            {
                "type": "button",
                "action_id": "approve" if approve else "reject",
                "block_id": block_id,
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def signal_names(handle: WorkflowHandle) -> list[str]:
    return [
        e.workflow_execution_signaled_event_attributes.signal_name
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


class RunningTriggers:
    """The app served by uvicorn on a free port, in this event loop (what Alertmanager talks to).

    `answers` records (path, query string, status) of every request, so a test can see what
    Alertmanager was told (e.g. the 503s while Temporal was down).
    """

    def __init__(self, settings: Settings, client_factory) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, client_factory)
        self.answers: list[tuple[str, str, int]] = []
        config = uvicorn.Config(
            self._recorded, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", interface="asgi3"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task | None = None

    async def _recorded(self, scope, receive, send) -> None:
        async def send_recorded(message) -> None:
            if message["type"] == "http.response.start":
                self.answers.append((scope["path"], scope["query_string"].decode(), message["status"]))
            await send(message)

        await self.app(scope, receive, send_recorded if scope["type"] == "http" else send)

    def statuses(self, path: str, query: str = "") -> list[int]:
        return [status for p, q, status in self.answers if p == path and (not query or q == query)]

    async def __aenter__(self) -> RunningTriggers:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task


@pytest_asyncio.fixture(loop_scope="session")
async def triggers_client(dev_client: Client, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    """The triggers app in-process against the dev server, starting incidents on a fresh task queue."""
    async with in_process(triggers_settings(task_queue), dev_client) as http:
        yield http


@pytest.fixture
def alertmanagers(tmp_path: Path) -> Iterator[Callable[[str], Alertmanager]]:
    """Start real Alertmanagers pointed at a webhook URL; all stopped at the end."""
    if not Path(ALERTMANAGER_BIN).exists():
        pytest.fail(f"{ALERTMANAGER_BIN} missing: apt-get install prometheus-alertmanager")
    started: list[Alertmanager] = []

    def start(webhook_url: str) -> Alertmanager:
        am = Alertmanager(tmp_path, webhook_url, token=WEBHOOK_TOKEN).start()
        started.append(am)
        return am

    yield start
    for am in started:
        am.stop()
