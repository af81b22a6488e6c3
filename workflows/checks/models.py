"""The scheduled checks' inputs and results, and the maintenance window's arithmetic.

Pure pydantic and stdlib: the configuration (settings/), the schedules
(worker/schedule_specs.py) and the check workflows (workflows/checks/workflows.py) all import it.

Seeds: 002 "Automated GPU health monitoring" (nvidia-smi every 15 minutes, "N/A" or "ERR" →
the SRE team is told), 002 "Automated model health checking" (every 5 minutes), 002 "Morning
Health Check" and 003 "Morning Checks"; 003 "Monthly Maintenance Schedule" (the window).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GPU_HEALTH_CHECK = "gpu-health-check"
MODEL_HEALTH_CHECK = "model-health-check"
MORNING_HEALTH_CHECK = "morning-health-check"
CHECK_IDS = (GPU_HEALTH_CHECK, MODEL_HEALTH_CHECK, MORNING_HEALTH_CHECK)

# The label that says an alert came from a schedule, not from Prometheus (timeline, report, UI).
SOURCE_LABEL = "runbooks_source"
SOURCE_SCHEDULE = "schedule"
# Seed 002 names no rule for either check; these are the alerts of the playbooks that own the
# fault (seed 002's GPU hardware failure, one incident per node; SOP-004, one per LLMDeployment),
# so a finding joins the incident an alert of the same fault would have opened.
GPU_FINDING_ALERT = "LLMDGPUHardwareError"
MODEL_FINDING_ALERT = "LLMDeploymentNotReady"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. America/Los_Angeles)") from None
    return name


def _clock_time(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 2:00 as the sexagesimal integer 120: refuse it rather than
    # let pydantic read 120 as 00:02:00.
    if isinstance(value, (int, float)):
        raise ValueError('write times as quoted "HH:MM" strings (YAML reads unquoted 2:00 as a number)')
    return value


class MaintenanceWindow(BaseModel):
    """Seed 003: "First Saturday of each month, 2:00 AM - 6:00 AM PST" (America/Los_Angeles: PST
    in winter, PDT in summer). Within it the checks that would page do not run.

    `week_of_month` n: the n-th such weekday of the month (days 7n-6 .. 7n). `end` is on the same
    day and after `start`.
    """

    model_config = ConfigDict(extra="forbid")

    weekday: Weekday = "saturday"
    week_of_month: int = Field(1, ge=1, le=5)
    start: time = time(2, 0)
    end: time = time(6, 0)
    time_zone: str = "America/Los_Angeles"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return _clock_time(value)

    @field_validator("time_zone")
    @classmethod
    def _zone_ok(cls, value: str) -> str:
        return _zone(value)

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end:%H:%M} must be after start {self.start:%H:%M} on the same day")
        return self

    @property
    def days(self) -> tuple[int, int]:
        """The days of the month the weekday's n-th occurrence can fall on (first: 1..7)."""
        return 7 * self.week_of_month - 6, 7 * self.week_of_month

    def contains(self, at: datetime) -> bool:
        """Whether the aware datetime `at` falls inside the window (start inclusive, end exclusive)."""
        local = at.astimezone(ZoneInfo(self.time_zone))
        first, last = self.days
        return (
            WEEKDAYS[local.weekday()] == self.weekday
            and first <= local.day <= last
            and self.start <= local.time().replace(tzinfo=None) < self.end
        )

    def next_start(self, after: datetime) -> datetime:
        """The next time the window opens at or after the aware datetime `after` (in the window's zone)."""
        zone = ZoneInfo(self.time_zone)
        local = after.astimezone(zone)
        year, month = local.year, local.month
        for _ in range(14):
            for day in range(self.days[0], self.days[1] + 1):
                try:
                    candidate = datetime(year, month, day, self.start.hour, self.start.minute, tzinfo=zone)
                except ValueError:  # a fifth weekday past the month's end
                    break
                if WEEKDAYS[candidate.weekday()] == self.weekday and candidate >= local:
                    return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        raise ValueError("no window in the next year")  # unreachable for weeks 1-4

    def calendar_slices(self) -> list[WindowSlice]:
        """The window as calendar ranges (what a Temporal Schedule's `skip` takes): whole hours
        in one range, a partial first and last hour in their own."""
        (sh, sm), (eh, em) = (self.start.hour, self.start.minute), (self.end.hour, self.end.minute)
        if sh == eh:
            return [WindowSlice(hours=(sh, sh), minutes=(sm, em - 1))]
        slices = []
        if sm:
            slices.append(WindowSlice(hours=(sh, sh), minutes=(sm, 59)))
        first_whole, last_whole = sh + (1 if sm else 0), eh - 1
        if first_whole <= last_whole:
            slices.append(WindowSlice(hours=(first_whole, last_whole), minutes=(0, 59)))
        if em:
            slices.append(WindowSlice(hours=(eh, eh), minutes=(0, em - 1)))
        return slices

    def describe(self) -> str:
        nth = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}[self.week_of_month]
        return f"{nth} {self.weekday.title()} of the month, {self.start:%H:%M}-{self.end:%H:%M} {self.time_zone}"


class WindowSlice(BaseModel):
    """Inclusive hour and minute ranges on the window's day."""

    hours: tuple[int, int]
    minutes: tuple[int, int]


