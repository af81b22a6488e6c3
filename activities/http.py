"""HTTP probes: `curl -f URL/health`, as the SOPs' verification steps do."""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1)
    timeout_seconds: float = Field(5, gt=0)


class HealthResult(BaseModel):
    url: str
    ok: bool = Field(description="answered 2xx, like `curl -f` succeeding")
    status_code: int | None = None
    error: str | None = Field(None, description="why no answer came: refused, timed out, ...")
    body: str = Field("", description="the start of the answer, for the incident thread")
    elapsed_ms: float = 0

    @property
    def summary(self) -> str:
        outcome = f"HTTP {self.status_code}" if self.status_code is not None else self.error
        return f"{self.url}: {outcome}"


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
