"""The incident machinery every playbook composes: state, handlers, escalation, approvals, report.

Additions to the contract in /tmp/enginespec.md (all backward compatible):
- `act()` / `check()` also take `result_type=`, `retry=`, `heartbeat_timeout=`, and the activity by
  name (str) as well as by reference.
- `say(text, *, blocks=None, purpose="note")`: `purpose` names the post in its idempotency key.
- `acknowledge(by)`, `mitigated(note)` (sets "time to mitigate"), `escalate_now(reason)`,
  `stakeholder_update(next_update=)`, and the properties `state` (IncidentState), `severity`, `timeline`.
- `run()` posts a ":white_check_mark: Resolved by …" message before the report when resolved.
- `PlaybookPolicy` has `impact` (the stakeholder update's "Impact:") and `resolution_wait` (how long
  `run()` waits for a human after the body ended unresolved; default 8 h).

How a playbook uses it (no base class)::

    POLICY = PlaybookPolicy(runbook="service-outage", title="LLM service outage", default_severity="P0",
                            escalation=EscalationPolicy.standard(), impact="...")

    @workflow.defn
    class ServiceOutage:
        @workflow.init
        def __init__(self, inp: IncidentInput) -> None:
            self.incident = Incident(inp, POLICY)     # registers every handler before any update runs

        @workflow.run
        async def run(self, inp: IncidentInput) -> str:
            return await self.incident.run(self._respond)

        async def _respond(self) -> None:
            async with self.incident.step("Quick health check") as entry:
                pods = await self.incident.check(KubeActivities.list_pods, PodQuery(...), summary="operator pods")
                entry.note(f"{len(pods)} operator pods")
            change = await self.incident.act(KubeActivities.restart_deployment, RestartRequest(...),
                                             summary="restart llm-d-operator")   # None when handed over
            if await self.incident.approval("maintenance-mode", "Enable maintenance mode?", destructive=True):
                ...
            self.incident.resolve("health endpoint 200 and every LLMDeployment Ready")

Construct the Incident in a `@workflow.init` `__init__` (temporalio 1.35): the SDK instantiates the
workflow object before it runs any job of the first activation, but an Update that arrives in
the same first workflow task as the start runs its handler lookup *before* `run()` begins, so a
handler registered at the top of `run()` is not there yet and the update is rejected ("Update
handler for 'decide' expected but not found"). Signals are buffered until registration either
way. tests/test_incident_controls.py::test_update_right_after_start_is_not_lost guards this.
Constructing it at the top of `run()` still works for signals, queries and later updates.

Other notes for playbook authors:
- `act()` / `check()` take the activity by reference (`KubeActivities.restart_deployment`) or by
  name (`"restart_deployment"`, with `result_type=ClusterChange`): by name keeps `activities.kube`
  (and so `kubernetes`) out of the workflow module entirely.
- `act()` returns None when automation must not act (handed over, resolved); check for it.
- `approval()` returns False on reject, timeout (which also escalates), hand-over or resolution.
- A human's resolve cancels the playbook body; `resolve()` by automation lets the body finish.
- Raise nothing for "the fix didn't work": return and let `run()` wait for a human. An
  activity failure (ActivityError / ApplicationError) that escapes the body marks the incident
  failed and escalates at once; the incident still waits for a human to resolve it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError

from workflows import search
from workflows.approval import ApprovalGate, allowed_approvers, check_decision, gate_name, refuse
from workflows.escalation import FIRST_RESPONDER, EscalationPolicy, run_escalation
from workflows.models import (
    QUERY_STATE,
    QUERY_TIMELINE,
    SIGNAL_ALERT_REPEATED,
    SIGNAL_ALERT_RESOLVED,
    SIGNAL_HUMAN_ACTION,
    SIGNAL_ROLLBACK,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    Alert,
    AlertRepeated,
    AlertResolved,
    Decision,
    EscalationStep,
    HumanAction,
    IncidentInput,
    IncidentStatus,
    RollbackRequest,
    Severity,
)
from workflows.report import clock as _clock
from workflows.report import duration as _duration
from workflows.report import render_report
from workflows.severity import severity_policy
from workflows.timeline import EntryKind, EscalationRecord, TimelineEntry

with workflow.unsafe.imports_passed_through():
    from activities.models import ClusterChange
    from activities.slack import (
        ApprovalRequest,
        IncidentMessage,
        MessageUpdate,
        SlackActivities,
        SlackMessageRef,
        ThreadMessage,
    )

# Cluster work: retried with backoff, a few times, then the playbook decides.
ACTION_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=5)
# Slack: a failed post must never stop the incident, so retries are bounded and failures are swallowed.
SLACK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20), maximum_attempts=6)
SLACK_TIMEOUT = timedelta(seconds=30)
DEFAULT_APPROVAL_TIMEOUT = timedelta(minutes=10)
_STATUS_WORDS = {
    "open": "INVESTIGATING", "acknowledged": "INVESTIGATING", "mitigating": "MITIGATING",
    "awaiting-approval": "MITIGATING (awaiting approval)", "resolved": "RESOLVED",
    "handed-over": "HANDED OVER to humans", "failed": "AUTOMATION FAILED (humans engaged)",
}


@dataclass(frozen=True)
class PlaybookPolicy:
    """What differs between playbooks: names, default severity, escalation marks, wording."""

    runbook: str
    title: str
    default_severity: Severity
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy.standard)
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
    slack_thread: SlackMessageRef | None = None


class Incident:
    """State + handlers + helpers of one incident (see the module docstring for use)."""

    def __init__(self, inp: IncidentInput, policy: PlaybookPolicy) -> None:
        info = workflow.info()
        self.input = inp
        self.policy = policy
        self.escalation = _escalation_policy(inp, policy)
        self._approval_timeout = (
            timedelta(minutes=inp.approval_timeout_minutes) if inp.approval_timeout_minutes else DEFAULT_APPROVAL_TIMEOUT
        )
        self._state = IncidentState(
            incident_id=info.workflow_id,
            runbook=inp.runbook,
            title=policy.title,
            severity=inp.severity or policy.default_severity,
            alert=inp.alert,
            namespace=inp.namespace,
            incident_commander=inp.incident_commander,
            opened_at=workflow.now(),
        )
        self._timeline: list[TimelineEntry] = []
        self._gates: dict[str, ApprovalGate] = {}
        self._posts = 0  # numbers Slack posts: the idempotency key is incident id + number + purpose
        self._repeat_entry: TimelineEntry | None = None
        self._published: dict[str, Any] = {}
        self.rollback_requested: RollbackRequest | None = None  # signal `request_rollback`
        self._record("alert", f"{inp.alert.alertname} firing: {inp.alert.summary}", at=inp.alert.starts_at)
        self._register_handlers()
        self._publish()

    # -- what playbooks read --------------------------------------------------------------------

    @property
    def state(self) -> IncidentState:
        return self._state

    @property
    def resolved(self) -> bool:
        return self._state.status == "resolved"

    @property
    def automation_allowed(self) -> bool:
        return self._state.status not in ("resolved", "handed-over")

    @property
    def changes(self) -> list[ClusterChange]:
        return list(self._state.changes)

    @property
    def severity(self) -> Severity:
        return self._state.severity

    @property
    def timeline(self) -> list[TimelineEntry]:
        return list(self._timeline)

    def wait_resolved(self, timeout: timedelta) -> Awaitable[bool]:
        """True once resolved, False when `timeout` passes first."""

        async def wait() -> bool:
            try:
                await workflow.wait_condition(
                    lambda: self.resolved, timeout=timeout, timeout_summary="wait for the incident to be resolved"
                )
            except asyncio.TimeoutError:
                return False
            return True

        return wait()

    # -- the incident's life --------------------------------------------------------------------

    async def run(self, playbook: Callable[[], Awaitable[None]]) -> str:
        """Announce, escalate and update on schedule, run the playbook body, report."""
        await self._open_thread()
        background = [
            asyncio.create_task(self._escalate_on_schedule()),
            asyncio.create_task(self._stakeholder_updates()),
        ]
        if not self.resolved:
            await self._run_body(playbook)
        if not self.resolved:
            self._state.awaiting_human = True
            self._publish()
            await self.wait_resolved(self.policy.resolution_wait)
        if not self.resolved:
            self._record("status", f"not resolved within {_duration(self.policy.resolution_wait)}; automation stops here")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.resolved:
            await self._post(
                f":white_check_mark: *Resolved* by {self._state.resolved_by}: {self._state.resolution}", purpose="resolution"
            )
        report = render_report(self._state, self._timeline)
        await self._post(report, purpose="report")
        return report

    async def _run_body(self, playbook: Callable[[], Awaitable[None]]) -> None:
        body = asyncio.create_task(playbook())
        # A human's resolve ends the playbook; automation's own resolve lets it finish its step.
        await workflow.wait_condition(lambda: body.done() or (self.resolved and self._state.resolved_by != "automation"))
        if not body.done():
            body.cancel()
        try:
            await body
        except asyncio.CancelledError:
            if not self.resolved:
                raise
        except FailureError as err:
            self._state.failure = _failure_text(err)
            self._record("status", "automation failed", outcome=self._state.failure)
            self.set_status("failed")
            await self.escalate_now(f"automation failed: {self._state.failure}")

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[TimelineEntry]:
        """A step of the SOP on the timeline, with start, end, outcome and details."""
        entry = self._record("step", name, outcome=None)
        entry.ended_at = None
        self._state.current_step = name
        self._publish()
        try:
            yield entry
        except GeneratorExit:
            # The worker is evicting this run from its cache (shutdown, or replay elsewhere):
            # there is no workflow context left to record anything in.
            raise
        except asyncio.CancelledError:
            entry.outcome = entry.outcome or "cancelled"
            self._end_step(entry, name)
            raise
        except BaseException as err:
            entry.outcome = f"failed: {_failure_text(err)}"
            self._end_step(entry, name)
            raise
        self._end_step(entry, name)

    def _end_step(self, entry: TimelineEntry, name: str) -> None:
        entry.ended_at = workflow.now()
        entry.outcome = entry.outcome or "done"
        if self._state.current_step == name:
            self._state.current_step = None
        self._publish()

    async def act(
        self,
        activity: Callable[..., Any] | str,
        arg: BaseModel,
        *,
        summary: str,
        timeout: timedelta = timedelta(minutes=5),
        retry: RetryPolicy = ACTION_RETRY,
        heartbeat_timeout: timedelta | None = None,
        result_type: type | None = None,
        finding: str | None = None,
    ) -> Any:
        """Run an activity that changes the world; its ClusterChanges become the incident's actions.

        `finding` names what this run found that justifies the write ("operator pod X CrashLoopBackOff");
        it goes next to the write on the timeline and in the report.
        """
        if not self.automation_allowed:
            self._record("action", summary, outcome=f"skipped: {self._why_not_acting()}")
            return None
        if self._state.status in ("open", "acknowledged"):
            self.set_status("mitigating")
        result = await self._execute(activity, arg, summary, timeout, retry, heartbeat_timeout, result_type)
        for change in _changes_in(result):
            change.finding = change.finding or finding
            self._state.changes.append(change)
            entry = self._record("action", f"{change.action} {change.kind} {_where(change)}", outcome=_change_outcome(change))
            if change.finding:
                entry.note(f"because: {change.finding}")
        self._publish()
        return result

    async def check(
        self,
        activity: Callable[..., Any] | str,
        arg: BaseModel,
        *,
        summary: str,
        timeout: timedelta = timedelta(minutes=2),
        retry: RetryPolicy = ACTION_RETRY,
        heartbeat_timeout: timedelta | None = None,
        result_type: type | None = None,
    ) -> Any:
        """Run a read-only activity: always allowed, never recorded as an action."""
        return await self._execute(activity, arg, summary, timeout, retry, heartbeat_timeout, result_type)

    async def _execute(
        self,
        activity: Callable[..., Any] | str,
        arg: BaseModel,
        summary: str,
        timeout: timedelta,
        retry: RetryPolicy,
        heartbeat_timeout: timedelta | None,
        result_type: type | None,
    ) -> Any:
        return await workflow.execute_activity(
            activity,  # type: ignore[call-overload]
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry,
            summary=summary,
            result_type=result_type,
        )

    async def say(self, text: str, *, blocks: list[dict[str, Any]] | None = None, purpose: str = "note") -> None:
        """Post in the incident's Slack thread. A Slack outage is recorded, never raised."""
        await self._post(text, blocks=blocks, purpose=purpose)

    async def approval(
        self,
        kind: str,
        question: str,
        *,
        target: str | None = None,
        destructive: bool = False,
        timeout: timedelta | None = None,
    ) -> bool:
        """Ask a human; True only for an explicit approval. No answer in time: False, and escalate.

        `kind` is the gate's stable name (`maintenance-mode`, `cordon-drain`, …: what
        `approvals.by_gate` is keyed by); `target` the object it is about, so one incident may ask
        the same kind once per object. A decision names the gate `kind` or `kind:target`.
        """
        gate = gate_name(kind, target)
        if gate in self._gates:  # asked before (a loop in the playbook): the first answer stands
            return self._gates[gate].approved
        if not self.automation_allowed:
            self._record("approval", f"{gate}: {question}", outcome=f"not asked: {self._why_not_acting()}")
            return False
        now = workflow.now()
        wait = timeout or self._approval_timeout
        record = ApprovalGate(
            gate=gate,
            kind=kind,
            target=target,
            question=question,
            destructive=destructive,
            requested_at=now,
            deadline=now + wait,
            approvers=allowed_approvers(self.input.approvers, kind),
        )
        self._gates[gate] = record
        self._state.approvals.append(record)
        entry = self._record("approval", f"{gate}: {question}", outcome="pending")
        entry.ended_at = None
        previous = self._state.status
        self.set_status("awaiting-approval")
        await self._request_approval(record)
        try:
            await workflow.wait_condition(
                lambda: not record.pending or not self.automation_allowed,
                timeout=wait,
                timeout_summary=f"approval '{gate}' times out",
            )
        except asyncio.TimeoutError:
            record.timed_out = True
        if record.pending:
            record.withdrawn = self._why_not_acting()
        entry.ended_at = record.decided_at or workflow.now()
        entry.outcome = record.outcome
        entry.by = record.decision.by if record.decision else None
        if record.decision and record.decision.comment:
            entry.note(record.decision.comment)
        if self._state.status == "awaiting-approval" and not any(g.pending for g in self._gates.values()):
            self.set_status(previous)
        self._publish()
        await self._close_approval_message(record)
        if record.timed_out:
            await self.escalate_now(f"approval '{gate}' had no answer within {_duration(wait)}")
        return record.approved

    def resolve(self, note: str, *, by: str = "automation") -> None:
        """Verified recovery (or a human's word): escalation and updates stop, run() reports."""
        if self.resolved:
            return
        now = workflow.now()
        self._state.resolved_at = now
        self._state.resolved_by = by
        self._state.resolution = note
        self._state.mitigated_at = self._state.mitigated_at or now
        self._record("status", "resolved", outcome=note, by=by)
        self.set_status("resolved")

    async def nothing_wrong_found(self, checked: str) -> None:
        """The playbook's findings show no fault to act on: no write, a note to on-call.

        `checked` says what was looked at and how it was ("24/24 GPUs visible, device plugin pods
        Ready"). The body should return after this; the incident then waits for the alert to
        resolve or a human, as any incident whose automation is done.
        """
        self._state.nothing_found = checked
        self._record("status", "nothing wrong found: no change made", outcome=checked)
        self._publish()
        await self._post(
            f":mag: *Nothing wrong found* — {checked}. Automation made no change; on-call, please check "
            f"why `{self.input.alert.alertname}` fired.",
            purpose="nothing-found",
        )

    def mitigated(self, note: str) -> None:
        """Impact has stopped (service restored or users see the maintenance page); resolution may follow."""
        if self._state.mitigated_at is None:
            self._state.mitigated_at = workflow.now()
            self._record("status", "mitigated", outcome=note)
            self._publish()

    def acknowledge(self, by: str) -> None:
        if self._state.acknowledged_at is None:
            self._state.acknowledged_at = workflow.now()
            self._state.acknowledged_by = by
            self._record("human" if by != "automation" else "status", "acknowledged", by=by)
        if self._state.status == "open":
            self.set_status("acknowledged")
        self._publish()

    def set_status(self, status: IncidentStatus) -> None:
        """Keeps the IncidentStatus search attribute and the UI's current details in step."""
        if self.resolved and status != "resolved":
            return  # resolution is final
        self._state.status = status
        self._publish()

    async def escalate_now(self, reason: str) -> None:
        """Page the next level at once (a human asked, a gate timed out, automation failed)."""
        step = self.escalation.step_after(self._state.escalation_level)
        if step is None:  # already at the top: page the top again, loudly
            step = EscalationStep(
                after_minutes=1, notify=self.escalation.who(self._state.escalation_level), level=self._state.escalation_level
            )
        await self._fire_escalation(step, reason)

    # -- background loops -----------------------------------------------------------------------

    def _escalation_stopped(self) -> bool:
        return self.resolved or self._state.alert_resolved_at is not None

    async def _escalate_on_schedule(self) -> None:
        async def fire(step: EscalationStep, late: bool) -> None:
            reason = f"{step.after_minutes:g} min since the alert started and not resolved"
            await self._fire_escalation(step, reason + (" (mark already past when the incident opened)" if late else ""))

        await run_escalation(
            self.escalation,
            self.input.alert.starts_at,
            stopped=self._escalation_stopped,
            level=lambda: self._state.escalation_level,
            fire=fire,
        )

    async def _fire_escalation(self, step: EscalationStep, reason: str) -> None:
        now = workflow.now()
        self._state.escalation_level = max(self._state.escalation_level, step.level)
        self._state.escalated_to = step.notify
        self._state.escalations.append(EscalationRecord(level=step.level, notify=step.notify, at=now, reason=reason))
        self._record("escalation", f"escalated to {step.notify} (level {step.level})", outcome=reason)
        self._publish()
        await self._post(
            f":rotating_light: *Escalation to {step.notify}* (level {step.level}) — {reason}.\n"
            f"{self._state.severity} {self.policy.title}: {self.input.alert.summary}",
            purpose=f"escalation-{step.level}",
        )

    async def _stakeholder_updates(self) -> None:
        interval = severity_policy(self._state.severity).stakeholder_updates
        if not self.policy.stakeholder_updates or interval is None:
            return
        number = 1
        while True:
            due = self._state.opened_at + interval * number
            remaining = due - workflow.now()
            if remaining > timedelta(0):  # a slow Slack may have eaten the whole interval
                try:
                    await workflow.wait_condition(
                        lambda: self.resolved, timeout=remaining, timeout_summary=f"stakeholder update #{number}"
                    )
                    return
                except asyncio.TimeoutError:
                    pass
            await self._post(self.stakeholder_update(next_update=due + interval), purpose=f"stakeholder-update-{number}")
            number += 1

    def stakeholder_update(self, *, next_update: datetime | None) -> str:
        """Seed 001's communication template, filled in from the incident's state."""
        s = self._state
        sev = severity_policy(s.severity)
        actions = [e for e in self._timeline if e.kind in ("step", "action", "approval", "escalation")][-4:]
        lines = [f"- {e.title}" + (f" ({e.outcome})" if e.outcome else " (in progress)") for e in actions]
        lines += [f"- waiting for approval: {g.question}" for g in s.pending_gates]
        return "\n".join(
            [
                f"🚨 INCIDENT UPDATE - {self.policy.title}",
                "",
                f"Status: {_STATUS_WORDS[s.status]}",
                f"Severity: {sev.name}",
                f"Impact: {self.policy.impact or sev.description}",
                f"Start Time: {_clock(s.alert.starts_at)}",
                "",
                "Current Actions:",
                *(lines or ["- investigating"]),
                "",
                "ETA to Resolution: not yet known",
                f"Next Update: {_clock(next_update) if next_update else 'none scheduled'}",
                "",
                f"Incident Commander: @{s.incident_commander}",
            ]
        )

    # -- Slack ----------------------------------------------------------------------------------

    def _key(self, purpose: str) -> str:
        self._posts += 1
        return f"{self._state.incident_id}:{self._posts}:{purpose}"

    def _activity_options(self, summary: str) -> dict[str, Any]:
        return {"start_to_close_timeout": SLACK_TIMEOUT, "retry_policy": SLACK_RETRY, "summary": summary}

    async def _open_thread(self) -> None:
        alert = self.input.alert
        msg = IncidentMessage(
            key=self._key("incident"),
            incident_id=self._state.incident_id,
            channel=self.input.slack_channel,
            severity=self._state.severity,
            title=self.policy.title,
            summary=alert.summary,
            description=alert.annotations.get("description"),
            runbook_url=alert.annotations.get("runbook_url"),
            ui_url=self._ui_link(),
            labels={k: v for k, v in alert.labels.items() if k != "alertname"},
            incident_commander=self._state.incident_commander,
            status=_STATUS_WORDS[self._state.status].capitalize(),
            started_at=alert.starts_at,
        )
        try:
            self._state.slack_thread = await workflow.execute_activity_method(
                SlackActivities.post_incident, msg, **self._activity_options("announce the incident in Slack")
            )
        except FailureError as err:
            self._record("message", "incident announcement not posted", outcome=_failure_text(err))
        self._publish()

    async def _post(self, text: str, *, purpose: str, blocks: list[dict[str, Any]] | None = None) -> SlackMessageRef | None:
        thread = self._state.slack_thread
        msg = ThreadMessage(
            key=self._key(purpose),
            channel=thread.channel if thread else self.input.slack_channel,
            thread_ts=thread.ts if thread and not thread.console else None,
            text=text,
            blocks=blocks,
        )
        try:
            return await workflow.execute_activity_method(
                SlackActivities.post_in_thread, msg, **self._activity_options(f"Slack: {purpose}")
            )
        except FailureError as err:
            self._record("message", f"Slack post '{purpose}' failed", outcome=_failure_text(err))
            return None

    async def _request_approval(self, gate: ApprovalGate) -> None:
        thread = self._state.slack_thread
        req = ApprovalRequest(
            key=self._key(f"approval-{gate.gate}"),
            incident_id=self._state.incident_id,
            channel=thread.channel if thread else self.input.slack_channel,
            thread_ts=thread.ts if thread and not thread.console else None,
            gate=gate.gate,
            question=gate.question,
            destructive=gate.destructive,
            deadline=gate.deadline,
            approvers=gate.approvers,
        )
        try:
            ref = await workflow.execute_activity_method(
                SlackActivities.request_approval, req, **self._activity_options(f"ask for approval: {gate.gate}")
            )
        except FailureError as err:
            self._record("message", f"approval request '{gate.gate}' not posted", outcome=_failure_text(err))
            return
        gate.message_channel, gate.message_ts = ref.channel, ref.ts

    async def _close_approval_message(self, gate: ApprovalGate) -> None:
        """The buttons go away once the gate is decided, so nobody clicks a stale question."""
        if not gate.message_ts or not gate.message_channel:
            return
        when = f" at {_clock(gate.decided_at)}" if gate.decided_at else ""
        comment = f" — “{gate.decision.comment}”" if gate.decision and gate.decision.comment else ""
        upd = MessageUpdate(
            channel=gate.message_channel, ts=gate.message_ts, text=f"*{gate.question}*\n{gate.outcome}{when}{comment}"
        )
        try:
            await workflow.execute_activity_method(
                SlackActivities.update_message, upd, **self._activity_options(f"close approval message: {gate.gate}")
            )
        except FailureError as err:
            self._record("message", f"approval message '{gate.gate}' not updated", outcome=_failure_text(err))

    def _ui_link(self) -> str | None:
        if not self.input.ui_url:
            return None
        info = workflow.info()
        return f"{self.input.ui_url.rstrip('/')}/namespaces/{info.namespace}/workflows/{info.workflow_id}"

    # -- handlers -------------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        workflow.set_signal_handler(SIGNAL_ALERT_RESOLVED, self._on_alert_resolved)
        workflow.set_signal_handler(SIGNAL_ALERT_REPEATED, self._on_alert_repeated)
        workflow.set_signal_handler(SIGNAL_HUMAN_ACTION, self._on_human_signal)
        workflow.set_signal_handler(SIGNAL_ROLLBACK, self._on_rollback_request)
        workflow.set_update_handler(UPDATE_DECIDE, self._decide, validator=self._validate_decision)
        workflow.set_update_handler(UPDATE_HUMAN_ACTION, self._on_human_update, validator=self._validate_human_action)
        workflow.set_query_handler(QUERY_TIMELINE, lambda: self.timeline)
        workflow.set_query_handler(QUERY_STATE, lambda: self._state)


    def _on_alert_resolved(self, signal: AlertResolved) -> None:
        if self._state.alert_resolved_at is None:
            self._state.alert_resolved_at = signal.ends_at
            self._record("alert", f"alert resolved (from {signal.source})", at=signal.ends_at)
            self._publish()

    def _on_rollback_request(self, request: RollbackRequest) -> None:
        """The playbook's rollback, on request: it acts on it as soon as its current step allows."""
        if self.rollback_requested is None:
            self.rollback_requested = request
            why = f": {request.reason}" if request.reason else ""
            self._record("human", f"rollback requested{why}", by=request.by)

    def _on_alert_repeated(self, signal: AlertRepeated) -> None:
        self._state.alert_repeats += 1
        if self._repeat_entry is None:
            self._repeat_entry = self._record("alert", "alert notification repeated", at=signal.received_at)
        self._repeat_entry.outcome = f"{self._state.alert_repeats} repeat(s), last at {_clock(signal.received_at)}"

    def _validate_decision(self, decision: Decision) -> None:
        check_decision(self._gates, decision)

    def _decide(self, decision: Decision) -> str:
        gate = self._gates[decision.gate]
        gate.decision = decision
        gate.decided_at = workflow.now()
        self._publish()
        return f"gate {gate.gate!r} {gate.outcome}"

    def _validate_human_action(self, action: HumanAction) -> None:
        problem = self._human_action_problem(action)
        if problem:
            raise refuse(problem)

    def _human_action_problem(self, action: HumanAction) -> str | None:
        s = self._state
        if action.action == "note":
            return None if action.note else "a note needs text"
        if self.resolved:
            return f"the incident is already resolved (by {s.resolved_by})"
        if action.action == "acknowledge" and s.acknowledged_by:
            return f"already acknowledged by {s.acknowledged_by}"
        if action.action == "hand-over" and s.handed_over_to:
            return f"already handed over to {s.handed_over_to}"
        return None

    async def _on_human_update(self, action: HumanAction) -> str:
        return await self._apply_human_action(action)

    async def _on_human_signal(self, action: HumanAction) -> None:
        problem = self._human_action_problem(action)  # a signal can't be refused: record and ignore
        if problem:
            self._record("human", f"{action.action} ignored", outcome=problem, by=action.by)
            return
        await self._apply_human_action(action)

    async def _apply_human_action(self, action: HumanAction) -> str:
        by, note = action.by, action.note
        if action.action == "acknowledge":
            self.acknowledge(by)
            await self._post(f":eyes: Acknowledged by *{by}*", purpose="acknowledged")
            return f"acknowledged by {by}"
        if action.action == "note":
            self._record("human", "note", outcome=note, by=by)
            await self._post(f":memo: *{by}*: {note}", purpose="note")
            return "note added"
        if action.action == "escalate":
            await self.escalate_now(f"{by} asked to escalate" + (f": {note}" if note else ""))
            return f"escalated to {self._state.escalated_to}"
        if action.action == "hand-over":
            self._state.handed_over_to = by
            self._record("human", "handed over to humans: automation stops acting", outcome=note, by=by)
            self.set_status("handed-over")
            await self._post(f":handshake: *{by}* took over; automation will not change anything from now on.", purpose="hand-over")
            return f"handed over to {by}"
        self.resolve(note or f"resolved by {by}", by=by)
        return f"resolved by {by}"

    # -- timeline, search attributes, current details --------------------------------------------

    def _record(
        self, kind: EntryKind, title: str, *, outcome: str | None = None, by: str | None = None, at: datetime | None = None
    ) -> TimelineEntry:
        now = workflow.now()
        entry = TimelineEntry(kind=kind, title=title, started_at=at or now, ended_at=now, outcome=outcome, by=by)
        self._timeline.append(entry)
        return entry

    def _why_not_acting(self) -> str:
        if self.resolved:
            return f"incident resolved by {self._state.resolved_by}"
        if self._state.handed_over_to:
            return f"handed over to {self._state.handed_over_to}"
        return "automation stopped"

    def _publish(self) -> None:
        """Upsert only the search attributes that changed (each upsert is a history event)."""
        s = self._state
        s.pending_gates = [g for g in self._gates.values() if g.pending]
        wanted: list[tuple[Any, Any]] = [
            (search.RUNBOOK, s.runbook),
            (search.INCIDENT_SEVERITY, s.severity),
            (search.INCIDENT_STATUS, s.status),
            (search.ALERT_NAME, s.alert.alertname),
            (search.ESCALATION_LEVEL, s.escalation_level),
            (search.TARGET_NAMESPACE, s.namespace),
        ]
        changed = [(key, value) for key, value in wanted if value is not None and self._published.get(key.name) != value]
        if changed:
            workflow.upsert_search_attributes([key.value_set(value) for key, value in changed])
            self._published.update({key.name: value for key, value in changed})
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        s = self._state
        lines = [
            f"**{s.severity} {self.policy.title}** — {s.status}",
            "",
            f"- alert: `{s.alert.alertname}` {s.alert.summary} (since {_clock(s.alert.starts_at)})",
            f"- escalation: level {s.escalation_level}, {s.escalated_to}",
            f"- incident commander: {s.incident_commander}",
        ]
        if s.current_step:
            lines.append(f"- now: {s.current_step}")
        lines += [f"- **awaiting approval** `{g.gate}`: {g.question}" for g in s.pending_gates]
        if s.acknowledged_by:
            lines.append(f"- acknowledged by {s.acknowledged_by}")
        if s.handed_over_to:
            lines.append(f"- handed over to {s.handed_over_to}: automation is not acting")
        if s.nothing_found:
            lines.append(f"- nothing wrong found, no change made: {s.nothing_found}")
        if s.awaiting_human and not s.resolution:
            lines.append("- **automation has done what it can without recovery: a human must take over**")
        if s.alert_resolved_at:
            lines.append(f"- alert resolved at {_clock(s.alert_resolved_at)}")
        if s.changes:
            lines.append(f"- {len(s.changes)} change(s) to the cluster")
        if s.resolution:
            lines.append(f"- resolved by {s.resolved_by}: {s.resolution}")
        return "\n".join(lines)


