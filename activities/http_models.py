"""Requests to HTTP endpoints and their answers: `curl -f URL` as the SOPs' verification steps type it,
the model server's one-token inference request, its warm-up POST.

Pure pydantic, so workflows import them without httpx (activities/http.py sends them).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from activities.models import Request

# On a model Service: where its warm-up endpoint is (else http://SERVICE.NAMESPACE.svc:PORT/v1/warmup).
WARMUP_URL_ANNOTATION = "llm-d.io/warmup-url"


class HealthCheck(Request):
    """One `curl -f URL`; `timeout_seconds`: how long curl waits for an answer."""

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


class InferenceProbe(Request):
    """`curl -X POST URL -d '{"model": M, "messages": [{"role": "user", "content": "test"}]}'`
    (seed 001 validation); asks for one token."""

    url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    timeout_seconds: float = Field(10, gt=0)


class WarmUpRequest(Request):
    """`curl -X POST http://SERVICE:8080/v1/warmup -d '{"model": MODEL}'` (seed 001, model loading issues).

    The URL is the Service's `llm-d.io/warmup-url` annotation, else
    `http://SERVICE.NAMESPACE.svc:PORT/v1/warmup` (its first port)."""

    namespace: str
    service: str
    model: str = Field(min_length=1)
    timeout_seconds: float = Field(30, gt=0)
