"""What an incident is made of: its policy, its state (the `state` query) and small helpers.

The report and the Slack side read the state from here without importing the machinery that
changes it; `StatusBoard` keeps what the state shows (search attributes, current details) in step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError

from workflows.incident import search
from workflows.incident.approval import ApprovalGate
from workflows.incident.escalation import FIRST_RESPONDER, EscalationPolicy
from workflows.incident.models import (
    Alert,
    EscalationStep,
    IncidentInput,
    IncidentStatus,
    Severity,
    UnservedCluster,
)
from workflows.incident.report import clock
from workflows.incident.severity import escalation_marks
from workflows.incident.timeline import EscalationRecord

with workflow.unsafe.imports_passed_through():
    from activities.models import ClusterChange
    from activities.slack_models import SlackMessageRef


class ScopeAlert(BaseModel):
    """One alert of the incident's scope: when it fired, joined, repeated and resolved."""

    alertname: str
    fingerprint: str
    starts_at: datetime
    labels: dict[str, str] = Field(default_factory=dict)
    joined_at: datetime
    resolved_at: datetime | None = None
    repeats: int = 0

    @property
    def firing(self) -> bool:
        return self.resolved_at is None


class PagedAlert(BaseModel):
    """One PagerDuty alert the incident raised (workflows/incident/paging.py)."""

    dedup_key: str
    route: str = Field(description='the severity ("P0") or the role ("Senior SRE") whose service it went to')
    status: Literal["triggering", "triggered", "acknowledged", "resolved", "failed"] = "triggering"


@dataclass(frozen=True)
class PlaybookPolicy:
    """What differs between playbooks: names, default severity, escalation marks, wording."""

    runbook: str
    title: str
    default_severity: Severity
    # The SOP's own marks; None: the severity's (seed 001's escalation time along seed 003's matrix).
    escalation: EscalationPolicy | None = field(default_factory=EscalationPolicy.standard)
    # A playbook whose marks changed after its release: the new `escalation` holds only for runs that
    # record this patch (workflow.patched); a run from before it keeps the severity's marks.
    escalation_patch: str | None = None
    first_responder: str = FIRST_RESPONDER  # who has the incident before the first mark
    # Every approval gate kind the playbook may ask (`approvals.by_gate` is keyed by these).
    gates: tuple[str, ...] = ()
    stakeholder_updates: bool = True
    impact: str | None = None  # stakeholder updates' "Impact:"; default: the severity's description
    resolution_wait: timedelta = timedelta(hours=8)  # how long run() waits for a human after the body ends unresolved


class IncidentState(BaseModel):
    """The `state` query: what an incident commander needs at a glance."""

    incident_id: str
    runbook: str
    title: str
    severity: Severity
    status: IncidentStatus = "open"
    alert: Alert
    namespace: str | None = None
    incident_commander: str
    opened_at: datetime
    escalation_level: int = 0
    escalated_to: str = FIRST_RESPONDER
    escalations: list[EscalationRecord] = Field(default_factory=list)
    approvals: list[ApprovalGate] = Field(default_factory=list)
    pending_gates: list[ApprovalGate] = Field(default_factory=list)
    changes: list[ClusterChange] = Field(default_factory=list)
    current_step: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    mitigated_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    alert_resolved_at: datetime | None = None
    alert_repeats: int = 0
    handed_over_to: str | None = None
    failure: str | None = None
    # The playbook has done all it can without recovering the service: the incident now waits
    # for a human (escalation goes on).
    awaiting_human: bool = False
    # The playbook checked and found no fault to act on (what it checked); it made no write.
    nothing_found: str | None = None
    # What the playbook could not establish (each in its source's words): it made no write on that
    # basis and did not call the service healthy.
    could_not_tell: list[str] = Field(default_factory=list)
    slack_thread: SlackMessageRef | None = None
    # The scope every alert of this incident shares, and those alerts (the first one is `alert`).
    scope: str | None = None
    alerts: list[ScopeAlert] = Field(default_factory=list)
    # Every alert of the scope has resolved: the fault is gone, so automation starts no new write.
    fault_gone_at: datetime | None = None
    mode: Literal["act", "shadow"] = "act"
    # Escalation pages (and other posts) Slack did not take after every retry.
    paging_failures: list[str] = Field(default_factory=list)
    # PagerDuty alerts raised (IncidentInput.paging): one per dedup key.
    pagerduty_alerts: list[PagedAlert] = Field(default_factory=list)
    # The cluster the alert came from (None: before clusters had names); set when no worker serves it.
    cluster: str | None = None
    unserved_cluster: UnservedCluster | None = None


