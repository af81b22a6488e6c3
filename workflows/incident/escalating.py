"""Escalation and stakeholder updates of one incident: durable timers from the alert's startsAt.

Marks fire once, on time, whatever crashes (escalation.run_escalation); a human's "escalate"
moves one level up at once. A page Slack does not take after its retries is still an
escalation: the level moves, the incident's details say "paging failed", the worker logs it
and counts it (`runbooks_paging_failures`). Once every alert of the scope has resolved,
automation's reasons to page are recorded, not paged.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from workflows.incident.escalation import EscalationPolicy, run_escalation
from workflows.incident.guard import Guard
from workflows.incident.models import EscalationStep, IncidentInput
from workflows.incident.paging import IncidentPaging
from workflows.incident.report import clock, stakeholder_update
from workflows.incident.severity import severity_policy
from workflows.incident.slack import IncidentSlack
from workflows.incident.state import IncidentState, PlaybookPolicy, StatusBoard
from workflows.incident.timeline import EscalationRecord, Journal


class IncidentEscalation:
    """Pages and stakeholder updates of one incident: `escalation` is its marks, `inp` its input
    (the alert's startsAt and summary, the escalation contacts)."""

    def __init__(
        self,
        inp: IncidentInput,
        policy: PlaybookPolicy,
        escalation: EscalationPolicy,
        state: IncidentState,
        guard: Guard,
        journal: Journal,
        board: StatusBoard,
        slack: IncidentSlack,
        paging: IncidentPaging | None = None,
    ) -> None:
        self.input = inp
        self.policy = policy
        self.escalation = escalation
        self.state = state
        self.guard = guard
        self.journal = journal
        self.board = board
        self.slack = slack
        self.paging = paging

    async def now(self, reason: str, *, by_human: bool = False) -> None:
        """Page the next level at once (a human asked, a gate timed out, automation failed).

        Once the fault is gone, automation's reasons are recorded without paging; a human's
        request always pages.
        """
        step = self.escalation.step_after(self.state.escalation_level)
        if step is None:  # past the playbook's last mark: the SOP path's next level
            step = self.escalation.beyond(self.state.escalation_level)
            contacts = step and self.input.escalation_contacts.get(step.notify)
            if step and contacts:
                step = step.model_copy(update={"notify": f"{step.notify} ({', '.join(contacts)})"})
        if step is None:  # already at the top: page the top again, loudly
            step = EscalationStep(
                after_minutes=1,
                notify=self.escalation.who(self.state.escalation_level),
                level=self.state.escalation_level,
            )
        if self.guard.fault_gone and not by_human:
            self.journal.record(
                "escalation",
                f"not paged: {step.notify} (level {step.level})",
                outcome=f"{reason}; every alert had resolved",
            )
            return
        await self.fire(step, reason)

    def stopped(self) -> bool:
        # An alert's resolution always stopped the marks (before scopes: its one alert).
        return self.guard.resolved or self.state.alert_resolved_at is not None

    async def on_schedule(self) -> None:
        async def fire(step: EscalationStep, late: bool) -> None:
            reason = f"{step.after_minutes:g} min since the alert started and not resolved"
            await self.fire(step, reason + (" (mark already past when the incident opened)" if late else ""))

        await run_escalation(
            self.escalation,
            self.input.alert.starts_at,
            stopped=self.stopped,
            level=lambda: self.state.escalation_level,
            fire=fire,
        )

    async def fire(self, step: EscalationStep, reason: str) -> None:
        now = workflow.now()
        self.state.escalation_level = max(self.state.escalation_level, step.level)
        self.state.escalated_to = step.notify
        self.state.escalations.append(EscalationRecord(level=step.level, notify=step.notify, at=now, reason=reason))
        entry = self.journal.record("escalation", f"escalated to {step.notify} (level {step.level})", outcome=reason)
        self.board.publish()
        posted = await self.slack.post(
            f":rotating_light: *Escalation to {step.notify}* (level {step.level}) — {reason}.\n"
            f"{self.state.severity} {self.policy.title}: {self.input.alert.summary}",
            purpose=f"escalation-{step.level}",
        )
        if posted is None:
            # The level moved all the same; say loudly that nobody was told.
            failure = f"level {step.level} ({step.notify}) at {clock(now)}: Slack did not take the page"
            self.state.paging_failures.append(failure)
            entry.note("paging failed: Slack did not take the page after its retries")
            workflow.logger.error("paging failed for %s: %s", self.state.incident_id, failure)
            workflow.metric_meter().create_counter(
                "runbooks_paging_failures", "escalation pages Slack did not take after every retry"
            ).add(1, {"runbook": self.state.runbook})
            self.board.publish()
        if self.paging is not None:  # the role's PagerDuty service too (issue 23), after Slack
            await self.paging.escalated(step)

    async def stakeholder_updates(self) -> None:
        interval = severity_policy(self.state.severity).stakeholder_updates
        if not self.policy.stakeholder_updates or interval is None:
            return
        # The severity's cadence counts from the alert's startsAt (seed 001), not from when we heard of it.
        origin = self.input.alert.starts_at
        number = 1
        behind = (workflow.now() - origin) // interval
        if behind > 1 and workflow.patched("stakeholder-updates-catch-up-once"):
            # An alert that has fired for hours (or arrives late) gets one update now for the marks
            # already past, not one per missed mark in a burst; the cadence goes on from the next mark.
            number = behind
        while True:
            due = origin + interval * number
            remaining = due - workflow.now()
            if remaining > timedelta(0):  # a slow Slack may have eaten the whole interval
                try:
                    await workflow.wait_condition(
                        lambda: self.guard.resolved, timeout=remaining, timeout_summary=f"stakeholder update #{number}"
                    )
                    return
                except asyncio.TimeoutError:
                    pass
            if self.guard.resolved:
                return
            update = stakeholder_update(self.state, self.policy, list(self.journal.entries), next_update=due + interval)
            await self.slack.post(update, purpose=f"stakeholder-update-{number}")
            number += 1
