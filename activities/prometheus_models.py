"""Prometheus queries as the runbooks type them (`promtool query instant|range`), and their answers.

Pure pydantic, so workflows import them without httpx (activities/prometheus.py asks Prometheus).
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from activities.models import Request


class InstantQuery(Request):
    """`promtool query instant EXPR`: `GET /api/v1/query?query=EXPR[&time=T]`."""

    expr: str = Field(min_length=1, description="PromQL")
    time: datetime | None = Field(None, description="evaluation time; None: now (Prometheus' clock)")
    timeout_seconds: float = Field(10, gt=0, description="Prometheus' own query timeout, and ours")


class RangeQuery(Request):
    """`promtool query range EXPR --start --end --step`: `GET /api/v1/query_range`."""

    expr: str = Field(min_length=1, description="PromQL")
    start: datetime
    end: datetime
    step_seconds: float = Field(60, gt=0, description="resolution, seconds (the runbook's `--step 1m`)")
    timeout_seconds: float = Field(10, gt=0)


class _Answer(BaseModel):
    # NaN ("no data", e.g. histogram_quantile over no requests) and +Inf (beyond the top bucket)
    # are answers too: they travel as JSON constants instead of becoming null.
    model_config = ConfigDict(ser_json_inf_nan="constants")


class Sample(_Answer):
    """One series' value at one instant (a vector element); NaN/±Inf kept as floats."""

    labels: dict[str, str] = Field(default_factory=dict)
    value: float
    at: datetime


class Series(_Answer):
    """One series over a range (a matrix element): (time, value) points, oldest first."""

    labels: dict[str, str] = Field(default_factory=dict)
    points: list[tuple[datetime, float]] = Field(default_factory=list)

    def values(self) -> list[float]:
        return [v for _, v in self.points if not math.isnan(v)]


def _doubts(expr: str, empty: bool, warnings: list[str], infos: list[str]) -> str | None:
    """Why an answer cannot be read as health, in Prometheus' words; None when it can."""
    why = [f"Prometheus warned: {w}" for w in warnings] + [f"Prometheus noted: {i}" for i in infos]
    if empty:
        why.insert(0, f"no series: `{expr}` returned an empty result (no data is not health)")
    return "; ".join(why) or None


class InstantResult(_Answer):
    """An instant query's answer: a vector (a scalar answer is one sample without labels).
    `warnings` and `infos` are Prometheus' (or a Thanos querier's: a partial response names the
    store that did not answer)."""

    expr: str
    samples: list[Sample] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    infos: list[str] = Field(default_factory=list)

    def could_not_tell(self) -> str | None:
        """Why this answer is not evidence (no series, a warning, a partial response), or None."""
        return _doubts(self.expr, not self.samples, self.warnings, self.infos)

    def first(self) -> float | None:
        """The value of the only (or first) sample; None when the vector is empty or NaN (no data)."""
        value = self.samples[0].value if self.samples else None
        return None if value is None or math.isnan(value) else value

    def by(self, label: str) -> dict[str, float]:
        """Sample values keyed by one label's value (e.g. `service`)."""
        return {s.labels.get(label, ""): s.value for s in self.samples}


class RangeResult(_Answer):
    """A range query's answer: a matrix."""

    expr: str
    series: list[Series] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    infos: list[str] = Field(default_factory=list)

    def could_not_tell(self) -> str | None:
        """Why this answer is not evidence (no series or no point, a warning), or None."""
        return _doubts(self.expr, not any(s.values() for s in self.series), self.warnings, self.infos)
