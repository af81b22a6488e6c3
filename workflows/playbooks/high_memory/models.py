"""SOP-002's vocabulary: its input and timings, what a top pod and a verification pass look like,
its gate, step keys and patch id, and the pure helpers the steps share. The steps themselves are in
workflows/playbooks/high_memory/playbook.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from workflows.incident import IncidentInput, SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.kube.pods_models import MemoryEvent, PodMemory, PodMemoryLimits
    from activities.models import ClusterChange

GATE_HALVE_REPLICAS = "halve-replicas"
RELIEF = "immediate-relief"
SCALE = "scale"
ROLLBACK = "rollback"


class MemoryTimings(SopTimings):
    """How long SOP-002 waits, polls and allows each call; SOP values by default, shorter for drills."""

    cluster_waits = (
        "relief_settle_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
        "oom_quiet_minutes",
    )

    model_config = ConfigDict(extra="forbid")

    relief_settle_seconds: float = Field(
        120, ge=0, description="how long the immediate relief gets to work before scaling is judged necessary"
    )
    verification_timeout_seconds: float = Field(900, gt=0, description="bounded wait for a verified recovery")
    verification_poll_seconds: float = Field(30, gt=0)
    oom_quiet_minutes: float = Field(10, gt=0, description="the SOP's 'no OOM events in last 10 minutes'")


class ServingLimits(BaseModel):
    """The SOP's relief patch: `{"spec":{"serving":{"batchSize":1,"maxConcurrency":2}}}`."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(1, ge=1)
    max_concurrency: int = Field(2, ge=1)

    def patch(self) -> dict[str, int]:
        return {"batchSize": self.batch_size, "maxConcurrency": self.max_concurrency}


class HighMemoryInput(IncidentInput):
    """IncidentInput plus SOP-002's knobs, all defaulted: a plain IncidentInput starts it too."""

    top_pods: int = Field(10, ge=1, description="kubectl top pods -A --sort-by=memory | head -10")
    limits_of_top: int = Field(5, ge=1, description="the SOP checks the limits of the top five")
    relief: ServingLimits = Field(default_factory=ServingLimits)
    scale_above_replicas: int = Field(2, ge=1, description="LLMDeployments with more replicas are halved")
    pressure_percent: float = Field(
        90, gt=0, le=100, description="memory use of its limit that still counts as pressure (LLMDMemoryPressure: > 90)"
    )
    timings: MemoryTimings = Field(default_factory=MemoryTimings)


class PodPressure(BaseModel):
    """One top pod: its memory and, where it has one, its limit."""

    pod: PodMemory
    limits: PodMemoryLimits | None = None

    @property
    def percent(self) -> float | None:
        limit = self.limits.limit_bytes if self.limits else None
        return 100 * self.pod.memory_bytes / limit if limit else None

    def __str__(self) -> str:
        limit = self.limits.limit_bytes if self.limits else None
        of = f" of {round(limit / 2**20)}Mi ({self.percent:.0f}%)" if limit else " (no limit)"
        return f"{self.pod.namespace}/{self.pod.name} {self.pod.mib}Mi{of}"


class MemoryVerdict(BaseModel):
    """One verification pass: memory down (and under the pressure threshold) and no recent OOM kill."""

    top_total_mib: int
    baseline_total_mib: int
    over_threshold: list[str] = Field(default_factory=list)
    recent_ooms: list[str] = Field(default_factory=list)

    @property
    def memory_down(self) -> bool:
        return self.top_total_mib < self.baseline_total_mib and not self.over_threshold

    @property
    def verified(self) -> bool:
        return self.memory_down and not self.recent_ooms

    def __str__(self) -> str:
        parts = [f"top pods use {self.top_total_mib}Mi (was {self.baseline_total_mib}Mi)"]
        if self.over_threshold:
            more = f" and {len(self.over_threshold) - 2} more" if len(self.over_threshold) > 2 else ""
            parts.append(f"still near the limit: {', '.join(self.over_threshold[:2])}{more}")
        parts.append(
            f"{len(self.recent_ooms)} OOM events in the window, latest: {self.recent_ooms[0]}"
            if self.recent_ooms
            else "no OOM kill in the window"
        )
        return "; ".join(parts)


def recorded_originals(changes: list[ClusterChange]) -> list[ClusterChange]:
    """Per LLMDeployment field, the first change: its `before` is the value the incident found.

    Newest first, so a rollback undoes the scale before the serving patch, as a human would.
    """
    first: dict[tuple[str | None, str, str], ClusterChange] = {}
    for c in changes:
        # before == after: the value was already there, nothing to restore. (A retried write that
        # found its own earlier attempt reports applied=False but still carries the original.)
        if c.kind == "LLMDeployment" and c.before != c.after and not c.dry_run and not c.action.startswith("rollback"):
            first.setdefault((c.namespace, c.name, c.field), c)
    return list(reversed(first.values()))


def event_line(e: MemoryEvent) -> str:
    """`HH:MM:SS <kind> <namespace>/<name> <reason> (x<count>): <message, first 80 chars>`, for Slack and the timeline."""
    when = e.last_seen.strftime("%H:%M:%S") if e.last_seen else "?"
    return f"{when} {e.kind} {e.namespace}/{e.name} {e.reason} (x{e.count}): {e.message[:80]}"
