"""HTTP probes: `curl -f URL/health`, as the SOPs' verification steps do."""

from __future__ import annotations

import time

import httpx
from temporalio import activity

# The models live in activities/http_models.py (workflows import them without httpx); importable here as before.
from activities.http_models import HealthCheck, HealthResult



class HttpProbes:
    """Health probes with one shared connection pool."""

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
                url=check.url, ok=False, error=f"{type(err).__name__}: {err}".rstrip(": "),
                elapsed_ms=_since(started),
            )
        return HealthResult(
            url=check.url, ok=response.is_success, status_code=response.status_code,
            body=response.text[:500], elapsed_ms=_since(started),
        )


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