def _escalation_policy(inp: IncidentInput, policy: PlaybookPolicy) -> EscalationPolicy:
    if not inp.escalation:
        return policy.escalation
    try:
        return EscalationPolicy(inp.escalation)
    except ValueError as err:  # bad input fails the incident with a reason, instead of retrying forever
        raise ApplicationError(f"invalid escalation in the incident input: {err}", type="InvalidInput", non_retryable=True) from err


def _changes_in(result: Any) -> Iterator[ClusterChange]:
    """ClusterChanges in an activity result: the result itself, a list of them, or fields of a model."""
    if isinstance(result, ClusterChange):
        yield result
    elif isinstance(result, (list, tuple)):
        for item in result:
            yield from _changes_in(item)
    elif isinstance(result, BaseModel):
        for name in type(result).model_fields:
            value = getattr(result, name)
            if isinstance(value, (ClusterChange, list, tuple)):
                yield from _changes_in(value)


def _where(change: ClusterChange) -> str:
    return f"{change.namespace}/{change.name}" if change.namespace else change.name


def _change_outcome(change: ClusterChange) -> str:
    verb = "dry run" if change.dry_run else ("applied" if change.applied else "already in place")
    return f"{change.field}: {change.before!r} → {change.after!r} ({verb})"


def _failure_text(err: BaseException) -> str:
    cause = err
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[assignment]
    return str(cause) or type(cause).__name__