def escalation_policy(inp: IncidentInput, policy: PlaybookPolicy, severity: Severity) -> EscalationPolicy:
    """The incident's marks: the input's (config), else the SOP's, else the severity's."""
    chosen = _marks(inp, policy, severity)
    if not inp.escalation_contacts:
        return chosen
    return EscalationPolicy(
        [
            s.model_copy(update={"notify": f"{s.notify} ({', '.join(inp.escalation_contacts[s.notify])})"})
            if inp.escalation_contacts.get(s.notify)
            else s
            for s in chosen.steps
        ]
    )


def _marks(inp: IncidentInput, policy: PlaybookPolicy, severity: Severity) -> EscalationPolicy:
    if not inp.escalation:
        if policy.escalation is not None and (
            policy.escalation_patch is None or workflow.patched(policy.escalation_patch)
        ):
            return policy.escalation
        marks = escalation_marks(severity)
        return EscalationPolicy(
            [EscalationStep(after_minutes=m, notify=who, level=i) for i, (m, who) in enumerate(marks, 1)]
        )
    try:
        return EscalationPolicy(inp.escalation)
    except ValueError as err:  # bad input fails the incident with a reason, instead of retrying forever
        raise ApplicationError(
            f"invalid escalation in the incident input: {err}", type="InvalidInput", non_retryable=True
        ) from err


def changes_in(result: Any) -> Iterator[ClusterChange]:
    """ClusterChanges in an activity result: the result itself, a list of them, or fields of a model."""
    if isinstance(result, ClusterChange):
        yield result
    elif isinstance(result, (list, tuple)):
        for item in result:
            yield from changes_in(item)
    elif isinstance(result, BaseModel):
        for name in type(result).model_fields:
            value = getattr(result, name)
            if isinstance(value, (ClusterChange, list, tuple)):
                yield from changes_in(value)


def where(change: ClusterChange) -> str:
    return f"{change.namespace}/{change.name}" if change.namespace else change.name


def change_outcome(change: ClusterChange) -> str:
    verb = "dry run" if change.dry_run else ("applied" if change.applied else "already in place")
    return f"{change.field}: {change.before!r} → {change.after!r} ({verb})"


def failure_text(err: BaseException) -> str:
    cause = err
    while isinstance(deeper := getattr(cause, "cause", None), BaseException):
        cause = deeper
    return str(cause) or type(cause).__name__


