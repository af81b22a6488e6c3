"""One incident: its state, the handlers humans and Alertmanager reach it by, and its life
(announce, escalate, run the playbook body, report). No base class: a playbook holds an `Incident`
(how: workflows/incident/__init__.py). The helpers it composes each take only what they need:
the state, the journal, the guard, the status board, the Slack side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import FailureError

from workflows.incident import loops
from workflows.incident.actions import IncidentActions
from workflows.incident.alerts import ScopeAlerts
from workflows.incident.approval import ApprovalGate
from workflows.incident.claims import IncidentCoordination
from workflows.incident.controls import HumanControls
from workflows.incident.coordination_models import SIGNAL_COORDINATION_NOTE, CoordinationNote
from workflows.incident.escalating import IncidentEscalation
from workflows.incident.escalation import EscalationPolicy
from workflows.incident.gates import IncidentGates
from workflows.incident.handover import Endings, refusal
from workflows.incident.guard import Guard
from workflows.incident.paging import IncidentPaging
from workflows.incident.models import (
    QUERY_STATE,
    QUERY_TIMELINE,
    SIGNAL_ALERT_FIRING,
    SIGNAL_ALERT_REPEATED,
    SIGNAL_ALERT_RESOLVED,
    SIGNAL_HUMAN_ACTION,
    SIGNAL_ROLLBACK,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    AlertFiring,
    AlertRepeated,
    AlertResolved,
    IncidentInput,
    RollbackRequest,
    Severity,
)
from workflows.incident.report import clock, duration, render_report, stakeholder_update
from workflows.incident.slack import IncidentSlack
from workflows.incident.state import (
    IncidentState,
    PlaybookPolicy,
    StatusBoard,
    escalation_policy,
    failure_text,
    indexed_at_start,
)
from workflows.incident.timeline import Journal, TimelineEntry

with workflow.unsafe.imports_passed_through():
    from activities.slack_models import MessageLink

T = TypeVar("T")

DEFAULT_APPROVAL_TIMEOUT = timedelta(minutes=10)


class Incident:
    """State + handlers + helpers of one incident (see the module docstring for use)."""

    def __init__(self, inp: IncidentInput, policy: PlaybookPolicy) -> None:
        info = workflow.info()
        self.input = inp
        self.policy = policy
        severity: Severity = inp.severity or policy.default_severity
        self._approval_timeout = (
            timedelta(minutes=inp.approval_timeout_minutes)
            if inp.approval_timeout_minutes
            else DEFAULT_APPROVAL_TIMEOUT
        )
        self._state = IncidentState(
            incident_id=info.workflow_id,
            runbook=inp.runbook,
            title=policy.title,
            severity=severity,
            alert=inp.alert,
            namespace=inp.namespace,
            incident_commander=inp.incident_commander,
            opened_at=workflow.now(),
            escalated_to=policy.first_responder,
            scope=inp.scope,
            mode=inp.mode,
            cluster=inp.cluster,
            unserved_cluster=inp.unserved_cluster,
        )
        self._journal = Journal()
        self._gates: dict[str, ApprovalGate] = {}
        self._guard = Guard(self._state)
        # What the webhook indexed at start is not upserted again (one upsert fewer per incident).
        self._board = StatusBoard(
            self._state, policy.title, indexed_at_start(info.typed_search_attributes), self._gates
        )
        self.publish, self.set_status = self._board.publish, self._board.set_status
        self.record = self._journal.record
        self.slack = IncidentSlack(inp, self._state, policy.title, self.record)
        self.alerts = ScopeAlerts(self._state, self.record)
        self.paging = IncidentPaging(inp, self._state, policy.title, self._journal, self._board, self.slack)
        self.escalations = IncidentEscalation(
            inp,
            policy,
            escalation_policy(inp, policy, severity),
            self._state,
            self._guard,
            self._journal,
            self._board,
            self.slack,
            self.paging,
        )
        self.coordination = IncidentCoordination(
            info.workflow_id, inp.runbook, inp.caps, hold_wait=timedelta(seconds=inp.hold_wait_seconds)
        )
        self.gates_desk = IncidentGates(
            self._gates,
            inp.approvers,
            self._approval_timeout,
            self._state,
            self._guard,
            self._journal,
            self._board,
            self.slack,
            self.escalations.now,
        )
        actions = IncidentActions(
            self._state,
            self._guard,
            self._journal,
            self._board,
            self.coordination if inp.coordinated else None,
            self.approval,
        )
        # How automation stops short of a recovery: nothing found, could not tell, handed over.
        self.endings = Endings(
            self._state, inp.alert.alertname, self._journal, self._board, self.slack, self.escalations.now
        )
        self.nothing_wrong_found = self.endings.nothing_wrong_found
        self.could_not_tell = self.endings.could_not_tell
        self.hand_over = self.endings.hand_over
        # What playbooks call: `async with incident.step(...)`, `await incident.check(...)`, `await incident.act(...)`.
        self.step, self.check, self.act = actions.step, actions.check, actions.act
        self.controls = HumanControls(
            self._gates,
            self._state,
            self._guard,
            self._journal,
            self._board,
            self.slack,
            acknowledge=self.acknowledge,
            resolve=self.resolve,
            escalate=self.escalations.now,
        )
        labels = ", ".join(f"{k}={v}" for k, v in sorted(inp.alert.labels.items()) if k != "alertname")
        self.record(
            "alert",
            f"{inp.alert.alertname} firing: {inp.alert.summary}",
            outcome=labels or None,
            at=inp.alert.starts_at,
        )
        self.alerts.add_first(inp.alert, inp.alert.starts_at)
        for joined in inp.joined_alerts:
            self.alerts.fired(AlertFiring(alert=joined, received_at=workflow.now()))
        self._register_handlers()
        self.publish()

    # -- what playbooks read --------------------------------------------------------------------

    @property
    def state(self) -> IncidentState:
        return self._state

    @property
    def resolved(self) -> bool:
        return self._guard.resolved

    @property
    def automation_allowed(self) -> bool:
        return self._guard.automation_allowed

    @property
    def fault_gone(self) -> bool:
        """Every alert of the scope has resolved: no new write starts (a human's rollback excepted),
        waits end, gates are withdrawn."""
        return self._guard.fault_gone

    @property
    def stop_waiting(self) -> bool:
        """A playbook's wait for the cluster (a grace period, a verification poll) should end now:
        automation may not act any more, or the fault is gone (then one verification pass is enough)."""
        return self._guard.stop_waiting

    @property
    def rollback_requested(self) -> RollbackRequest | None:
        """The rollback a human asked for (signal `request_rollback`): acted on as soon as the step allows."""
        return self._guard.rollback_requested

    @property
    def interrupted(self) -> bool:
        """A rollback was asked for, or the wait should end (`stop_waiting`): waits end early, no new step starts."""
        return self._guard.interrupted

    @property
    def why_interrupted(self) -> str:
        """A step's outcome when `interrupted` skipped it: "skipped: rollback requested" or "…automation stopped"."""
        return self._guard.why_interrupted

    def why_not_acting(self) -> str:
        return self._guard.why_not_acting()

    @property
    def escalation(self) -> EscalationPolicy:
        """The incident's marks; a playbook may set them before `run()` starts the clock."""
        return self.escalations.escalation

    @escalation.setter
    def escalation(self, policy: EscalationPolicy) -> None:
        self.escalations.escalation = policy

    @property
    def shadow(self) -> bool:
        return self._state.mode == "shadow"

    @property
    def changes(self) -> list[Any]:
        return list(self._state.changes)

    @property
    def severity(self) -> Severity:
        return self._state.severity

    @property
    def timeline(self) -> list[TimelineEntry]:
        return list(self._journal.entries)

    def wait_resolved(self, timeout: timedelta) -> Awaitable[bool]:
        """True once resolved, False when `timeout` passes first."""
        return loops.pause(
            lambda: self.resolved, timeout, summary="wait for the incident to be resolved", shortest=None
        )

    def pause(self, duration: timedelta, *, summary: str) -> Awaitable[bool]:
        """A durable wait of `duration` (at least 1 s) that `interrupted` cuts short; True when it did."""
        return loops.pause(lambda: self.interrupted, duration, summary=summary)

    def poll_until(
        self,
        read: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        *,
        deadline: datetime,
        every: timedelta,
        summary: str,
        stop: Callable[[], bool] | None = None,
        ends: Callable[[], bool] | None = None,
        to_deadline: bool = True,
        shortest: timedelta | None = loops.SHORTEST_WAIT,
        look_again: bool = True,
    ) -> Awaitable[T]:
        """`read()` every `every` until `done(result)`, the deadline or `stop()` (default: `interrupted`);
        the last result. The rest as workflows/incident/loops.py `poll_until`."""
        return loops.poll_until(
            read,
            done,
            deadline=deadline,
            every=every,
            summary=summary,
            stop=stop or (lambda: self.interrupted),
            ends=ends,
            to_deadline=to_deadline,
            shortest=shortest,
            look_again=look_again,
        )

    # -- the incident's life --------------------------------------------------------------------

    async def run(self, playbook: Callable[[], Coroutine[Any, Any, None]]) -> str:
        """Announce, escalate and update on schedule, run the playbook body, report.

        Alerts that fire for this scope once the incident is resolved start the next incident
        of the scope (continue-as-new with them), so none is lost to a closing run.
        """
        if self.input.coordinated and await self._handled_before():
            return render_report(self._state, self._journal.entries)
        await self.slack.open_thread()
        self.publish()
        background = [
            asyncio.create_task(self.escalations.on_schedule()),
            asyncio.create_task(self.escalations.stakeholder_updates()),
            asyncio.create_task(self.paging.follow()),
        ]
        if not self.resolved:
            await (self.endings.cluster_not_served() if self.input.unserved_cluster else self._run_body(playbook))
        if not self.resolved:
            self._state.awaiting_human = True
            self.publish()
            await self._wait_for_resolution(self.policy.resolution_wait)
        if not self.resolved:
            self.record("status", f"not resolved within {duration(self.policy.resolution_wait)}; automation stops here")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.paging.settle()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.resolved:
            await self.slack.post(
                f":white_check_mark: *Resolved* by {self._state.resolved_by}: {self._state.resolution}",
                purpose="resolution",
            )
            await self.paging.resolve()
        report = render_report(self._state, self._journal.entries)
        await self.slack.post(report, purpose="report")
        if self.input.coordinated:
            await self.coordination.close([(a.fingerprint, a.starts_at) for a in self._state.alerts])
        if self.alerts.late:
            first, *rest = self.alerts.late
            workflow.continue_as_new(
                self.input.model_copy(
                    update={
                        "alert": first.alert,
                        "joined_alerts": [a.alert for a in rest],
                        "severity": self.input.severity,
                    }
                )
            )
        return report

    async def _handled_before(self) -> bool:
        """The alert ledger knows this alert (a late repeat of a closed incident's, or one that
        resolved before its firing arrived) and no other alert joined: resolve, run nothing."""
        first = self.input.alert
        why = await self.coordination.handled_before(first.fingerprint, first.starts_at, len(self._state.alerts))
        if why is None:
            return False
        self._state.mitigated_at = workflow.now()
        self.record("status", "not run: this alert was handled before", outcome=why, by="alert ledger")
        self.resolve(f"nothing to do: {why}", by="alert ledger")
        return True

    async def _wait_for_resolution(self, timeout: timedelta) -> None:
        """The body is done: wait for a human, or for every alert to resolve (then resolve by alert)."""
        try:
            await workflow.wait_condition(
                lambda: self.resolved or self.fault_gone,
                timeout=timeout,
                timeout_summary="wait for a human or the alerts' resolution",
            )
        except asyncio.TimeoutError:
            return
        if not self.resolved and self.fault_gone:
            self.resolve(
                f"every alert of the scope resolved (last at {clock(self._state.fault_gone_at)})",  # type: ignore[arg-type]
                by="alertmanager",
            )

    async def _run_body(self, playbook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        body = asyncio.create_task(playbook())
        # A human's resolve ends the playbook; automation's own resolve lets it finish its step.
        await workflow.wait_condition(
            lambda: body.done() or (self.resolved and self._state.resolved_by != "automation")
        )
        if not body.done():
            body.cancel()
        try:
            await body
        except asyncio.CancelledError:
            if not self.resolved:
                raise
        except workflow.NondeterminismError:
            raise  # the code changed under a running incident: the task must fail, not the incident
        except Exception as err:  # noqa: BLE001 — any failure of the body fails the incident, never the task
            if (refused := refusal(err)) is not None:
                await self.hand_over(refused, to="on-call (the cluster refused the step)")
                return
            self._state.failure = failure_text(err) if isinstance(err, FailureError) else f"{type(err).__name__}: {err}"
            self.record("status", "automation failed", outcome=self._state.failure)
            self.set_status("failed")
            await self.escalate_now(f"automation failed: {self._state.failure}")

    async def say(
        self,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        purpose: str = "note",
        links: list[MessageLink] | None = None,
    ) -> None:
        """Post in the incident's Slack thread. A Slack outage is recorded, never raised. `text` is
        taken as text (`&`, `<`, `>` escaped when posted); `links` are the links we mean."""
        await self.slack.post(text, blocks=blocks, purpose=purpose, links=links)

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
        `approvals.by_gate` is keyed by; declared in the policy's `gates`); `target` the object it
        is about, so one incident may ask the same kind once per object. A decision names the gate
        `kind` or `kind:target`.
        """
        return await self.gates_desk.ask(kind, question, target=target, destructive=destructive, timeout=timeout)

    async def escalate_now(self, reason: str, *, by_human: bool = False) -> None:
        """Page the next level at once (a human asked, a gate timed out, automation failed)."""
        await self.escalations.now(reason, by_human=by_human)

    def stakeholder_update(self, *, next_update: datetime | None) -> str:
        """Seed 001's communication template, filled in from the incident's state."""
        return stakeholder_update(self._state, self.policy, self._journal.entries, next_update=next_update)

    def resolve(self, note: str, *, by: str = "automation") -> None:
        """Verified recovery (or a human's word): escalation and updates stop, run() reports."""
        if self.resolved:
            return
        now = workflow.now()
        self._state.resolved_at = now
        self._state.resolved_by = by
        self._state.resolution = note
        self._state.mitigated_at = self._state.mitigated_at or now
        self.record("status", "resolved", outcome=note, by=by)
        self.set_status("resolved")

    def mitigated(self, note: str) -> None:
        """Impact has stopped (service restored or users see the maintenance page); resolution may follow."""
        if self._state.mitigated_at is None:
            self._state.mitigated_at = workflow.now()
            self.record("status", "mitigated", outcome=note)
            self.publish()

    def acknowledge(self, by: str) -> None:
        if self._state.acknowledged_at is None:
            self._state.acknowledged_at = workflow.now()
            self._state.acknowledged_by = by
            self.record("human" if by != "automation" else "status", "acknowledged", by=by)
        if self._state.status == "open":
            self.set_status("acknowledged")
        self.publish()

    # -- handlers -------------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        workflow.set_signal_handler(SIGNAL_ALERT_FIRING, self._on_alert_firing)
        workflow.set_signal_handler(SIGNAL_ALERT_RESOLVED, self._on_alert_resolved)
        workflow.set_signal_handler(SIGNAL_ALERT_REPEATED, self._on_alert_repeated)
        workflow.set_signal_handler(SIGNAL_ROLLBACK, self._on_rollback_request)
        workflow.set_signal_handler(SIGNAL_COORDINATION_NOTE, self._on_coordination_note)
        workflow.set_signal_handler(SIGNAL_HUMAN_ACTION, self.controls.on_human_signal)
        workflow.set_update_handler(UPDATE_DECIDE, self.controls.decide, validator=self.controls.validate_decision)
        workflow.set_update_handler(
            UPDATE_HUMAN_ACTION, self.controls.on_human_update, validator=self.controls.validate_human_action
        )
        workflow.set_query_handler(QUERY_TIMELINE, lambda: self.timeline)
        workflow.set_query_handler(QUERY_STATE, lambda: self._state)

    def _on_alert_firing(self, signal: AlertFiring) -> None:
        if self.resolved:
            self.alerts.fired_after_resolution(signal)  # this run is closing: it opens the next one
            return
        self.alerts.fired(signal)
        self.publish()

    def _on_alert_resolved(self, signal: AlertResolved) -> None:
        if self.alerts.resolved(signal) and self.fault_gone:
            self.gates_desk.withdraw_open("every alert of the scope resolved: the fault is gone")
        self.publish()

    def _on_alert_repeated(self, signal: AlertRepeated) -> None:
        self.alerts.repeated(signal.received_at)

    def _on_coordination_note(self, note: CoordinationNote) -> None:
        """Another incident waited for an object this one holds: both timelines name the holder."""
        self.record("status", note.sentence, at=note.at)

    def _on_rollback_request(self, request: RollbackRequest) -> None:
        """The playbook's rollback, on request: it acts on it as soon as its current step allows."""
        if self._guard.rollback_requested is None:
            self._guard.rollback_requested = request
            why = f": {request.reason}" if request.reason else ""
            self.record("human", f"rollback requested{why}", by=request.by)
