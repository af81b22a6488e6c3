"""The contract of the coordinator: holds on objects, blast-radius caps, and the alert ledger.

One `Coordinator` workflow per namespace and task queue sees every incident's writes, so two
incidents never act on one object at once and the caps count across all of them; its ledger
remembers which alerts' incidents closed long after those runs are gone (seed issue 8, parts 4
and 9). Names here are part of running histories: add fields with defaults, never rename.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


COORDINATOR_WORKFLOW_TYPE = "Coordinator"
COORDINATOR_ID = "runbooks-coordinator"

# Update, signal and query names of the coordinator.
UPDATE_CLAIM = "claim"
UPDATE_RELEASE = "release"
UPDATE_ALERTS_CLOSED = "alerts_closed"
UPDATE_ALERT_VERDICT = "alert_verdict"
SIGNAL_ALERT_RESOLVED_EARLY = "alert_resolved_early"
# An incident's closing bookkeeping, fire-and-forget: the server lets only 10 updates wait on one
# workflow, and a storm closes many incidents at once.
SIGNAL_RELEASE = "release_signalled"
SIGNAL_ALERTS_CLOSED = "alerts_closed_signalled"
QUERY_COORDINATOR_STATE = "coordinator_state"
QUERY_ALERT_VERDICT = "alert_verdict_of"
# Sent by the coordinator TO an incident that holds an object another incident wanted.
SIGNAL_COORDINATION_NOTE = "coordination_note"

Write = Literal[
    "restart", "cordon", "uncordon", "drain", "evict", "delete", "scale-down", "scale-up", "patch", "rollback"
]


def coordinator_workflow_id(task_queue: str = "llm-runbooks") -> str:
    """`runbooks-coordinator` on the default task queue; one per other queue (tests, staging workers)."""
    # "llm-runbooks" is workflows.incident.models.TASK_QUEUE (not imported: models imports this module).
    return COORDINATOR_ID if task_queue == "llm-runbooks" else f"{COORDINATOR_ID}@{task_queue}"


class ObjectKey(BaseModel):
    """A Kubernetes object a write touches; str form `Deployment llm/llama`, `Node gpu-node-1`."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(min_length=1, description="Kubernetes kind: Deployment, Node, LLMDeployment, Pod, …")
    namespace: str | None = Field(None, description="None for cluster-scoped objects (Node)")
    name: str = Field(min_length=1)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


class Caps(BaseModel):
    """Blast-radius caps across all open incidents. A write beyond a cap becomes an approval gate."""

    restarts_per_object_per_hour: int = Field(1, ge=0, description="restarts of one object in any 60 minutes")
    cordons_without_approval: int = Field(
        1, ge=0, description="nodes cordoned by automation at once, across all incidents"
    )
    max_replica_share_removed: float = Field(
        0.5, ge=0, le=1, description="share of one workload's replicas removed in any 60 minutes"
    )
    cordon_counts_for_hours: float = Field(
        24,
        gt=0,
        description="a cordon counts until its uncordon is claimed, or this long (a human may "
        "uncordon by hand); the coordinator keeps writes for its own input's value, so a claim cannot lengthen it",
    )


class WriteClaim(BaseModel):
    """An incident asks to write `object` (update `claim`). Granted means: go ahead, it is counted.

    `incident_id` is the incident's workflow id: the coordinator signals it when another incident
    waits for what it holds. `claim_id` makes a retried claim answer the same without counting
    twice (CoordinationActivities fills it from the calling activity when left empty).
    """

    incident_id: str = Field(min_length=1)
    runbook: str = Field(min_length=1)
    object: ObjectKey
    write: Write
    replicas_removed: int = Field(0, ge=0, description="replicas this write takes away (scale-down, evict, delete)")
    replicas_total: int = Field(0, ge=0, description="the workload's desired replicas before the write")
    override_cap: bool = Field(False, description="a human approved going beyond a cap (the gate's answer)")
    hold_seconds: float = Field(3600, gt=0, description="how long the hold lasts unless released first")
    claim_id: str | None = None
    caps: Caps | None = Field(None, description="the incident's configured caps; None: the coordinator's")


