"""The triggers process: an ASGI app (Starlette on uvicorn) that SREs' tools talk to.

POST /alertmanager       Alertmanager (v4) or Grafana (v1) webhook, bearer or basic auth -> incidents
POST /slack/interactions Slack approval buttons -> the incident's `decide` Update
POST /pagerduty          PagerDuty v3 webhooks, signed -> acknowledge/resolve/note (triggers/pagerduty_webhooks.py)
(Socket Mode)            the same clicks over a websocket when slack.app_token is set (triggers/slack_socket.py)
GET  /healthz            the process is up
GET  /readyz             Temporal answers
GET  /metrics            Prometheus metrics of this process
GET  /openapi.json       the contract above, for clients and fuzzers
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from pydantic import ValidationError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.client import Client

from triggers.alertmanager import AlertIntake, TemporalUnavailable
from triggers.cluster_watch import ClusterWatch
from triggers.payload import SENDERS, parse_notification
from settings import ConfigError, Settings
from settings.temporal import TemporalConnectError, connect_arguments, connect_temporal
from triggers.metrics import TriggerMetrics
from triggers.pagerduty_webhooks import OPENAPI_PATH as PAGERDUTY_OPENAPI
from triggers.pagerduty_webhooks import PagerDutyDesk, pagerduty_endpoint
from triggers.slack_interactions import ApprovalDesk, Refused, ReplayGuard, parse_click, verify
from triggers.slack_socket import SocketModeReceiver

log = logging.getLogger(__name__)

ClientFactory = Callable[[], Awaitable[Client]]
# Slack's own cap on an interaction payload is far below this; anything bigger is not Slack.
SLACK_MAX_BODY = 256 * 1024


class TemporalConnection:
    """Connects on first use and after a failed attempt, so the app starts while Temporal is down."""

    def __init__(self, factory: ClientFactory, timeout: float) -> None:
        self._factory = factory
        self._timeout = timeout
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(self._factory(), self._timeout)
                except ConfigError as err:  # connect_temporal's one line already names Temporal and the reason
                    raise TemporalUnavailable(str(err)) from err
                except Exception as err:  # any failure to connect means "not now", never "bad alert"
                    raise TemporalUnavailable(f"cannot connect to Temporal: {err}") from err
        return self._client


def create_app(settings: Settings, temporal_client_factory: ClientFactory) -> Starlette:
    metrics = TriggerMetrics()
    rpc_timeout = settings.temporal.rpc_timeout_seconds
    temporal = TemporalConnection(temporal_client_factory, timeout=rpc_timeout)
    intake = AlertIntake(settings, temporal.get, metrics)
    http = httpx.AsyncClient()
    slack = (
        AsyncWebClient(token=settings.slack.bot_token.get_secret_value(), base_url=settings.slack.base_url)
        if settings.slack.bot_token
        else None
    )
    desk = ApprovalDesk(
        temporal.get,
        metrics,
        slack=slack,
        http=http,
        response_url_prefixes=settings.slack.response_url_prefixes,
        rpc_timeout=timedelta(seconds=rpc_timeout),
    )
    guard = ReplayGuard()
    # PagerDuty waits 5 s for its answer: the incident's acceptance must come well within it.
    pagerduty_desk = PagerDutyDesk(temporal.get, rpc_timeout=timedelta(seconds=min(rpc_timeout, 2.5)))
    pagerduty = pagerduty_endpoint(
        settings.pagerduty.webhook_secrets,
        pagerduty_desk,
        lambda outcome: metrics.pagerduty_webhooks.labels(outcome).inc(),
    )
    watch = ClusterWatch(settings, temporal.get, slack, metrics.registry)
    check_auth = _authenticator(settings)
    hook = settings.webhook
    budget = _BodyBudget(hook.max_inflight_bytes)

    def retry_later(reason: str, error: str) -> Response:
        """503 + Retry-After: Alertmanager and Grafana retry a 5xx; they drop a 4xx for good."""
        metrics.alerts_rejected.labels(reason).inc()
        log.warning("answering 503 so the sender retries (%s): %s", reason, error)
        return JSONResponse({"error": error}, status_code=503, headers={"Retry-After": str(hook.retry_after_seconds)})

    async def alertmanager(request: Request) -> Response:
        refusal = check_auth(request)
        if refusal:
            metrics.alerts_rejected.labels("unauthorized").inc()
            return refusal
        try:
            body = await _read_limited(request, hook.max_body_bytes, budget)
        except _Malformed as err:
            metrics.alerts_rejected.labels("invalid").inc()
            return JSONResponse({"error": str(err)}, 400)
        except _TooLarge as err:
            return retry_later(
                "too-large",
                f"{err}; raise webhook.max_body_bytes (or set max_alerts on the "
                "receiver) and the sender's retry will get through",
            )
        except _Shed as err:
            return retry_later("shed", str(err))
        try:
            try:
                payload = parse_notification(body)
            except ValidationError as err:
                metrics.alerts_rejected.labels("invalid").inc()
                return _invalid(err)
        finally:
            budget.release(len(body))
            del body  # the parsed payload is all that is kept
        if payload.truncated_alerts:
            log.warning(
                "%s truncated %d alerts of group %s (max_alerts)",
                SENDERS[payload.version],
                payload.truncated_alerts,
                payload.group_key,
            )
        try:
            outcomes = await intake.handle(payload)
        except TemporalUnavailable as err:
            return retry_later("temporal-unavailable", f"Temporal unavailable, retry later: {err}")
        return JSONResponse({"incidents": [o.__dict__ for o in outcomes]})

    async def slack_interactions(request: Request) -> Response:
        if settings.slack.signing_secret is None:
            return JSONResponse({"error": "Slack interactivity is not configured (slack.signing_secret)"}, 503)
        body = await _read_body(request, SLACK_MAX_BODY)
        if isinstance(body, Response):
            metrics.approvals.labels("too-large").inc()
            return body
        try:
            verify(settings.slack.signing_secret.get_secret_value(), body, dict(request.headers), guard, time.time())
            click = parse_click(body)
        except Refused as refused:
            # Nothing in an unverified body is believed, so its user can only be told here.
            metrics.approvals.labels("forged" if refused.status == 401 else "malformed").inc()
            return PlainTextResponse(refused.reason, status_code=refused.status)
        if click is None:
            return Response(status_code=200)  # a link button or another app's action: just acknowledge
        # Acknowledge now (Slack's 3-second limit); the Update runs after the response is sent.
        return Response(status_code=200, background=BackgroundTask(desk.decide, click))

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        try:
            client = await temporal.get()
            await client.service_client.check_health(timeout=timedelta(seconds=2))
        except Exception as err:  # not ready, whatever the reason; say which
            return PlainTextResponse(f"Temporal not reachable: {err}", status_code=503)
        return PlainTextResponse("ready")

    async def metrics_endpoint(_: Request) -> Response:
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    async def openapi(_: Request) -> Response:
        return JSONResponse(OPENAPI)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        socket = None
        if settings.slack.app_token:  # clicks over Socket Mode too (no public URL needed)
            socket = SocketModeReceiver(
                settings.slack.app_token.get_secret_value(), desk, metrics, base_url=settings.slack.base_url, bot=slack
            )
            await socket.start()
        app.state.socket_mode = socket
        watching = asyncio.create_task(watch.run(), name="cluster-watch") if settings.clusters.watch_seconds else None
        yield
        if watching:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        if socket:
            await socket.stop()
        await http.aclose()

    app = Starlette(
        routes=[
            Route("/alertmanager", alertmanager, methods=["POST"]),
            Route("/slack/interactions", slack_interactions, methods=["POST"]),
            Route("/pagerduty", pagerduty, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_Timed, metrics=metrics)
    app.state.metrics = metrics
    app.state.cluster_watch = watch
    return app


class _Timed:
    """Request latency by route and status, as an outer ASGI layer so every answer is measured."""

    _KNOWN = {"/alertmanager", "/slack/interactions", "/pagerduty", "/healthz", "/readyz", "/metrics", "/openapi.json"}

    def __init__(self, app: ASGIApp, metrics: TriggerMetrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_timed(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                path = scope["path"] if scope["path"] in self._KNOWN else "other"
                self._metrics.request_latency.labels(path, str(status[0])).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_timed)


def _authenticator(settings: Settings) -> Callable[[Request], Response | None]:
    """Bearer token or basic credentials, compared in constant time; None means let in."""
    hook = settings.webhook
    bearer = hook.bearer_token.get_secret_value().encode() if hook.bearer_token else None
    basic = (
        (hook.basic_username.encode(), hook.basic_password.get_secret_value().encode())
        if hook.basic_username and hook.basic_password
        else None
    )

    def check(request: Request) -> Response | None:
        if bearer is None and basic is None:
            return None  # allow_unauthenticated (create_app's caller checked the settings)
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        given = credentials.strip().encode("latin-1")
        if bearer is not None and scheme.lower() == "bearer" and hmac.compare_digest(given, bearer):
            return None
        if basic is not None and scheme.lower() == "basic" and _basic_matches(given, *basic):
            return None
        challenge = "Bearer" if bearer is not None else 'Basic realm="runbooks"'
        return JSONResponse({"error": "missing or wrong credentials"}, 401, headers={"WWW-Authenticate": challenge})

    return check


def _basic_matches(given: bytes, user: bytes, password: bytes) -> bool:
    try:
        decoded = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        return False
    got_user, sep, got_password = decoded.partition(b":")
    # Both comparisons always run, so timing says nothing about which half was wrong.
    same_user = hmac.compare_digest(got_user, user)
    same_password = hmac.compare_digest(got_password, password)
    return bool(sep) and same_user and same_password


async def _read_body(request: Request, limit: int) -> bytes | Response:
    """The body, or a 413 as soon as it is known to exceed `limit` (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return JSONResponse({"error": "malformed Content-Length"}, 400)
        if int(declared) > limit:
            return _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Response:
    return JSONResponse({"error": f"body larger than {limit} bytes"}, 413)


class _Malformed(Exception):
    """The request itself is broken (a Content-Length that is not a number): 400."""


class _TooLarge(Exception):
    """The body is past the configured limit: 503 + Retry-After, so the sender keeps it."""


class _Shed(Exception):
    """Too many bytes in flight right now: 503 + Retry-After."""


class _BodyBudget:
    """Bytes of webhook bodies held at once, all requests together (one event loop: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


async def _read_limited(request: Request, limit: int, budget: _BodyBudget) -> bytearray:
    """The body in one buffer (no chunk list, no join: one copy), its bytes taken from `budget`.

    Raises _TooLarge as soon as the body is known to pass `limit` (from Content-Length, before
    reading), _Shed when the budget has no room for it, _Malformed for a bad Content-Length. The
    caller releases `len(body)` from the budget once the body is parsed.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _Malformed("malformed Content-Length")
        if int(declared) > limit:
            raise _TooLarge(f"body of {declared} bytes is larger than {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            if len(body) + len(chunk) > limit:
                raise _TooLarge(f"body larger than {limit} bytes")
            if not budget.take(len(chunk)):
                raise _Shed(f"{budget.used} bytes of notifications are being read already; retry later")
            body += chunk
    except BaseException:
        budget.release(len(body))
        raise
    return body


def _invalid(err: ValidationError) -> Response:
    errors = err.errors(include_url=False, include_input=False, include_context=False)
    status = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
    problems = [_problem(e) for e in errors[:10]]
    return JSONResponse({"error": "not an Alertmanager v4 or Grafana v1 webhook payload", "problems": problems}, status)


def _problem(error: Any) -> str:
    loc = list(error["loc"])
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return 'version: must be "4" (Alertmanager) or "1" (Grafana)'
    if loc and loc[0] in SENDERS:
        loc = loc[1:]  # the discriminator's tag, not a field of the body
    return f"{'.'.join(str(p) for p in loc) or 'body'}: {error['msg']}"


def serve(settings: Settings) -> None:
    """`runbooks triggers`: serve the app with uvicorn until interrupted.

    Raises ConfigError before serving when Temporal cannot be used as configured: a certificate or key
    file that cannot be read, or a refused TLS handshake or credentials at a first connect. Temporal
    merely unreachable is no reason to stop: alerts are answered 503 (and retried) until it answers."""
    settings.webhook.check_protected()
    connect_arguments(settings.temporal)  # every file readable and PEM, before anything else
    asyncio.run(_check_temporal(settings))

    async def connect() -> Client:
        return await connect_temporal(settings.temporal)

    uvicorn.run(create_app(settings, connect), host=settings.server.host, port=settings.server.port, log_level="info")


async def _check_temporal(settings: Settings) -> None:
    """One connect at start: a refusal stops the process (TemporalConnectError), silence is logged."""
    try:
        await asyncio.wait_for(connect_temporal(settings.temporal), settings.temporal.rpc_timeout_seconds * 2)
    except TemporalConnectError as err:
        if not err.unreachable:
            raise
        log.warning("%s; serving anyway: alerts are answered 503 until Temporal answers", err)
    except asyncio.TimeoutError:
        log.warning(
            "Temporal at %s did not answer within %.0f s; serving anyway: alerts are answered 503 until it does",
            settings.temporal.address,
            settings.temporal.rpc_timeout_seconds * 2,
        )


_ALERT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "labels", "startsAt", "fingerprint"],
    "properties": {
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "labels": {
            "type": "object",
            "minProperties": 1,  # alertname is usual, not required: Alertmanager sends alerts without it
            "additionalProperties": {"type": "string"},
        },
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "startsAt": {"type": "string", "format": "date-time"},
        "endsAt": {"type": "string", "format": "date-time"},
        "generatorURL": {"type": "string"},
        "fingerprint": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}
_ERROR = {"description": "refused; the body says why", "content": {"application/json": {}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "llm-runbooks triggers", "version": "1"},
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "basic": {"type": "http", "scheme": "basic"},
        }
    },
    "paths": {
        "/alertmanager": {
            "post": {
                "summary": "Alertmanager webhook (payload version 4) or Grafana's webhook contact point (version 1)",
                "description": (
                    "Answers 2xx only once every alert is with Temporal. 4xx only for input no Alertmanager or "
                    "Grafana produces (401 credentials, 400 not JSON or a bad Content-Length, 422 a field "
                    "wrong): both senders drop a 4xx for good. Anything that may pass on retry (a body over "
                    "webhook.max_body_bytes, too many bytes in flight, Temporal unreachable) is a 503 with "
                    "Retry-After, which both retry."
                ),
                "security": [{"bearer": []}, {"basic": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["version", "status", "alerts"],
                                "properties": {
                                    "version": {
                                        "type": "string",
                                        "enum": ["4", "1"],
                                        "description": "4: Alertmanager; 1: Grafana-managed alerting",
                                    },
                                    "orgId": {"type": "integer", "description": "Grafana only"},
                                    "title": {"type": "string", "description": "Grafana only"},
                                    "state": {"type": "string", "description": "Grafana only"},
                                    "message": {"type": "string", "description": "Grafana only"},
                                    "status": {"type": "string", "enum": ["firing", "resolved"]},
                                    "alerts": {"type": "array", "items": _ALERT_SCHEMA},
                                    "receiver": {"type": "string"},
                                    "groupKey": {"type": "string"},
                                    "truncatedAlerts": {"type": "integer", "minimum": 0},
                                    "groupLabels": {"type": "object"},
                                    "commonLabels": {"type": "object"},
                                    "commonAnnotations": {"type": "object"},
                                    "externalURL": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {"description": "every alert is with Temporal"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "422": _ERROR,
                    "503": {
                        "description": "retry: body over the limit, load shed, or Temporal unreachable",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
                    },
                },
            }
        },
        "/slack/interactions": {
            "post": {
                "summary": "Slack interactivity (signed block_actions)",
                "parameters": [
                    {
                        "name": "X-Slack-Request-Timestamp",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {"name": "X-Slack-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": {"payload": {"type": "string"}}}
                        }
                    },
                },
                "responses": {"200": {"description": "acknowledged"}, "400": _ERROR, "401": _ERROR, "413": _ERROR},
            }
        },
        "/pagerduty": PAGERDUTY_OPENAPI,
        "/healthz": {"get": {"responses": {"200": {"description": "process up"}}}},
        "/readyz": {"get": {"responses": {"200": {"description": "Temporal reachable"}, "503": _ERROR}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
    },
}
