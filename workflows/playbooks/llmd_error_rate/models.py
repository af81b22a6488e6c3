"""Input, timings and the PromQL of the llm-d error-rate playbook (workflows/playbooks/llmd_error_rate/playbook.py)."""

from __future__ import annotations

import math

from pydantic import ConfigDict, Field
from temporalio import workflow

from workflows.incident import IncidentInput, SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.prometheus_models import InstantResult


class ErrorRateTimings(SopTimings):
    """The rule's rate window and the waits on the cluster; drills shorten them (`cluster_waits`)."""

    cluster_waits = (
        "rate_window_seconds",
        "rollout_timeout_seconds",
        "rollout_poll_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
    )
    model_config = ConfigDict(extra="forbid")

    rate_window_seconds: float = Field(300, gt=0, description="the rule's rate(...[5m])")
    rollout_timeout_seconds: float = Field(300, gt=0, description="seed 002: kubectl rollout status --timeout=300s")
    rollout_poll_seconds: float = Field(5, gt=0)
    verification_timeout_seconds: float = Field(
        600, gt=0, description="how long the error rate gets to come down after the rollback"
    )
    verification_poll_seconds: float = Field(15, gt=0)
    query_timeout_seconds: float = Field(10, gt=0, description="one PromQL query")

    def rate_window(self) -> str:
        return f"{max(2, round(self.rate_window_seconds))}s"


class LLMDErrorRateInput(IncidentInput):
    """IncidentInput plus the rule's threshold and the seed 002 trigger, all defaulted."""

    error_rate_percent: float = Field(5, gt=0, description="seed 001 LLMDHighErrorRate: 5xx above 5 % of requests")
    service_error_percent: float = Field(
        1, gt=0, description="seed 002 autoRollback trigger `errorRate: >1%`: a service above it is failing"
    )
    change_window_minutes: float = Field(
        60, gt=0, description="a model version change or rollout this long before the alert counts as recent"
    )
    timings: ErrorRateTimings = Field(default_factory=ErrorRateTimings)


class ErrorRatePromQL:
    """The rule's ratio, cluster-wide and per (namespace, service), in percent."""

    def __init__(self, window: str) -> None:
        self.w = window

    def ratio(self, by: str = "") -> str:
        group = f" by ({by})" if by else ""
        return (
            f'sum{group} (rate(llm_d_requests_total{{status=~"5.."}}[{self.w}])) / '
            f"sum{group} (rate(llm_d_requests_total[{self.w}])) * 100"
        )

    def cluster(self) -> str:
        return self.ratio()

    def per_service(self) -> str:
        return self.ratio("namespace, service")


def by_service(result: InstantResult) -> dict[tuple[str, str], float]:
    """(namespace, service) → percent, without the services that served nothing (NaN)."""
    return {
        (s.labels.get("namespace", ""), s.labels.get("service", "")): s.value
        for s in result.samples
        if not math.isnan(s.value)
    }


def percent(value: float | None) -> str:
    return "no data" if value is None or math.isnan(value) else f"{value:.1f} %"
