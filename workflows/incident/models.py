"""The contract every incident workflow shares with the triggers, the CLI and the UI.

Names here are part of running histories: add fields with defaults, never rename.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from workflows.incident.coordination_models import Caps

TASK_QUEUE = "llm-runbooks"

Severity = Literal["P0", "P1", "P2", "P3"]
IncidentStatus = Literal["open", "acknowledged", "mitigating", "awaiting-approval", "resolved", "handed-over", "failed"]

# Signal, update and query names every playbook answers to (registered by the shared
# incident machinery, so triggers and the CLI never need to know which playbook runs).
SIGNAL_ALERT_RESOLVED = "alert_resolved"
SIGNAL_ALERT_REPEATED = "alert_repeated"  # before scopes: a repeat of the incident's one alert
SIGNAL_ALERT_FIRING = "alert_firing"  # an alert of the incident's scope fires: it joins (or repeats)
SIGNAL_HUMAN_ACTION = "human_action"
SIGNAL_ROLLBACK = "request_rollback"
UPDATE_DECIDE = "decide"
UPDATE_HUMAN_ACTION = "act"
QUERY_TIMELINE = "timeline"
QUERY_STATE = "state"


class Alert(BaseModel):
    """One Alertmanager alert as the incident remembers it."""

    alertname: str
    fingerprint: str
    starts_at: datetime
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generator_url: str | None = None

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.alertname


class EscalationStep(BaseModel):
    after_minutes: float = Field(gt=0, description="measured from the alert's startsAt")
    notify: str = Field(min_length=1, description="who is paged, in the SOP's words")
    level: int = Field(ge=1)


class UnservedCluster(BaseModel):
    """The alert named a cluster no worker serves: the incident acts nowhere and tells on-call."""

    cluster: str = Field(min_length=1, description="the cluster the alert named")
    label: str = Field(min_length=1, description="the label that named it (clusters.label)")
    served: list[str] = Field(default_factory=list, description="the clusters that are served")


class PagingPlan(BaseModel):
    """How one incident pages through PagerDuty (settings/pagerduty.py `plan_for`); no routing keys
    here (they stay on the worker). IncidentInput.paging None: Slack only."""

    severities: list[Severity] = Field(
        default_factory=list, description="these severities page at once: one alert, dedup_key = the incident id"
    )
    roles: list[str] = Field(default_factory=list, description="escalation roles with a PagerDuty service")
    source: str = Field(min_length=1, description="PagerDuty's payload.source: the cluster")


class IncidentInput(BaseModel):
    """What starts any playbook. One model, so it can grow without breaking histories."""

    model_config = ConfigDict(extra="forbid")

    alert: Alert
    runbook: str = Field(min_length=1, description="playbook name as routing and the CLI use it")
    severity: Severity | None = None  # None: the playbook's default
    namespace: str | None = None  # the namespace the alert points at, when it does
    incident_commander: str = "on-call SRE"
    slack_channel: str | None = None
    # Per gate (or "*") the users allowed to decide; empty means anyone may.
    approvers: dict[str, list[str]] = Field(default_factory=dict)
    escalation: list[EscalationStep] | None = None  # None: the playbook's policy
    # Role as the marks name it ("Senior SRE") -> who that is; added to each page for that role.
    escalation_contacts: dict[str, list[str]] = Field(default_factory=dict)
    approval_timeout_minutes: float | None = Field(default=None, gt=0)
    ui_url: str | None = None  # Temporal Web UI base, for links in messages
    # The scope this incident acts on (workflows/incident/scope.py): every alert of it joins this incident.
    scope: str | None = None
    scope_kind: str | None = None
    # "shadow": every write is a server-side dry run and recorded as "would have"; the cluster is untouched.
    mode: Literal["act", "shadow"] = "act"
    # True (the triggers always set it): writes are claimed through the coordinator (holds across
    # incidents, blast-radius caps) and the first alert is checked against the alert ledger.
    coordinated: bool = False
    caps: Caps | None = None  # None: the coordinator's defaults
    hold_wait_seconds: float = Field(
        default=120, gt=0, description="how long a write waits for another incident's hold"
    )
    # Alerts that arrived for this scope as the previous incident closed: they join at once.
    joined_alerts: list[Alert] = Field(default_factory=list)
    drill: bool = False
    # Drills only: the simulator runs this many times faster, so the playbook's waits on the
    # cluster shrink with it (SopTimings.for_time_scale). Always 1 for a real alert.
    time_scale: float = Field(default=1.0, ge=1.0)
    # The cluster the alert came from (settings/clusters.py); the incident runs on its task queue, so
    # only its workers act. None: an incident opened before clusters had names.
    cluster: str | None = None
    # Set when no worker serves the cluster the alert named: nothing is run, on-call is told.
    unserved_cluster: UnservedCluster | None = None
    # PagerDuty paging (workflows/incident/paging.py); None: Slack only, as before PagerDuty.
    paging: PagingPlan | None = None


class SopTimings(BaseModel):
    """A playbook's waits, with its SOP's values as defaults.

    `cluster_waits` names the waits on the cluster itself (rollouts, settling, polling). A drill on
    the simulator shortens only those; API timeouts and the time humans get to decide stay as is.
    """

    cluster_waits: ClassVar[tuple[str, ...]] = ()

    kube_call_timeout_seconds: float = Field(60, gt=0, description="one Kubernetes API activity, per attempt")
    dependency_retry_seconds: float = Field(
        180,
        gt=0,
        description="how long a query keeps retrying a dependency that answers overloaded or not at all "
        "(Prometheus' 503 timeout, a querier restarting), seconds of backoff in all: minutes, then it gives up",
    )
    approval_timeout_minutes: float | None = Field(
        None, gt=0, description="None: IncidentInput.approval_timeout_minutes, else the machinery's default"
    )

    @property
    def kube_timeout(self) -> timedelta:
        """One Kubernetes API activity, per attempt (`kube_call_timeout_seconds`)."""
        return timedelta(seconds=self.kube_call_timeout_seconds)

    @property
    def approval_timeout(self) -> timedelta | None:
        """How long a gate waits for a decision; None: the incident's approval timeout."""
        return timedelta(minutes=self.approval_timeout_minutes) if self.approval_timeout_minutes else None

    def for_time_scale(self, time_scale: float) -> Self:
        if time_scale <= 1:
            return self
        return self.model_copy(update={name: getattr(self, name) / time_scale for name in self.cluster_waits})


