"""Triggers test kit: Alertmanager-shaped payloads, Slack-signed requests, the app in-process or on uvicorn."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
import uvicorn
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from triggers.app import create_app
from settings import Settings

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
        # The task queue is random per test; as the id prefix it keeps each test's incidents apart.
        "temporal": {"task_queue": task_queue, "ui_url": "http://temporal-ui.example", "rpc_timeout_seconds": 3,
                     "incident_id_prefix": f"{task_queue}."},
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
        config = uvicorn.Config(self._recorded, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                interface="asgi3")
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


ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    """A real Alertmanager (Debian 0.25), clustering off, sending every group to our webhook."""

    def __init__(self, workdir: Path, webhook_url: str, *, token: str = WEBHOOK_TOKEN) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = workdir / f"am-{self.port}"
        self._dir.mkdir(parents=True)
        # Short intervals so repeats come within a test; every alert its own group.
        config = {
            "route": {
                "receiver": "runbooks", "group_by": ["alertname", "fingerprint_label"],
                "group_wait": "500ms", "group_interval": "1s", "repeat_interval": "2s",
            },
            "receivers": [{
                "name": "runbooks",
                "webhook_configs": [{
                    "url": webhook_url, "send_resolved": True,
                    "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                }],
            }],
        }
        (self._dir / "am.yml").write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen | None = None

    def start(self) -> Alertmanager:
        self._proc = subprocess.Popen(
            [ALERTMANAGER_BIN, f"--config.file={self._dir / 'am.yml'}", f"--storage.path={self._dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=(self._dir / "am.log").open("wb"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self._dir / 'am.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready in 20 s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    async def post(self, *alerts: dict[str, Any]) -> None:
        """POST /api/v2/alerts, as Prometheus would."""
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5)
            resp.raise_for_status()

    async def alerts(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"{self.url}/api/v2/alerts", timeout=5)
            resp.raise_for_status()
            return resp.json()


def prometheus_alert(alertname: str, starts_at: datetime, *, ends_at: datetime | None = None,
                     **labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager's API."""
    alert: dict[str, Any] = {
        "labels": {"alertname": alertname, "fingerprint_label": uuid.uuid4().hex[:8], **labels},
        "annotations": {"summary": f"{alertname} (e2e)"},
        "startsAt": starts_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "generatorURL": "http://prometheus.example/graph",
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return alert


@pytest.fixture
def alertmanagers(tmp_path: Path) -> Iterator[Callable[[str], Alertmanager]]:
    """Start real Alertmanagers pointed at a webhook URL; all stopped at the end."""
    if not Path(ALERTMANAGER_BIN).exists():
        pytest.fail(f"{ALERTMANAGER_BIN} missing: apt-get install prometheus-alertmanager")
    started: list[Alertmanager] = []

    def start(webhook_url: str) -> Alertmanager:
        am = Alertmanager(tmp_path, webhook_url).start()
        started.append(am)
        return am

    yield start
    for am in started:
        am.stop()
