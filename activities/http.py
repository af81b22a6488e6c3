"""HTTP: `curl -f URL/health` as the SOPs' verification steps do, the model server's one-token
inference request (seed 001's validation), and its warm-up POST (seed 001, model loading issues).
"""

from __future__ import annotations

import asyncio
import time

import httpx
from kubernetes import client as k8s
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http_models import WARMUP_URL_ANNOTATION, HealthCheck, HealthResult, InferenceProbe, WarmUpRequest
from activities.kube.api import on_call_errors
from activities.models import ClusterChange


class HttpProbes:
    """Health and inference probes with one shared connection pool."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @activity.defn
    async def check_health(self, check: HealthCheck) -> HealthResult:
        """One GET; a down service is an answer (ok=False), not an activity failure."""
        started = time.monotonic()
        try:
            response = await self.client.get(check.url, timeout=check.timeout_seconds)
        except httpx.HTTPError as err:
            return HealthResult(
                url=check.url,
                ok=False,
                error=f"{type(err).__name__}: {err}".rstrip(": "),
                elapsed_ms=_since(started),
            )
        return HealthResult(
            url=check.url,
            ok=response.is_success,
            status_code=response.status_code,
            body=response.text[:500],
            elapsed_ms=_since(started),
        )

    @activity.defn
    async def check_inference(self, probe: InferenceProbe) -> HealthResult:
        """One POST; a failing model is an answer (ok=False), not an activity failure."""
        body = {"model": probe.model, "messages": [{"role": "user", "content": "test"}], "max_tokens": 1}
        started = time.monotonic()
        try:
            response = await self.client.post(probe.url, json=body, timeout=probe.timeout_seconds)
        except httpx.HTTPError as err:
            return HealthResult(
                url=probe.url, ok=False, error=f"{type(err).__name__}: {err}".rstrip(": "), elapsed_ms=_since(started)
            )
        return HealthResult(
            url=probe.url,
            ok=response.is_success,
            status_code=response.status_code,
            body=response.text[:500],
            elapsed_ms=_since(started),
        )


class ModelWarmUp:
    """The model server's warm-up POST; its URL is read from the model's Service (Kubernetes API)."""

    def __init__(self, client: httpx.AsyncClient, api_client: k8s.ApiClient) -> None:
        self.http = client
        self.core = k8s.CoreV1Api(api_client)

    @activity.defn
    async def warm_up_model(self, req: WarmUpRequest) -> ClusterChange:
        """POST the model's warm-up endpoint; a non-2xx answer fails the activity (retryable: the
        server may be loading), with the status and the start of its body."""
        svc = await asyncio.to_thread(self._read_service, req.namespace, req.service)
        url = (svc.metadata.annotations or {}).get(WARMUP_URL_ANNOTATION)
        if not url:
            port = svc.spec.ports[0].port if svc.spec and svc.spec.ports else 8080
            url = f"http://{req.service}.{req.namespace}.svc:{port}/v1/warmup"
        try:
            response = await self.http.post(url, json={"model": req.model}, timeout=req.timeout_seconds)
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"warm-up of {req.model} at {url}: no answer ({type(err).__name__}: {err})", type="WarmUpFailed"
            ) from None
        if not response.is_success:
            raise ApplicationError(
                f"warm-up of {req.model} at {url}: HTTP {response.status_code}: {response.text[:200]}",
                type="WarmUpFailed",
                non_retryable=400 <= response.status_code < 500,
            )
        return ClusterChange(
            action="warm up model",
            kind="Service",
            namespace=req.namespace,
            name=req.service,
            field=f"POST {url}",
            before=None,
            after=f"HTTP {response.status_code}: {req.model}",
        )

    def _read_service(self, namespace: str, name: str) -> k8s.V1Service:
        with on_call_errors(f"read service {namespace}/{name}"):
            return self.core.read_namespaced_service(name, namespace)


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