# ---- inputs ------------------------------------------------------------------------------------


class _CheckInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ops_channel: str = Field("#llm-platform", description="where a check that cannot run says so (seed 003)")
    kube_call_timeout_seconds: float = Field(30, gt=0, description="one Kubernetes API read, per attempt")


class GpuHealthCheckInput(_CheckInput):
    node_selector: str | None = Field(None, description="GPU nodes; None: the worker's (nvidia.com/gpu.present=true)")
    probe_timeout_seconds: float = Field(120, gt=0, description="one nvidia-smi probe pod, start to finish")


class ModelHealthCheckInput(_CheckInput):
    namespace: str | None = Field(None, description="LLMDeployments of this namespace; None: all")
    probe_timeout_seconds: float = Field(10, gt=0, description="one model endpoint's answer")


class MorningHealthCheckInput(_CheckInput):
    time_zone: str = Field("America/Los_Angeles", description="the report's dates and times")
    log_lines: int = Field(500, ge=1, le=5000, description="recent log lines read per model for errors")


# ---- findings and results ----------------------------------------------------------------------


class FindingAlert(BaseModel):
    """A finding as an Alertmanager alert, so it opens or joins its scope's incident as one would."""

    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime
    fingerprint: str


def finding_alert(
    check: str, alertname: str, labels: dict[str, str], summary: str, description: str, at: datetime
) -> FindingAlert:
    """The alert for one finding: labelled as coming from the schedule, with a fingerprint stable
    per check and scope, so the next run's finding repeats (joins) instead of counting twice."""
    full = {"alertname": alertname, **labels, SOURCE_LABEL: SOURCE_SCHEDULE, "schedule": check}
    key = "\n".join(f"{k}={v}" for k, v in sorted(full.items()))
    return FindingAlert(
        alertname=alertname,
        labels=full,
        starts_at=at,
        annotations={"summary": summary[:400], "description": description[:4000]},
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
    )


class FindingsReport(BaseModel):
    """The check's findings, to open or join incidents (activities/temporal_incidents.py)."""

    model_config = ConfigDict(extra="forbid")

    check: str
    alerts: list[FindingAlert] = Field(min_length=1)


class IncidentJoined(BaseModel):
    """What the webhook would have answered for one alert: the incident it `started` or `joined`."""

    incident: str
    alertname: str
    runbook: str
    action: str
    scope: str = ""


class OpenIncidentsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=500)


class OpenIncident(BaseModel):
    incident: str
    runbook: str | None = None
    severity: str | None = None
    status: str | None = None
    alertname: str | None = None
    started_at: datetime | None = None


class NodeCheck(BaseModel):
    node: str
    healthy: bool
    probed: bool = Field(description="nvidia-smi ran to the end on the node")
    reasons: list[str] = Field(default_factory=list)


class GpuHealthCheckResult(BaseModel):
    checked_at: datetime
    nodes: list[NodeCheck] = Field(default_factory=list)
    incidents: list[IncidentJoined] = Field(default_factory=list)
    could_not_check: list[str] = Field(default_factory=list, description="nodes or steps the check could not do")

    @property
    def findings(self) -> list[NodeCheck]:
        return [n for n in self.nodes if n.probed and not n.healthy]


class ModelCheck(BaseModel):
    namespace: str
    name: str
    url: str | None
    ok: bool
    answer: str = Field(description="HTTP status or why no answer came")
    elapsed_ms: float = 0


class ModelHealthCheckResult(BaseModel):
    checked_at: datetime
    models: list[ModelCheck] = Field(default_factory=list)
    incidents: list[IncidentJoined] = Field(default_factory=list)
    could_not_check: list[str] = Field(default_factory=list)


class ReportLine(BaseModel):
    """One thing the report lists: a deployment, a GPU node, a pod."""

    name: str
    detail: str
    ok: bool


class MorningReport(BaseModel):
    """Seed 002's morning health check and seed 003's morning checks, as one Slack message."""

    checked_at: datetime
    time_zone: str
    deployments: list[ReportLine] = Field(default_factory=list)
    gpu_nodes: list[ReportLine] = Field(default_factory=list)
    gpus_allocatable: int = 0
    gpus_capacity: int = 0
    gpus_in_use: int = 0
    pods_not_running: list[ReportLine] = Field(default_factory=list)
    error_lines: int = 0
    error_lines_read_from: int = Field(0, description="models whose recent log lines were read")
    open_incidents: list[OpenIncident] = Field(default_factory=list)
    latency: str = "not measured: no Prometheus query is configured yet"
    could_not_check: list[str] = Field(default_factory=list)
    blocks: list[dict[str, Any]] = Field(default_factory=list, description="the Slack message, Block Kit")
    text: str = Field("", description="the message's plain-text fallback")
    slack_ts: str | None = None

    @property
    def healthy(self) -> bool:
        return (
            all(d.ok for d in self.deployments)
            and all(n.ok for n in self.gpu_nodes)
            and not self.pods_not_running
            and not self.open_incidents
            and not self.could_not_check
        )


def local_time(at: datetime, zone: str) -> datetime:
    return at.astimezone(ZoneInfo(zone))