def current_details(s: IncidentState, title: str) -> str:
    """The Temporal UI's current details of an incident: markdown, what a commander needs at a glance."""
    lines = [
        f"**{s.severity} {title}** — {s.status}"
        + (" — SHADOW MODE: writes are dry runs" if s.mode == "shadow" else ""),
        "",
        f"- alert: `{s.alert.alertname}` {s.alert.summary} (since {clock(s.alert.starts_at)})",
        *([f"- cluster: `{s.cluster}`"] if s.cluster else []),
        f"- escalation: level {s.escalation_level}, {s.escalated_to}",
        f"- incident commander: {s.incident_commander}",
    ]
    if s.unserved_cluster:
        lines.append(f"- **{unserved_sentence(s.unserved_cluster)}**")
    if s.current_step:
        lines.append(f"- now: {s.current_step}")
    lines += [f"- **awaiting approval** `{g.gate}`: {g.question}" for g in s.pending_gates]
    if s.acknowledged_by:
        lines.append(f"- acknowledged by {s.acknowledged_by}")
    if s.handed_over_to:
        lines.append(f"- handed over to {s.handed_over_to}: automation is not acting")
    if s.nothing_found:
        lines.append(f"- nothing wrong found, no change made: {s.nothing_found}")
    lines += [f"- **could not tell**: {why}" for why in s.could_not_tell]
    if s.awaiting_human and not s.resolution:
        lines.append("- **automation has done what it can without recovery: a human must take over**")
    if s.scope:
        firing = sum(1 for a in s.alerts if a.firing)
        lines.append(f"- scope `{s.scope}`: {len(s.alerts)} alert(s), {firing} firing")
    if s.fault_gone_at:
        lines.append(f"- every alert resolved at {clock(s.fault_gone_at)}: automation starts no new write")
    lines += [f"- **paging failed**: {failure}" for failure in s.paging_failures]
    if s.changes:
        verb = "change(s) the playbook would have made (dry runs)" if s.mode == "shadow" else "change(s) to the cluster"
        lines.append(f"- {len(s.changes)} {verb}")
    if s.resolution:
        lines.append(f"- resolved by {s.resolved_by}: {s.resolution}")
    return "\n".join(lines)


def unserved_sentence(u: UnservedCluster) -> str:
    """Why an incident acts nowhere: `cluster "x" (label cluster) is served by no worker; served: a, b`."""
    served = ", ".join(u.served) or "none"
    return (
        f"cluster {u.cluster!r} (label `{u.label}`) is served by no worker, so automation acts nowhere; "
        f"served: {served}"
    )


def indexed_at_start(attributes: TypedSearchAttributes) -> dict[str, Any]:
    """The incident's attributes its starter already indexed (the webhook sets them with the start),
    as `publish` keeps them: those need no upsert (an upsert is a history event and an index write)."""
    keys = (
        search.RUNBOOK,
        search.INCIDENT_SEVERITY,
        search.INCIDENT_STATUS,
        search.ALERT_NAME,
        search.ESCALATION_LEVEL,
        search.TARGET_NAMESPACE,
    )
    return {key.name: value for key in keys if (value := attributes.get(key)) is not None}


def publish(s: IncidentState, title: str, published: dict[str, Any]) -> None:
    """Search attributes and the UI's current details in step with the state. Only the attributes
    that changed since `published` (updated here) are upserted: each upsert is a history event."""
    wanted: list[tuple[Any, Any]] = [
        (search.RUNBOOK, s.runbook),
        (search.INCIDENT_SEVERITY, s.severity),
        (search.INCIDENT_STATUS, s.status),
        (search.ALERT_NAME, s.alert.alertname),
        (search.ESCALATION_LEVEL, s.escalation_level),
        (search.TARGET_NAMESPACE, s.namespace),
    ]
    changed = [(key, value) for key, value in wanted if value is not None and published.get(key.name) != value]
    if changed:
        workflow.upsert_search_attributes([key.value_set(value) for key, value in changed])
        published.update({key.name: value for key, value in changed})
    workflow.set_current_details(current_details(s, title))


class StatusBoard:
    """The incident's status and what it shows: the search attributes and the UI's current details
    in step with the state. `gates` is the incident's gates by name (the pending ones are shown)."""

    def __init__(
        self, state: IncidentState, title: str, published: dict[str, Any], gates: dict[str, ApprovalGate]
    ) -> None:
        self.state = state
        self.title = title
        self.published = published
        self.gates = gates

    def publish(self) -> None:
        self.state.pending_gates = [g for g in self.gates.values() if g.pending]
        publish(self.state, self.title, self.published)

    def set_status(self, status: IncidentStatus) -> None:
        """Keeps the IncidentStatus search attribute and the UI's current details in step; resolution is final."""
        if self.state.status == "resolved" and status != "resolved":
            return
        self.state.status = status
        self.publish()
