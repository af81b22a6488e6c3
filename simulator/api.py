"""The Kubernetes REST API over the simulator's store, as a Starlette app.

Speaks the apiserver's dialect closely enough for real kubectl and the official client:
discovery, get/list/watch/create/replace/patch/delete/deletecollection, the status, scale,
log and eviction subresources, metrics.k8s.io, dry runs, and `Status` errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from simulator import discovery, disruption, patch, rbac, tables
from simulator.selectors import SelectorError, compile_selectors
from simulator.store import (
    RESOURCES,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    ResourceType,
    Store,
    copy_json,
    now_iso,
)
from simulator.validation import ValidationError, validate

log = logging.getLogger(__name__)

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Custom resources have no Go struct to drive a strategic merge; the apiserver refuses it.
_CUSTOM_GROUPS = {"inference.llm-d.io", "serving.kserve.io"}
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
}


@dataclass(frozen=True)
class AuditEntry:
    """One write that reached the API, successful or not (see `code`)."""

    time: str
    verb: str  # create / update / patch / delete / deletecollection / evict
    path: str
    resource: str
    subresource: str
    namespace: str
    name: str
    patch_type: str
    body: Any
    user_agent: str
    field_manager: str
    dry_run: bool
    code: int


class ApiError(Exception):
    """Answered as a `Status` object with this code."""

    def __init__(self, code: int, message: str, *, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details


def status_body(code: int, message: str, reason: str, details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if code < 300:
        body.pop("reason")
    if details:
        body["details"] = details
    return body


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(status_body(error.code, error.message, error.reason, error.details), status_code=error.code)


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, f'{rtype.plural} "{name}" not found', details={"name": name, "group": rtype.group, "kind": rtype.plural}
    )


@dataclass
class _Target:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class KubeApi:
    """Request handling; `app` is the ASGI application."""

    def __init__(self, store: Store, behaviour: Any | None, token: str):
        self.store, self.behaviour, self.token = store, behaviour, token
        self.rbac = rbac.Rbac(store, token)  # ServiceAccount tokens and RBAC; the admin token may do all
        self.stopping = threading.Event()
        self._audit: list[AuditEntry] = []
        self._audit_lock = threading.Lock()
        self._metrics_down_until = 0.0  # metrics_unavailable_for(): the aggregated API answers 503
        self._group_versions = discovery.group_versions()
        self.app = Starlette(
            routes=[
                Route("/metrics", self._prometheus, methods=["GET"]),
                Route("/simulated/health/{namespace}/{service}", self._health, methods=["GET"]),
                Route("/simulated/warmup/{namespace}/{service}", self._warmup, methods=["POST"]),
                Route("/simulated/v1/{namespace}/{service}/chat/completions", self._completion, methods=["POST"]),
                Route("/simulated/metrics/{namespace}/{service}", self._service_metrics, methods=["GET"]),
                Route("/admin/inject", self._inject, methods=["POST"]),
                Route("/admin/scenario", self._stage_scenario, methods=["POST"]),
                Route("/admin/audit", self._audit_endpoint, methods=["GET"]),
                Route("/{path:path}", self._kube, methods=_ALL_METHODS),
            ]
        )

    def audit(self) -> list[AuditEntry]:
        with self._audit_lock:
            return list(self._audit)

    # ---- non-Kubernetes routes ---------------------------------------------------------

    async def _prometheus(self, request: Request) -> Response:
        if self.behaviour is None:
            return PlainTextResponse("", media_type="text/plain; version=0.0.4")
        data = await asyncio.to_thread(self.behaviour.prometheus_metrics)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _health(self, request: Request) -> Response:
        if self.behaviour is None:
            return JSONResponse({"status": "unknown"}, status_code=503)
        code, body = await asyncio.to_thread(
            self.behaviour.health, request.path_params["namespace"], request.path_params["service"]
        )
        return JSONResponse(body, status_code=code)

    async def _warmup(self, request: Request) -> Response:
        """A model service's `POST /v1/warmup` (seed 001), body {"model": NAME}."""
        warm_up = getattr(self.behaviour, "warm_up", None)
        if warm_up is None:
            return JSONResponse({"status": "unknown"}, status_code=503)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return JSONResponse({"error": 'the body must be {"model": NAME}'}, status_code=400)
        code, answer = await asyncio.to_thread(
            warm_up, request.path_params["namespace"], request.path_params["service"], body["model"]
        )
        return JSONResponse(answer, status_code=code)

    async def _completion(self, request: Request) -> Response:
        """A model service's `POST /v1/chat/completions` (seed 001's validation request): one token
        while the service has a Ready pod, else its health answer's status."""
        if self.behaviour is None:
            return JSONResponse({"error": "unknown"}, status_code=503)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return JSONResponse({"error": 'the body must be {"model": NAME, "messages": [...]}'}, status_code=400)
        code, health = await asyncio.to_thread(
            self.behaviour.health, request.path_params["namespace"], request.path_params["service"]
        )
        if code != 200:
            return JSONResponse({"error": health}, status_code=code)
        return JSONResponse(
            {
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def _service_metrics(self, request: Request) -> Response:
        """One model service's scrape target: up{job="llm-d-service"} follows its status."""
        source = getattr(self.behaviour, "service_metrics", None)
        if source is None:
            return PlainTextResponse("no such service\n", status_code=404)
        code, data = await asyncio.to_thread(source, request.path_params["namespace"], request.path_params["service"])
        return Response(data, status_code=code, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _inject(self, request: Request) -> Response:
        try:
            self._authenticate(request, admin=True)
            body = _decode_json(await request.body())
            fault = body.get("fault") if isinstance(body, dict) else None
            if not isinstance(fault, str) or not fault:
                raise ApiError(400, 'the body must be {"fault": NAME}')
            if self.behaviour is None:
                raise ApiError(503, "no cluster behaviour to inject into")
            try:
                await asyncio.to_thread(self.behaviour.inject, fault)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
            except Conflict as exc:  # the fault's objects collide with what is in the cluster now
                raise ApiError(409, f"cannot stage {fault}: {exc}") from None
        except ApiError as error:
            return _error_response(error)
        return JSONResponse({"injected": fault})

    async def _stage_scenario(self, request: Request) -> Response:
        """A scenario file (simulator/scenario_files.py) in the body, YAML or JSON; `?source=NAME`
        names it in errors. 200 with what it created, patched and deleted; 422 with every problem
        (and nothing applied) for a file that does not fit or cannot apply; 400 for one that is not YAML."""
        from simulator.scenario_files import ScenarioFileError, stage_scenario

        source = request.query_params.get("source") or "<request body>"
        try:
            self._authenticate(request, admin=True)
            if self.behaviour is None:
                raise ApiError(503, "no cluster behaviour to stage a scenario on")
            raw = await request.body()
            try:
                staged = await asyncio.to_thread(stage_scenario, self.behaviour, raw, source)
            except ScenarioFileError as exc:
                code = 400 if exc.problems[:1] and exc.problems[0][0] == "file" else 422
                raise ApiError(
                    code,
                    str(exc),
                    details={
                        "name": source,
                        "causes": [{"field": where, "message": what} for where, what in exc.problems],
                    },
                ) from None
        except ApiError as error:
            return _error_response(error)
        return JSONResponse(staged.as_dict())

    async def _audit_endpoint(self, request: Request) -> Response:
        try:
            self._authenticate(request, admin=True)
        except ApiError as error:
            return _error_response(error)
        return JSONResponse([dataclasses.asdict(e) for e in self.audit()])

    # ---- the Kubernetes API ------------------------------------------------------------

    async def _kube(self, request: Request) -> Response:
        recorder = _Recorder(request)
        try:
            user = self._authenticate(request)
            attrs = rbac.request_attributes(request.method, request.url.path, request.query_params)
            if not self.rbac.authorize(user, attrs):
                raise ApiError(
                    403,
                    self.rbac.forbidden_message(user, attrs),
                    details={"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource},
                )
            response = await self._identity_request(request, user, attrs)
            if response is None and _media_type(request) == "application/vnd.kubernetes.protobuf":
                raise ApiError(
                    415,
                    "the simulator reads protobuf only for token requests and "
                    "self-reviews: send JSON (kubectl apply -f)",
                )
            response = response or await self._dispatch(request, recorder)
        except ApiError as error:
            response = _error_response(error)
        except Exception:  # a bug of ours, never the client's: say so as the apiserver would
            log.exception("simulator API failed on %s %s", request.method, request.url.path)
            response = _error_response(ApiError(500, "internal error in the simulator"))
        entry = recorder.entry(response.status_code)
        if entry is not None:
            with self._audit_lock:
                self._audit.append(entry)
        return response

    def _authenticate(self, request: Request, *, admin: bool = False) -> rbac.User:
        user = self.rbac.authenticate(request.headers.get("authorization", ""))
        if user is None:
            raise ApiError(401, "Unauthorized")
        if admin and not user.admin:
            raise ApiError(403, f'User "{user.name}" cannot use the simulator\'s admin endpoints')
        return user

    async def _identity_request(self, request: Request, user: rbac.User, attrs: rbac.Attributes) -> Response | None:
        """TokenRequest and the self-reviews (simulator/rbac.py); None for any other request."""
        reviews = {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
        token = attrs.resource == "serviceaccounts" and attrs.subresource == "token"
        if request.method != "POST" or not (token or (attrs.resource in reviews and not attrs.name)):
            return None
        raw = await request.body()
        if _media_type(request) == "application/vnd.kubernetes.protobuf":  # kubectl's typed clients
            try:
                body = rbac.decode_protobuf(raw)
            except ValueError as exc:
                raise ApiError(415, f"{exc}: send JSON") from None
        else:
            body = _decode_json(raw or b"{}")
        if token:
            found = self.rbac.request_token(attrs.namespace, attrs.name, body)
            if found is None:
                raise _not_found(RESOURCES["serviceaccounts"], attrs.name)
            return JSONResponse(found, status_code=201)
        try:
            if attrs.resource == "selfsubjectaccessreviews":
                return JSONResponse(self.rbac.access_review(user, body), status_code=201)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        if attrs.resource == "selfsubjectrulesreviews":
            return JSONResponse(self.rbac.rules_review(user, body), status_code=201)
        return JSONResponse(self.rbac.self_review(user), status_code=201)

    async def _dispatch(self, request: Request, recorder: _Recorder) -> Response:
        segments = [s for s in request.url.path.split("/") if s]
        method = request.method
        if method not in ("GET", "HEAD") and (not segments or segments[0] not in ("api", "apis")):
            raise ApiError(405, f"method {method} is not allowed on {request.url.path}")
        if segments == ["version"]:
            return JSONResponse(discovery.SERVER_VERSION)
        if segments and segments[0] in ("healthz", "livez", "readyz"):
            return PlainTextResponse("ok")
        document = self._discovery(segments)
        if document is not None:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"method {method} is not allowed on {request.url.path}")
            return JSONResponse(document)
        target = self._target(segments)
        return await self._serve_target(request, target, recorder)

    def _discovery(self, segments: list[str]) -> dict | None:
        if segments[:2] == ["openapi", "v3"]:
            found = (
                discovery.openapi_v3_index()
                if len(segments) == 2
                else discovery.openapi_v3_document("/".join(segments[2:]))
            )
            if found is None:
                raise ApiError(404, "the server could not find the requested resource")
            return found
        if segments == ["api"]:
            return discovery.api_versions()
        if segments == ["api", "v1"]:
            return discovery.api_resource_list("", "v1")
        if segments == ["apis"]:
            return discovery.api_group_list()
        if len(segments) == 2 and segments[0] == "apis":
            found = discovery.api_group(segments[1])
            if found is None:
                raise ApiError(404, "the server could not find the requested resource")
            return found
        if len(segments) == 3 and segments[0] == "apis":
            found = discovery.api_resource_list(segments[1], segments[2])
            if found is None:
                raise ApiError(404, "the server could not find the requested resource")
            return found
        return None

    def _target(self, segments: list[str]) -> _Target:
        missing = ApiError(404, "the server could not find the requested resource")
        if len(segments) >= 2 and segments[0] == "api" and segments[1] == "v1":
            group, version, rest = "", "v1", segments[2:]
        elif len(segments) >= 4 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise missing
        types = self._group_versions.get((group, version))
        if types is None or not rest:
            raise missing
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3 or rest[0] not in types:
            raise missing
        rtype = types[rest[0]]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if namespace is not None and not rtype.namespaced:
            raise missing
        if rtype.namespaced and name is not None and namespace is None:
            raise missing
        if sub is not None and sub not in rtype.subresources:
            raise missing
        return _Target(rtype, namespace, name, sub)

    async def _serve_target(self, request: Request, t: _Target, recorder: _Recorder) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        if not t.rtype.stored:
            if method != "GET":
                raise ApiError(405, f"{t.rtype.plural}.metrics.k8s.io is read-only")
            return await self._metrics(request, t)
        query = request.query_params
        dry_run = _dry_run(query.getlist("dryRun"))
        if method in _WRITE_METHODS:
            recorder.start(t, dry_run, query.get("fieldManager", ""))
        body = await request.body() if method in _WRITE_METHODS else b""
        if method in _WRITE_METHODS:
            recorder.set_body(body)
        key = (method, t.name is not None, t.subresource)
        if key == ("GET", False, None):
            if query.get("watch") in ("true", "1"):
                return self._watch(request, t)
            return self._respond(request, self._list(t, query))
        if key == ("GET", True, None):
            return self._respond(request, self._get(t))
        if key == ("GET", True, "status"):
            return JSONResponse(self._get(t))
        if key == ("GET", True, "scale"):
            return JSONResponse(_scale_of(self._get(t)))
        if key == ("GET", True, "log"):
            return await self._pod_log(t, query)
        if key == ("POST", False, None):
            recorder.verb = "create"
            return JSONResponse(self._create(t, request, body, dry_run), status_code=201)
        if key == ("POST", True, "eviction"):
            recorder.verb = "evict"
            recorder.dry_run_in_body("deleteOptions")  # kubectl drain --dry-run=server asks there
            return JSONResponse(await self._evict(t, body, dry_run), status_code=201)
        if key in (("PUT", True, None), ("PUT", True, "status"), ("PUT", True, "scale")):
            recorder.verb = "update"
            return JSONResponse(self._replace(t, request, body, dry_run))
        if key in (("PATCH", True, None), ("PATCH", True, "status"), ("PATCH", True, "scale")):
            recorder.verb = "patch"
            recorder.patch_type = _media_type(request)
            return self._patch(t, request, body, dry_run)
        if key == ("DELETE", True, None):
            recorder.verb = "delete"
            return JSONResponse(self._delete(t, body, dry_run))
        if key == ("DELETE", False, None):
            recorder.verb = "deletecollection"
            return JSONResponse(self._delete_collection(t, query, body, dry_run))
        raise ApiError(405, f"method {request.method} is not supported on this path")

    # ---- reads -------------------------------------------------------------------------

    def _get(self, t: _Target) -> dict:
        obj = self.store.get(t.rtype.plural, t.namespace, t.name or "")
        if obj is None:
            raise _not_found(t.rtype, t.name or "")
        return obj

    def _list(self, t: _Target, query: Any) -> dict:
        with self.store.lock:
            version = self.store.resource_version()
            try:
                items = self.store.list(
                    t.rtype.plural,
                    t.namespace,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                )
            except SelectorError as exc:
                raise ApiError(400, str(exc)) from None
        return {
            "kind": t.rtype.list_kind,
            "apiVersion": t.rtype.api_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    def _respond(self, request: Request, obj: dict) -> Response:
        """JSON, or a meta.k8s.io Table when the client (kubectl get) asks for one."""
        if "as=Table" in request.headers.get("accept", ""):
            include = request.query_params.get("includeObject", "Metadata")
            return JSONResponse(tables.table_for(obj, include))
        return JSONResponse(obj)

    def _watch(self, request: Request, t: _Target) -> Response:
        query = request.query_params
        try:
            match = compile_selectors(t.rtype.plural, query.get("labelSelector"), query.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None
        since = query.get("resourceVersion", "")
        if since not in ("", "0") and not since.isdigit():
            raise ApiError(400, f"invalid resourceVersion {since!r}")
        timeout = _int_param(query, "timeoutSeconds", 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial = query.get("sendInitialEvents") in ("true", "1")
        return StreamingResponse(
            self._watch_stream(t, match, since, timeout, bookmarks, initial), media_type="application/json"
        )

    async def _watch_stream(
        self, t: _Target, match: Any, since: str, timeout: int, bookmarks: bool, initial: bool
    ) -> AsyncIterator[bytes]:
        def visible(obj: dict) -> bool:
            ns = obj.get("metadata", {}).get("namespace")
            return (t.namespace is None or ns == t.namespace) and match(obj)

        with self.store.lock:
            version = int(self.store.resource_version())
            current = self.store.list(t.rtype.plural, t.namespace)
        if since in ("", "0") or initial:
            for obj in current:
                if visible(obj):
                    yield _watch_line("ADDED", obj)
            if initial and bookmarks:
                yield _watch_line("BOOKMARK", _bookmark(t.rtype, version, initial_end=True))
        else:
            version = int(since)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                version, events = self.store.events_since(t.rtype.plural, version)
            except Gone as exc:
                yield _watch_line("ERROR", status_body(410, str(exc), "Expired"))
                return
            for etype, obj in events:
                if visible(obj):
                    yield _watch_line(etype, obj)
            await asyncio.sleep(0.05)

    async def _pod_log(self, t: _Target, query: Any) -> Response:
        self._get(t)
        tail = _int_param(query, "tailLines", None)
        if self.behaviour is None:
            return PlainTextResponse("")
        try:
            text = await asyncio.to_thread(self.behaviour.pod_log, t.namespace, t.name, query.get("container"), tail)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return PlainTextResponse(text)

    def metrics_unavailable_for(self, seconds: float) -> None:
        """metrics-server starting (or restarting): metrics.k8s.io answers 503 for `seconds` (wall clock),
        as the API server does for an aggregated API whose backend is not ready."""
        self._metrics_down_until = time.monotonic() + seconds

    async def _metrics(self, request: Request, t: _Target) -> Response:
        if time.monotonic() < self._metrics_down_until:
            raise ApiError(
                503, f"the server is currently unable to handle the request (get {t.rtype.plural}.metrics.k8s.io)"
            )
        if t.subresource is not None:
            raise ApiError(404, "the server could not find the requested resource")
        source = (
            (self.behaviour.pod_metrics if t.rtype.plural == "pods" else self.behaviour.node_metrics)
            if self.behaviour
            else (lambda: [])
        )
        items = await asyncio.to_thread(source)
        try:
            match = compile_selectors(
                t.rtype.plural, request.query_params.get("labelSelector"), request.query_params.get("fieldSelector")
            )
        except SelectorError as exc:
            raise ApiError(400, str(exc)) from None
        found = []
        for item in items:
            meta = item.get("metadata", {})
            if t.namespace is not None and meta.get("namespace") != t.namespace:
                continue
            if t.name is not None and meta.get("name") != t.name:
                continue
            if match(item):
                found.append({"apiVersion": t.rtype.api_version, "kind": t.rtype.kind, **item})
        if t.name is not None:
            if not found:
                raise _not_found(t.rtype, t.name)
            return JSONResponse(found[0])
        return JSONResponse(
            {
                "kind": t.rtype.list_kind,
                "apiVersion": t.rtype.api_version,
                "metadata": {"resourceVersion": self.store.resource_version()},
                "items": found,
            }
        )

    # ---- writes ------------------------------------------------------------------------

    def _create(self, t: _Target, request: Request, raw: bytes, dry_run: bool) -> dict:
        if t.subresource is not None or (t.rtype.namespaced and t.namespace is None):
            raise ApiError(405, f"create {t.rtype.plural} needs a namespaced collection path")
        obj = _object_body(raw, request, t.rtype)
        meta = obj["metadata"]
        if t.rtype.namespaced:
            self._set_namespace(t, meta)
            if self.store.get("namespaces", None, t.namespace or "") is None:
                raise _not_found(RESOURCES["namespaces"], t.namespace or "")
        _reset_status_on_create(t.rtype, obj)
        _default(obj)
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            probe = copy_json(obj)
            probe["metadata"]["name"] = meta["generateName"] + "x"
            self._validate(t.rtype, probe)
        else:
            self._validate(t.rtype, obj)
        if dry_run:
            return _dry_run_created(t, obj, self.store)
        try:
            return self.store.create(obj)
        except Conflict as exc:
            raise ApiError(
                409,
                str(exc),
                reason="AlreadyExists",
                details={"name": meta.get("name", ""), "group": t.rtype.group, "kind": t.rtype.plural},
            ) from None
        except Invalid as exc:
            raise ApiError(422, str(exc)) from None

    def _replace(self, t: _Target, request: Request, raw: bytes, dry_run: bool) -> dict:
        if t.subresource == "scale":
            scale = _decode_object(raw, request)
            replicas = (scale.get("spec") or {}).get("replicas")
            return self._write_scale(t, scale, replicas, dry_run)
        obj = _object_body(raw, request, t.rtype)
        meta = obj["metadata"]
        if meta.get("name") not in (None, t.name):
            raise ApiError(
                400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({t.name})"
            )
        meta["name"] = t.name
        if t.rtype.namespaced:
            self._set_namespace(t, meta)
        with self.store.lock:
            old = self._get(t)
            version = meta.get("resourceVersion")
            if version not in (None, "") and version != old["metadata"]["resourceVersion"]:
                raise self._stale(t)
            return self._write(t, old, obj, dry_run)

    def _patch(self, t: _Target, request: Request, raw: bytes, dry_run: bool) -> Response:
        media = _media_type(request)
        if media == patch.APPLY:
            return self._server_side_apply(t, request, raw, dry_run)
        if media not in (patch.STRATEGIC, patch.MERGE, patch.JSON_PATCH):
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted "
                f"media types include: {patch.JSON_PATCH}, {patch.MERGE}, "
                f"{patch.APPLY}, {patch.STRATEGIC}",
            )
        if media == patch.STRATEGIC and t.rtype.group in _CUSTOM_GROUPS:
            raise ApiError(
                415,
                "strategic merge patch is not supported for custom resources; "
                "use a merge patch (application/merge-patch+json) instead",
            )
        document = _decode_json(raw)
        with self.store.lock:
            old = self._get(t)
            if t.subresource == "scale":
                scale = self._apply(_scale_of(old), document, media)
                replicas = (scale.get("spec") or {}).get("replicas")
                return JSONResponse(self._write_scale(t, scale, replicas, dry_run))
            new = self._apply(old, document, media)
            version = (new.get("metadata") or {}).get("resourceVersion")
            if version not in (None, "", old["metadata"]["resourceVersion"]):
                raise self._stale(t)
            return JSONResponse(self._write(t, old, new, dry_run))

    def _server_side_apply(self, t: _Target, request: Request, raw: bytes, dry_run: bool) -> Response:
        """A pragmatic server-side apply: create if absent, else merge the applied fields."""
        if not request.query_params.get("fieldManager"):
            raise ApiError(400, "PATCH of type application/apply-patch+yaml requires fieldManager to be set")
        applied = _decode_object(raw, request)
        with self.store.lock:
            old = self.store.get(t.rtype.plural, t.namespace, t.name or "")
            if old is None:
                if (applied.get("metadata") or {}).get("name") not in (None, t.name):
                    raise ApiError(400, "the name of the object does not match the URL")
                collection = _Target(t.rtype, t.namespace, None, None)
                return JSONResponse(self._create(collection, request, raw, dry_run), status_code=201)
            media = patch.MERGE if t.rtype.group in _CUSTOM_GROUPS else patch.STRATEGIC
            new = self._apply(old, applied, media)
            return JSONResponse(self._write(t, old, new, dry_run))

    def _apply(self, old: dict, document: Any, media: str) -> dict:
        try:
            return patch.apply_patch(old, document, media)
        except patch.PatchError as exc:
            raise ApiError(422, str(exc)) from None

    def _write(self, t: _Target, old: dict, new: dict, dry_run: bool) -> dict:
        """Store `new` in place of `old`, with the apiserver's rules for each endpoint."""
        if not isinstance(new.get("metadata"), dict):
            raise ApiError(422, "metadata: Required value")
        for field in ("apiVersion", "kind"):
            if new.get(field) != old[field]:
                raise ApiError(400, f"{field} cannot be changed from {old[field]!r}")
        for field in ("name", "namespace"):
            if new["metadata"].get(field) != old["metadata"].get(field):
                raise ApiError(
                    400 if field == "namespace" else 422, f"metadata.{field}: Invalid value: field is immutable"
                )
        if t.subresource == "status":
            new = {**copy_json(old), "status": new.get("status")}
        elif "status" in t.rtype.subresources:
            new["status"] = copy_json(old.get("status"))
            if new["status"] is None:
                new.pop("status")
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        self._validate(t.rtype, new)
        if dry_run:
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            return new
        try:
            return self.store.update(new, check_version=True)
        except Conflict:
            raise self._stale(t) from None
        except NotFound:
            raise _not_found(t.rtype, t.name or "") from None

    def _write_scale(self, t: _Target, scale: Any, replicas: Any, dry_run: bool) -> dict:
        if not isinstance(scale, dict) or not isinstance(replicas, int) or replicas < 0 or isinstance(replicas, bool):
            raise ApiError(
                422,
                f'Scale "{t.name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas!r}: must be a non-negative integer",
            )
        with self.store.lock:
            old = self._get(t)
            version = (scale.get("metadata") or {}).get("resourceVersion")
            if version not in (None, "", old["metadata"]["resourceVersion"]):
                raise self._stale(t)
            new = copy_json(old)
            new.setdefault("spec", {})["replicas"] = replicas
            main = _Target(t.rtype, t.namespace, t.name, None)
            return _scale_of(self._write(main, old, new, dry_run))

    def _delete(self, t: _Target, raw: bytes, dry_run: bool) -> dict:
        options = _delete_options(raw)
        dry_run = dry_run or _dry_run(options.get("dryRun") or [])
        with self.store.lock:
            old = self._get(t)
            preconditions = options.get("preconditions") or {}
            for field in ("uid", "resourceVersion"):
                wanted = preconditions.get(field) if isinstance(preconditions, dict) else None
                if wanted and wanted != old["metadata"].get(field):
                    raise ApiError(
                        409,
                        f"Precondition failed: {field} in precondition: "
                        f"{wanted}, {field} in object meta: "
                        f"{old['metadata'].get(field)}",
                    )
            if dry_run:
                return old
            return self._remove(t.rtype, old, options.get("propagationPolicy"))

    def _delete_collection(self, t: _Target, query: Any, raw: bytes, dry_run: bool) -> dict:
        options = _delete_options(raw)
        dry_run = dry_run or _dry_run(options.get("dryRun") or [])
        listed = self._list(t, query)
        if not dry_run:
            listed["items"] = [self._remove(t.rtype, obj, options.get("propagationPolicy")) for obj in listed["items"]]
        return listed

    def _remove(self, rtype: ResourceType, obj: dict, propagation: Any) -> dict:
        """Delete an object and, unless orphaned, what it owns (the garbage collector's job)."""
        meta = obj["metadata"]
        if propagation == "Orphan":
            deleted = self.store.delete(rtype.plural, meta.get("namespace"), meta["name"])
        else:
            deleted = self.store.delete_with_dependents(rtype.plural, meta.get("namespace"), meta["name"])
        if deleted is None:
            return obj
        if rtype.plural == "namespaces":
            for other in RESOURCES.values():
                if other.namespaced:
                    for child in self.store.list(other.plural, meta["name"]):
                        self.store.delete(other.plural, meta["name"], child["metadata"]["name"])
        return deleted

    async def _evict(self, t: _Target, raw: bytes, dry_run: bool) -> dict:
        eviction = _decode_json(raw)
        if not isinstance(eviction, dict) or eviction.get("kind", "Eviction") != "Eviction":
            raise ApiError(400, "the body must be a policy/v1 Eviction")
        name = (eviction.get("metadata") or {}).get("name")
        if name not in (None, t.name):
            raise ApiError(400, f"name in URL ({t.name}) does not match the Eviction ({name})")
        dry_run = dry_run or _dry_run((eviction.get("deleteOptions") or {}).get("dryRun") or [])
        pod = self._get(t)

        def evict() -> None:
            # One hold of the lock from the budget check to the removal: two evictions at once
            # (kubectl drain evicts in parallel) cannot both spend the budget's last disruption.
            with self.store.lock:
                current = self.store.get("pods", t.namespace, t.name or "")
                disruption.check_eviction(self.store, current or pod)
                if dry_run:
                    return
                hook = getattr(self.behaviour, "on_eviction", None)
                if hook is not None:
                    hook(t.namespace, t.name)
                if current is not None and current["metadata"]["uid"] == pod["metadata"]["uid"]:
                    self._remove(t.rtype, current, None)

        try:
            await asyncio.to_thread(evict)
        except disruption.EvictionRefused as refused:
            raise ApiError(
                refused.code,
                refused.message,
                reason=refused.reason,
                details={"name": t.name, "kind": "pods", "causes": refused.causes} if refused.causes else None,
            ) from None
        return status_body(201, "", "", None) | {
            "details": {"name": t.name, "kind": "pods", "uid": pod["metadata"]["uid"]}
        }

    # ---- helpers -----------------------------------------------------------------------

    def _validate(self, rtype: ResourceType, obj: dict) -> None:
        try:
            validate(rtype, obj)
        except ValidationError as exc:
            raise ApiError(
                422,
                str(exc),
                details={
                    "name": exc.name,
                    "group": rtype.group,
                    "kind": rtype.kind,
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": message, "field": field}
                        for field, message in exc.causes
                    ],
                },
            ) from None

    def _set_namespace(self, t: _Target, meta: dict) -> None:
        if meta.get("namespace") not in (None, "", t.namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = t.namespace

    def _stale(self, t: _Target) -> ApiError:
        return ApiError(
            409,
            f'Operation cannot be fulfilled on {t.rtype.plural}'
            f'{"." + t.rtype.group if t.rtype.group else ""} "{t.name}": the '
            "object has been modified; please apply your changes to the "
            "latest version and try again",
            details={"name": t.name, "group": t.rtype.group, "kind": t.rtype.plural},
        )


class _Recorder:
    """Collects one write request's audit fields while it is being served."""

    def __init__(self, request: Request):
        self.request = request
        self.fields: dict[str, Any] | None = None
        self.verb = ""
        self.patch_type = ""

    def start(self, t: _Target, dry_run: bool, field_manager: str) -> None:
        self.fields = dict(
            time=now_iso(),
            path=self.request.url.path,
            resource=t.rtype.plural,
            subresource=t.subresource or "",
            namespace=t.namespace or "",
            name=t.name or "",
            body=None,
            user_agent=self.request.headers.get("user-agent", ""),
            field_manager=field_manager,
            dry_run=dry_run,
        )

    def set_body(self, raw: bytes) -> None:
        if self.fields is None:
            return
        try:
            self.fields["body"] = json.loads(raw) if raw else None
        except ValueError:
            self.fields["body"] = raw.decode("utf-8", "replace")

    def dry_run_in_body(self, options: str) -> None:
        """A dry run asked in the body's options (an Eviction's deleteOptions), not the query string."""
        body = self.fields.get("body") if self.fields else None
        if (
            isinstance(body, dict)
            and isinstance(body.get(options), dict)
            and _dry_run(body[options].get("dryRun") or [])
        ):
            self.fields["dry_run"] = True  # type: ignore[index]

    def entry(self, code: int) -> AuditEntry | None:
        if self.fields is None:
            return None
        return AuditEntry(verb=self.verb, patch_type=self.patch_type, code=code, **self.fields)


# ---- module helpers ----------------------------------------------------------------------


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body of the request is not valid JSON: {exc}") from None


def _decode_object(raw: bytes, request: Request) -> dict:
    media = _media_type(request)
    if "yaml" in media:
        try:
            document = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ApiError(400, f"the body of the request is not valid YAML: {exc}") from None
    else:
        document = _decode_json(raw)
    if not isinstance(document, dict):
        raise ApiError(400, "the body of the request must be a JSON object")
    return document


def _object_body(raw: bytes, request: Request, rtype: ResourceType) -> dict:
    obj = _decode_object(raw, request)
    # a body without apiVersion/kind takes them from the URL, as the apiserver's decoder does
    obj.setdefault("apiVersion", rtype.api_version)
    obj.setdefault("kind", rtype.kind)
    if obj["apiVersion"] != rtype.api_version or obj["kind"] != rtype.kind:
        raise ApiError(
            400,
            f"the API version/kind in the data ({obj['apiVersion']}, "
            f"{obj['kind']}) does not match the expected "
            f"({rtype.api_version}, {rtype.kind})",
        )
    if obj.get("metadata") is None:
        obj["metadata"] = {}
    if not isinstance(obj["metadata"], dict):
        raise ApiError(400, "metadata must be an object")
    return obj


def _delete_options(raw: bytes) -> dict:
    if not raw.strip():
        return {}
    options = _decode_json(raw)
    if not isinstance(options, dict):
        raise ApiError(400, "the body of a delete must be DeleteOptions")
    return options


def _dry_run(values: list[str]) -> bool:
    if not isinstance(values, list) or any(v != "All" for v in values):
        raise ApiError(400, f"dryRun: Unsupported value: {values!r}: supported values: \"All\"")
    return bool(values)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _int_param(query: Any, name: str, default: int | None) -> Any:
    value = query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, not {value!r}") from None
    if number < 0:
        raise ApiError(400, f"{name} must not be negative")
    return number


def _reset_status_on_create(rtype: ResourceType, obj: dict) -> None:
    """Status is the controllers' to write: a created object starts without one."""
    if "status" in rtype.subresources:
        obj.pop("status", None)
    if rtype.kind == "Pod":
        obj["status"] = {"phase": "Pending"}
    if rtype.kind == "Namespace":
        obj["status"] = {"phase": "Active"}


def _default(obj: dict) -> None:
    """The apiserver's defaults that controllers and kubectl rely on."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    kind = obj.get("kind")
    if kind in ("Deployment", "ReplicaSet"):
        spec.setdefault("replicas", 1)
    if kind == "Deployment":
        spec.setdefault(
            "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    if kind == "DaemonSet":
        spec.setdefault(
            "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
        )
    pod_spec = spec if kind == "Pod" else (spec.get("template") or {}).get("spec")
    if isinstance(pod_spec, dict) and kind in ("Pod", "Deployment", "ReplicaSet", "DaemonSet"):
        pod_spec.setdefault("restartPolicy", "Always")
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        pod_spec.setdefault("dnsPolicy", "ClusterFirst")
        pod_spec.setdefault("schedulerName", "default-scheduler")


def _dry_run_created(t: _Target, obj: dict, store: Store) -> dict:
    meta = obj["metadata"]
    if not meta.get("name"):
        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
    if store.get(t.rtype.plural, t.namespace, meta["name"]) is not None:
        raise ApiError(
            409,
            f'{t.rtype.plural} "{meta["name"]}" already exists',
            reason="AlreadyExists",
            details={"name": meta["name"], "group": t.rtype.group, "kind": t.rtype.plural},
        )
    meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
    return obj


def _scale_of(obj: dict) -> dict:
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def _watch_line(etype: str, obj: dict) -> bytes:
    return json.dumps({"type": etype, "object": obj}).encode() + b"\n"


def _bookmark(rtype: ResourceType, version: int, *, initial_end: bool) -> dict:
    meta: dict = {"resourceVersion": str(version)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
