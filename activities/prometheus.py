"""Prometheus queries through its HTTP API (`/api/v1/query`, `/api/v1/query_range`), as the
runbooks' `promtool query instant|range` steps do.

Errors an on-call engineer can read:
- Prometheus unreachable or answering 5xx/503: `PrometheusUnavailable`, retryable (the activity's
  retry policy decides how long; the message names the address).
- A query Prometheus rejects (400/422, `errorType` bad_data/execution): `PrometheusBadQuery`,
  not retryable, with Prometheus' own reason and the query.
- No address configured (`prometheus.url`): `PrometheusNotConfigured`, not retryable.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.prometheus_models import (
    InstantQuery,
    InstantResult,
    RangeQuery,
    RangeResult,
    Sample,
    Series,
)


class PrometheusQueries:
    """Queries against one Prometheus (`base_url`, e.g. http://prometheus:9090), over a shared client."""

    def __init__(self, client: httpx.AsyncClient, base_url: str | None) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/") if base_url else None

    @activity.defn
    async def query_prometheus(self, q: InstantQuery) -> InstantResult:
        """`GET /api/v1/query`: the vector (or scalar) at `q.time`; see the module for errors."""
        params: dict[str, Any] = {"query": q.expr, "timeout": f"{q.timeout_seconds:g}s"}
        if q.time is not None:
            params["time"] = q.time.timestamp()
        data = await self._get("/api/v1/query", params, q.expr, q.timeout_seconds)
        result, kind = data["data"]["result"], data["data"]["resultType"]
        if kind == "scalar":
            samples = [Sample(value=_float(result[1]), at=_time(result[0]))]
        elif kind == "vector":
            samples = [
                Sample(labels=r.get("metric") or {}, value=_float(r["value"][1]), at=_time(r["value"][0]))
                for r in result
            ]
        else:
            raise ApplicationError(
                f"query {q.expr!r} returned a {kind}, not a vector: use a range query",
                type="PrometheusBadQuery",
                non_retryable=True,
            )
        return InstantResult(
            expr=q.expr, samples=samples, warnings=data.get("warnings") or [], infos=data.get("infos") or []
        )

    @activity.defn
    async def query_prometheus_range(self, q: RangeQuery) -> RangeResult:
        """`GET /api/v1/query_range`: one series per label set, points oldest first."""
        if q.end < q.start:
            raise ApplicationError(
                f"range query {q.expr!r}: end {q.end} is before start {q.start}",
                type="PrometheusBadQuery",
                non_retryable=True,
            )
        params = {
            "query": q.expr,
            "start": q.start.timestamp(),
            "end": q.end.timestamp(),
            "step": f"{q.step_seconds:g}s",
            "timeout": f"{q.timeout_seconds:g}s",
        }
        data = await self._get("/api/v1/query_range", params, q.expr, q.timeout_seconds)
        series = [
            Series(labels=r.get("metric") or {}, points=[(_time(t), _float(v)) for t, v in r["values"]])
            for r in data["data"]["result"]
        ]
        return RangeResult(
            expr=q.expr, series=series, warnings=data.get("warnings") or [], infos=data.get("infos") or []
        )

    async def _get(self, path: str, params: dict[str, Any], expr: str, timeout: float) -> dict[str, Any]:
        if not self.base_url:
            raise ApplicationError(
                "no Prometheus configured: set prometheus.url (RUNBOOKS_PROMETHEUS__URL)",
                type="PrometheusNotConfigured",
                non_retryable=True,
            )
        url = self.base_url + path
        try:
            response = await self.client.get(url, params=params, timeout=timeout + 5)
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"Prometheus at {self.base_url} is not answering: {type(err).__name__}: {err}",
                type="PrometheusUnavailable",
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code in (400, 422) and isinstance(body, dict):
            raise ApplicationError(
                f"Prometheus rejected the query {expr!r}: {body.get('errorType', 'error')}: {body.get('error', '')}",
                type="PrometheusBadQuery",
                non_retryable=True,
            )
        if not response.is_success or not isinstance(body, dict) or body.get("status") != "success":
            if isinstance(body, dict):  # Prometheus' error envelope: errorType (timeout, unavailable, ...) and error
                kind = f" ({body['errorType']})" if body.get("errorType") else ""
                reason = f"{body.get('error')}{kind}"
            else:
                reason = response.text[:200]
            raise ApplicationError(
                f"Prometheus at {self.base_url} answered HTTP {response.status_code}: {reason}",
                type="PrometheusUnavailable",
            )
        return body


def _float(raw: str) -> float:
    return float(raw)  # Prometheus writes values as strings: "1.5", "NaN", "+Inf", "-Inf"


def _time(raw: float) -> datetime:
    return datetime.fromtimestamp(float(raw), tz=timezone.utc)
