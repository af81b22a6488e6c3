"""Seed 001's high-latency runbook: its input and timings, the PromQL it asks, what it finds and
the branch each finding points to. The steps are in workflows/playbooks/high_latency/playbook.py.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from workflows.incident import IncidentInput, SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.models import ClusterChange

SCALE_DECODE = "scale-decode"
SCALE_PREFILL = "scale-prefill"
ROLLBACK = "rollback"

CauseKind = Literal["queue-depth", "gpu-exhaustion", "cache-misses", "cold-start"]


class LatencyTimings(SopTimings):
    """The runbook's windows and waits; drills shorten the cluster ones (`cluster_waits`)."""

    cluster_waits = (
        "rate_window_seconds",
        "verify_window_seconds",
        "verify_step_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
    )

    model_config = ConfigDict(extra="forbid")

    rate_window_seconds: float = Field(300, gt=0, description="the runbook's rate(...[5m])")
    verify_window_seconds: float = Field(3600, gt=0, description="step 1's range query: the last hour")
    verify_step_seconds: float = Field(60, gt=0, description="its --step 1m")
    verification_timeout_seconds: float = Field(
        1800, gt=0, description="escalation criterion: latency still > 5 s p95 after 30 minutes"
    )
    verification_poll_seconds: float = Field(30, gt=0)
    query_timeout_seconds: float = Field(10, gt=0, description="one PromQL query")

    def rate_window(self) -> str:
        return f"{max(2, round(self.rate_window_seconds))}s"


class HighLatencyInput(IncidentInput):
    """IncidentInput plus the runbook's thresholds and the llm-d deployments it scales, all defaulted."""

    serving_namespace: str = Field("production", description="where llm-d's decode/prefill deployments run")
    decode_deployment: str = "llm-d-decode"
    prefill_deployment: str = "llm-d-prefill"
    latency_slo_seconds: float = Field(2.0, gt=0, description="seed 001 SLO: p95 above 2 s is a breach")
    consistently_high_fraction: float = Field(0.8, gt=0, le=1, description="of the window's points above the SLO")
    queue_depth_threshold: float = Field(10, description="'Queue depth > 10' → scale decode")
    gpu_exhausted_percent: float = Field(95, description="'GPU utilization > 95%' → scale prefill")
    gpu_not_below_percent: float = Field(90, description="escalate when GPU utilization cannot get below it")
    cache_hit_ratio_min: float = Field(0.6, description="'cache hit ratio < 60%' → a human investigates")
    cold_start_seconds: float = Field(120, gt=0, description="a model load longer than this is a cold start")
    escalate_p95_seconds: float = Field(5.0, gt=0, description="'latency remains > 5 s p95 after 30 minutes'")
    decode_scale_factor: float = Field(2.0, gt=1, description="seed 001 scales decode 8 → 16")
    prefill_scale_factor: float = Field(1.5, gt=1, description="seed 001 scales prefill 4 → 6")
    max_replicas: int = Field(16, ge=1, description="no scale-up goes past this (seed 001's 16)")
    timings: LatencyTimings = Field(default_factory=LatencyTimings)


class PromQL:
    """The runbook's queries, over llm-d's series in one namespace, per service where it matters."""

    def __init__(self, namespace: str, window: str) -> None:
        self.sel, self.w = f'{{namespace="{namespace}"}}', window

    def p95(self) -> str:
        return (
            f"histogram_quantile(0.95, sum by (le) (rate(llm_d_request_duration_seconds_bucket{self.sel}[{self.w}])))"
        )

    def p95_by_service(self) -> str:
        return (
            f"histogram_quantile(0.95, sum by (service, le) "
            f"(rate(llm_d_request_duration_seconds_bucket{self.sel}[{self.w}])))"
        )

    def by_service(self, metric: str) -> str:
        return f"max by (service) ({metric}{self.sel})"

    def request_rate(self) -> str:
        return f"sum by (service) (rate(llm_d_requests_total{self.sel}[{self.w}]))"

    def cache_hit_ratio(self) -> str:
        return (
            f"sum by (service) (rate(llm_d_cache_hits_total{self.sel}[{self.w}])) / "
            f"sum by (service) (rate(llm_d_cache_requests_total{self.sel}[{self.w}]))"
        )

    def evictions(self) -> str:
        return f"sum(increase(llm_d_kv_cache_evictions_total{self.sel}[{self.w}]))"