class RollbackRequest(BaseModel):
    """Asks a playbook to undo its changes, restoring the recorded originals (signal `request_rollback`)."""

    by: str = Field(min_length=1)
    reason: str | None = None

    @property
    def why(self) -> str:
        """The rollback's reason as timelines and Slack say it: `requested by U1: error rate up`."""
        return f"requested by {self.by}" + (f": {self.reason}" if self.reason else "")


class AlertResolved(BaseModel):
    ends_at: datetime
    source: str = "alertmanager"
    # Which alert resolved. None (older triggers): the incident's alerts, all of them.
    fingerprint: str | None = None
    starts_at: datetime | None = None


class AlertFiring(BaseModel):
    """An alert of the incident's scope fired (signal `alert_firing`, sent with the start)."""

    alert: Alert
    received_at: datetime


class AlertRepeated(BaseModel):
    received_at: datetime


class Decision(BaseModel):
    """An approval gate's answer, from Slack, the CLI or the Temporal Web UI."""

    gate: str = Field(min_length=1)
    approved: bool
    by: str = Field(min_length=1)
    comment: str | None = None
    via: Literal["slack", "cli", "ui", "drill"] = "ui"


class HumanAction(BaseModel):
    action: Literal["acknowledge", "note", "escalate", "resolve", "hand-over"]
    by: str = Field(min_length=1)
    note: str | None = None


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def incident_id(runbook: str, fingerprint: str, starts_at: datetime) -> str:
    """playbook + fingerprint + startsAt: a new firing after a resolve is a new incident."""
    ts = starts_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{_UNSAFE.sub('-', runbook)}-{_UNSAFE.sub('-', fingerprint)}-{ts}"