class ClaimAnswer(BaseModel):
    """Granted, or why not: `held_by` another open incident (wait, bounded, or ask), or `capped`.

    `capped` is the sentence an SRE reads at the approval gate, e.g.
    "1 restart of Deployment llm/llama in the last hour (cap 1)".
    """

    granted: bool
    held_by: str | None = None
    held_by_runbook: str | None = None
    held_since: datetime | None = None
    capped: str | None = None

    @property
    def reason(self) -> str:
        """One line for the waiting incident's timeline."""
        if self.granted:
            return "granted"
        if self.held_by:
            return f"held by incident {self.held_by} ({self.held_by_runbook})"
        return f"capped: {self.capped}"


class Hold(BaseModel):
    """An open incident's claim on an object, from its first granted write until release or expiry."""

    incident_id: str
    runbook: str
    write: Write
    since: datetime
    expires_at: datetime
    waiters: list[str] = Field(
        default_factory=list, description="incidents already told about (and the holder told of)"
    )


class CountedWrite(BaseModel):
    """A granted write, remembered for the caps' windows."""

    object: str
    write: Write
    at: datetime
    incident_id: str
    claim_id: str | None = None
    replicas_removed: int = 0
    override_cap: bool = False


class CoordinationNote(BaseModel):
    """Signal `coordination_note` to the holder: another incident waited for an object it holds."""

    holder: str
    object: ObjectKey
    write: Write
    waiting_incident: str
    waiting_runbook: str
    at: datetime

    @property
    def sentence(self) -> str:
        return (
            f"incident {self.waiting_incident} ({self.waiting_runbook}) wanted to {self.write} "
            f"{self.object}, which this incident holds: it waits or asks a human"
        )


class ReleaseRequest(BaseModel):
    """Drop an incident's holds (update `release`); its counted writes still count for their window."""

    incident_id: str = Field(min_length=1)
    objects: list[ObjectKey] | None = Field(None, description="None: every hold of the incident")


class AlertKey(BaseModel):
    """One firing of one alert: Alertmanager's fingerprint and its startsAt."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str = Field(min_length=1)
    starts_at: datetime

    @field_validator("starts_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("starts_at needs a timezone (Alertmanager sends RFC 3339 with an offset)")
        return value.astimezone(timezone.utc)

    def __str__(self) -> str:
        return f"{self.fingerprint}@{self.starts_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


class AlertsClosed(BaseModel):
    """Update `alerts_closed`: these alerts' incident has closed; a repeat must not run it again."""

    incident_id: str = Field(min_length=1)
    keys: list[AlertKey] = Field(min_length=1)


class AlertResolvedEarly(BaseModel):
    """Signal `alert_resolved_early`: a resolved notification came with no incident for it (yet)."""

    key: AlertKey
    received_at: datetime | None = None


class LedgerEntry(BaseModel):
    closed_by: str | None = None  # None: resolved before any firing was seen
    at: datetime


class AlertVerdict(BaseModel):
    """What the ledger knows of an alert firing: `verdict` is "new", "closed-by:<incident id>" or
    "resolved-before-firing"; only "new" may start (or join) an incident that acts."""

    verdict: str
    closed_by: str | None = None
    recorded_at: datetime | None = None

    @property
    def is_new(self) -> bool:
        return self.verdict == "new"


class CoordinatorState(BaseModel):
    """Everything the coordinator remembers; carried across continue-as-new."""

    holds: dict[str, Hold] = Field(default_factory=dict, description="str(ObjectKey) -> hold")
    writes: list[CountedWrite] = Field(default_factory=list)
    ledger: dict[str, LedgerEntry] = Field(default_factory=dict, description="str(AlertKey) -> entry, oldest first")


class CoordinatorInput(BaseModel):
    """Start (or continue-as-new) of the coordinator. Caps sent with a claim take precedence."""

    caps: Caps = Field(default_factory=Caps)
    ledger_retention_days: float = Field(14, gt=0, description="how long a closed alert stays known")
    ledger_max_entries: int = Field(5000, ge=1, description="oldest entries go first beyond this")
    continue_as_new_after: int = Field(500, ge=1, description="updates and signals per run")
    state: CoordinatorState | None = None