class Cause(BaseModel):
    """One root cause the runbook names, found on one service, and the figures that show it."""

    kind: CauseKind
    service: str
    evidence: str


class LatencyFindings(BaseModel):
    """Steps 1-4: the figures, per service where the runbook asks per service."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    p95_seconds: float | None = None
    window_points: int = 0
    window_points_high: int = 0
    p95_by_service: dict[str, float] = Field(default_factory=dict)
    queue_depth: dict[str, float] = Field(default_factory=dict)
    gpu_percent: dict[str, float] = Field(default_factory=dict)
    memory_percent: dict[str, float] = Field(default_factory=dict)
    request_rate: dict[str, float] = Field(default_factory=dict)
    cache_hit_ratio: dict[str, float] = Field(default_factory=dict)
    evictions_in_window: float | None = None
    model_load_seconds: dict[str, float] = Field(default_factory=dict)
    oom_kills: list[str] = Field(default_factory=list)
    could_not_tell: list[str] = Field(
        default_factory=list, description="each query that answered no series or with warnings, in Prometheus' words"
    )

    def consistently_high(self, fraction: float) -> bool:
        return self.window_points > 0 and self.window_points_high >= fraction * self.window_points

    def p95_text(self) -> str:
        return "no data" if self.p95_seconds is None else f"{self.p95_seconds:.2f}s"

    def figures(self) -> list[str]:
        """One line per figure, for the timeline and Slack."""

        def per(values: dict[str, float], fmt: str) -> str:
            return (
                ", ".join(f"{k or '?'} {format(v, fmt)}" for k, v in sorted(values.items()) if not math.isnan(v))
                or "no data"
            )

        return [
            f"p95 latency {self.p95_text()} ({self.window_points_high}/{self.window_points} points of the window above the SLO)",
            f"p95 by service: {per(self.p95_by_service, '.2f')}",
            f"queue depth: {per(self.queue_depth, '.0f')}",
            f"GPU utilization %: {per(self.gpu_percent, '.0f')}; memory utilization %: {per(self.memory_percent, '.0f')}",
            f"request rate /s: {per(self.request_rate, '.1f')}",
            f"cache hit ratio: {per(self.cache_hit_ratio, '.0%')}; KV-cache evictions in the window: "
            + ("no data" if self.evictions_in_window is None else f"{self.evictions_in_window:.0f}"),
            f"model load time s: {per(self.model_load_seconds, '.0f')}",
            f"OOMKilled events: {len(self.oom_kills)}" + (f" (latest: {self.oom_kills[0]})" if self.oom_kills else ""),
        ]


class LatencyVerdict(BaseModel):
    """One verification pass: p95 back under the SLO and the causes acted on cleared."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    p95_seconds: float | None
    still: list[str] = Field(default_factory=list)  # what has not cleared, in the runbook's words

    @property
    def verified(self) -> bool:
        return self.p95_seconds is not None and not self.still

    def __str__(self) -> str:
        p95 = "no data" if self.p95_seconds is None else f"{self.p95_seconds:.2f}s"
        return f"p95 {p95}" + (f"; still: {', '.join(self.still)}" if self.still else "")


def recorded_replicas(changes: list[ClusterChange]) -> list[ClusterChange]:
    """Per Deployment, the first scale: its `before` is the replicas the incident found. Newest first."""
    first: dict[tuple[str | None, str], ClusterChange] = {}
    for c in changes:
        if (
            c.kind == "Deployment"
            and c.field == "spec.replicas"
            and c.before != c.after
            and not c.dry_run
            and not c.action.startswith("rollback")
        ):
            first.setdefault((c.namespace, c.name), c)
    return list(reversed(first.values()))
