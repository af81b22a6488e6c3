"""The HTTP probe's request and answer: `curl -f URL` as the SOPs' verification steps type it.

Pure pydantic, so workflows import them without httpx (activities/http.py runs the probe).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HealthCheck(BaseModel):
    """One `curl -f URL`; `timeout_seconds`: how long curl waits for an answer."""

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
