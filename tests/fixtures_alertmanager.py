"""Triggers test kit: Alertmanager-shaped payloads, Slack-signed requests, the app in-process or on uvicorn."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest_asyncio
import uvicorn
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from triggers.app import create_app
from triggers.config import Settings

WEBHOOK_TOKEN = "am-bearer-token-for-tests"
SIGNING_SECRET = "slack-signing-secret-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fingerprint() -> str:
    return uuid.uuid4().hex[:16]


def am_alert(
    alertname: str = "LLMDServiceDown",
    *,
    status: str = "firing",
    fp: str | None = None,
    starts_at: datetime | None = None,
    ends_at: str = "0001-01-01T00:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 sends it: nanosecond timestamps, Go zero endsAt while firing."""
    starts = (starts_at or datetime.now(timezone.utc) - timedelta(minutes=2)).astimezone(timezone.utc)
    return {
        "status": status,
        "labels": {"alertname": alertname, "service": "llm-d", "namespace": "llm-d", **labels},
        "annotations": {"summary": f"{alertname} in tests", "runbook_url": "https://runbooks.example/x"},
        "startsAt": starts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        "fingerprint": fp or fingerprint(),
    }


def am_payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "runbooks",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
    }


def triggers_settings(task_queue: str, **sections: Any) -> Settings:
    base: dict[str, Any] = {
        "temporal": {"task_queue": task_queue, "ui_url": "http://temporal-ui.example", "rpc_timeout_seconds": 3},
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
    """The app served by uvicorn on a free port, in this event loop (what Alertmanager talks to)."""

    def __init__(self, settings: Settings, client_factory) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, client_factory)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task | None = None

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
