"""A local stand-in for PagerDuty's Events API v2, as strict as PagerDuty, for tests.

The official `pagerduty` client (`EventsApiV2Client`) talks to it through its base URL: it refuses
any URL but https, so the stand-in serves HTTPS with a certificate from a throwaway CA
(standins/throwaway_ca.py); the client trusts that CA only (`ca_file`, `client_context()`).

`POST /v2/enqueue`, as PagerDuty's Events API v2 documents it:
- 202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`;
- 400 `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}` for a body
  that is not a JSON object, a routing key that is not 32 alphanumeric characters or names no
  integration of this stand-in, an `event_action` other than trigger/acknowledge/resolve, a
  `dedup_key` over 255 characters (or missing on acknowledge/resolve), and for a trigger: no
  payload, `payload.summary` missing or over 1,024 characters, `payload.source` missing,
  `payload.severity` not one of critical/error/warning/info, `custom_details` not an object, a link
  without `href`, an image without an https `src`;
- 413 for a body over 512 KB (PagerDuty's size limit);
- 429 and 5xx when a test asks (`fail_next`, `fail_every`): nothing is recorded; or a 502 after the
  event was applied (`lose_next_answers`), as when the answer is lost on the way back.

Alerts are kept per routing key and dedup key with PagerDuty's de-duplication: a trigger applies to
the open alert of its key (a repeat adds to its log) or opens a new one; acknowledge and resolve
apply to the open alert and are dropped (still 202) when there is none, or when sent with another
routing key than the trigger's. A resolved alert stays resolved: a new trigger opens a new alert.

Webhooks v3 (PagerDuty calling us) are standins/pagerduty_webhooks.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from standins.throwaway_ca import ServerCertificate, issue_server_certificate

MAX_BODY_BYTES = 512 * 1024
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")
_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")

AlertStatus = Literal["triggered", "acknowledged", "resolved"]


def routing_key(name: str) -> str:
    """A 32-character integration key derived from `name` (stable, alphanumeric, like PagerDuty's)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"pagerduty-standin:{name}").hex


@dataclass
class PagerDutyEvent:
    """One request the stand-in accepted (202)."""

    routing_key: str
    action: str
    dedup_key: str
    body: dict[str, Any]


@dataclass
class PagerDutyAlert:
    """One alert of an integration: its status and the accepted events that made it what it is."""

    routing_key: str
    dedup_key: str
    status: AlertStatus
    summary: str
    severity: str
    payload: dict[str, Any]
    links: list[dict[str, Any]]
    log: list[str] = field(default_factory=list)  # "trigger", "trigger", "acknowledge", "resolve"


@dataclass
class Refusal:
    """One request answered 4xx, with PagerDuty's errors."""

    status: int
    errors: list[str]
    body: bytes


@dataclass
class _Store:
    events: list[PagerDutyEvent] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    alerts: list[PagerDutyAlert] = field(default_factory=list)  # oldest first
    failures: list[int] = field(default_factory=list)  # statuses the next requests answer
    outage: int | None = None
    lost_answers: int = 0  # events applied whose answer is a 502 (a connection cut after PagerDuty took it)
    requests: int = 0


class PagerDutyStandIn:
    """Start with `start()`, stop with `stop()`. `integrations` names the services it has: each gets
    `routing_key(name)`; events for any other key are refused as PagerDuty refuses them."""

    def __init__(self, integrations: tuple[str, ...] = ("default",)) -> None:
        self._lock = threading.Lock()
        self._store = _Store()
        self.keys = {name: routing_key(name) for name in integrations}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.certificate: ServerCertificate | None = None
        self.port = 0
        self._answering = threading.Event()  # cleared by hold_answers(): events land, answers wait
        self._answering.set()
        self.app = Starlette(routes=[Route("/v2/enqueue", self._enqueue, methods=["POST"])])

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What the client's `base_url` is set to: it posts to `<base_url>/v2/enqueue`."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        assert self.certificate is not None, "start() first"
        return self.certificate.ca_file

    def start(self) -> PagerDutyStandIn:
        self._tmp = tempfile.TemporaryDirectory(prefix="pagerduty-standin-")
        self.certificate = issue_server_certificate(Path(self._tmp.name), "pagerduty-standin")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=str(self.certificate.cert_file),
            ssl_keyfile=str(self.certificate.key_file),
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="pagerduty-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("PagerDuty stand-in did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._tmp:
            self._tmp.cleanup()

    # -- what tests look at and arrange ---------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._store = _Store()
        self._answering.set()

    def events(self, action: str | None = None) -> list[PagerDutyEvent]:
        with self._lock:
            return [e for e in self._store.events if action is None or e.action == action]

    def refusals(self) -> list[Refusal]:
        with self._lock:
            return list(self._store.refusals)

    def alerts(self, dedup_key: str | None = None) -> list[PagerDutyAlert]:
        """Alerts (all integrations), oldest first; of one dedup key when given."""
        with self._lock:
            return [a for a in self._store.alerts if dedup_key is None or a.dedup_key == dedup_key]

    @property
    def requests(self) -> int:
        """Every request that reached /v2/enqueue, answered or failed."""
        with self._lock:
            return self._store.requests

    def fail_next(self, *statuses: int) -> None:
        """The next requests answer these statuses (429, 500, 503, ...), one each, recording nothing."""
        with self._lock:
            self._store.failures.extend(statuses)

    def lose_next_answers(self, count: int = 1) -> None:
        """The next `count` valid events are applied, but answered 502: to the sender it looks as if
        the page did not get through (a cut connection, a worker killed mid-page), so it sends again."""
        with self._lock:
            self._store.lost_answers += count

    def hold_answers(self) -> None:
        """From now on events are applied but their answers wait (up to 60 s) for release_answers():
        the sender is stuck mid-page, e.g. to kill it there."""
        self._answering.clear()

    def release_answers(self) -> None:
        self._answering.set()

    def fail_every(self, status: int | None) -> None:
        """Every request answers `status` until reset() or fail_every(None)."""
        with self._lock:
            self._store.outage = status

    # -- the API --------------------------------------------------------------------------------

    async def _enqueue(self, request: Request) -> Response:
        raw = await request.body()
        with self._lock:
            self._store.requests += 1
            failure = self._store.failures.pop(0) if self._store.failures else self._store.outage
        if failure is not None:
            return _failure(failure)
        if len(raw) > MAX_BODY_BYTES:
            return self._refuse(413, [f"Request body is larger than {MAX_BODY_BYTES // 1024} KB"], raw)
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return self._refuse(400, ["Event must be valid JSON"], raw)
        if not isinstance(event, dict):
            return self._refuse(400, ["Event must be a JSON object"], raw)
        errors = self._problems(event)
        if errors:
            return self._refuse(400, errors, raw)
        with self._lock:
            dedup_key = self._apply(event)
            lost = self._store.lost_answers > 0
            self._store.lost_answers -= int(lost)
        if lost:
            return _failure(502)
        if not self._answering.is_set():
            await asyncio.to_thread(self._answering.wait, 60)
        return JSONResponse(
            {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, status_code=202
        )

    def _refuse(self, status: int, errors: list[str], raw: bytes) -> Response:
        with self._lock:
            self._store.refusals.append(Refusal(status, errors, raw))
        body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        return JSONResponse(body, status_code=status)

    def _problems(self, event: dict[str, Any]) -> list[str]:
        errors: list[str] = []
        key = event.get("routing_key")
        if not isinstance(key, str) or not key:
            errors.append("'routing_key' is missing or blank")
        elif not _ROUTING_KEY.match(key):
            if len(key) != 32:
                errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
            if not key.isalnum():
                errors.append("'routing_key' cannot contain non-alphanumeric characters.")
        elif key not in self.keys.values():
            errors.append("Invalid routing key")
        action = event.get("event_action")
        if action not in ACTIONS:
            errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and not isinstance(dedup_key, str):
            errors.append("'dedup_key' must be a string")
        elif isinstance(dedup_key, str) and len(dedup_key) > MAX_DEDUP_KEY:
            errors.append(f"'dedup_key' is too long (maximum is {MAX_DEDUP_KEY} characters)")
        elif action in ("acknowledge", "resolve") and not dedup_key:
            errors.append(f"'dedup_key' is required for event_action {action}")
        if action == "trigger":
            errors.extend(_trigger_problems(event))
        return errors

    def _apply(self, event: dict[str, Any]) -> str:
        """PagerDuty's de-duplication (module docstring); the lock is held."""
        store = self._store
        key, action = event["routing_key"], event["event_action"]
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        store.events.append(PagerDutyEvent(key, action, dedup_key, event))
        open_alert = next(
            (
                a
                for a in reversed(store.alerts)
                if a.dedup_key == dedup_key and a.routing_key == key and a.status != "resolved"
            ),
            None,
        )
        if action == "trigger":
            payload = event["payload"]
            if open_alert is None:
                open_alert = PagerDutyAlert(
                    routing_key=key,
                    dedup_key=dedup_key,
                    status="triggered",
                    summary=payload["summary"],
                    severity=payload["severity"],
                    payload=payload,
                    links=list(event.get("links") or []),
                )
                store.alerts.append(open_alert)
            open_alert.log.append("trigger")
        elif open_alert is not None:  # acknowledge/resolve without an open alert: dropped
            open_alert.log.append(action)
            open_alert.status = "acknowledged" if action == "acknowledge" else "resolved"
        return dedup_key


def _trigger_problems(event: dict[str, Any]) -> list[str]:
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors: list[str] = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > MAX_SUMMARY:
        errors.append(f"'payload.summary' is too long (maximum is {MAX_SUMMARY} characters)")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
    for name in ("component", "group", "class", "timestamp"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    for link in event.get("links") or []:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str) or not link["href"]:
            errors.append("each of 'links' needs an 'href'")
    for image in event.get("images") or []:
        if not isinstance(image, dict) or not str(image.get("src", "")).startswith("https://"):
            errors.append("each of 'images' needs an https 'src'")
    return errors


def _failure(status: int) -> Response:
    if status == 429:
        return JSONResponse(
            {"status": "throttle event", "message": "Requests for this service are arriving too quickly"}, 429
        )
    return Response("Internal Server Error", status_code=status, media_type="text/plain")
