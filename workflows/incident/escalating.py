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
from typing import TYPE_CHECKING

from temporalio import workflow

from workflows.incident.escalation import run_escalation
from workflows.incident.models import EscalationStep
from workflows.incident.report import clock, stakeholder_update
from workflows.incident.severity import severity_policy
from workflows.incident.timeline import EscalationRecord

if TYPE_CHECKING:
    from workflows.incident.incident import Incident


class IncidentEscalation:
    def __init__(self, incident: Incident) -> None:
        self.inc = incident

    async def now(self, reason: str, *, by_human: bool = False) -> None:
        """Page the next level at once (a human asked, a gate timed out, automation failed).

        Once the fault is gone, automation's reasons are recorded without paging; a human's
        request always pages.
        """
        step = self.inc.escalation.step_after(self.inc.state.escalation_level)
        if step is None:  # past the playbook's last mark: the SOP path's next level
            step = self.inc.escalation.beyond(self.inc.state.escalation_level)
            contacts = step and self.inc.input.escalation_contacts.get(step.notify)
            if step and contacts:
                step = step.model_copy(update={"notify": f"{step.notify} ({', '.join(contacts)})"})
        if step is None:  # already at the top: page the top again, loudly
            step = EscalationStep(
                after_minutes=1, notify=self.inc.escalation.who(self.inc.state.escalation_level), level=self.inc.state.escalation_level
            )
        if self.inc.fault_gone and not by_human:
            self.inc.record("escalation", f"not paged: {step.notify} (level {step.level})",
                         outcome=f"{reason}; every alert had resolved")
            return
        await self.fire(step, reason)

    def stopped(self) -> bool:
        # An alert's resolution always stopped the marks (before scopes: its one alert).
        return self.inc.resolved or self.inc.state.alert_resolved_at is not None

    async def on_schedule(self) -> None:
        async def fire(step: EscalationStep, late: bool) -> None:
            reason = f"{step.after_minutes:g} min since the alert started and not resolved"
            await self.fire(step, reason + (" (mark already past when the incident opened)" if late else ""))

        await run_escalation(
            self.inc.escalation,
            self.inc.input.alert.starts_at,
            stopped=self.stopped,
            level=lambda: self.inc.state.escalation_level,
            fire=fire,
        )

    async def fire(self, step: EscalationStep, reason: str) -> None:
        now = workflow.now()
        self.inc.state.escalation_level = max(self.inc.state.escalation_level, step.level)
        self.inc.state.escalated_to = step.notify
        self.inc.state.escalations.append(EscalationRecord(level=step.level, notify=step.notify, at=now, reason=reason))
        entry = self.inc.record("escalation", f"escalated to {step.notify} (level {step.level})", outcome=reason)
        self.inc.publish()
        posted = await self.inc.slack.post(
            f":rotating_light: *Escalation to {step.notify}* (level {step.level}) — {reason}.\n"
            f"{self.inc.state.severity} {self.inc.policy.title}: {self.inc.input.alert.summary}",
            purpose=f"escalation-{step.level}",
        )
        if posted is None:
            # The level moved all the same; say loudly that nobody was told.
            failure = f"level {step.level} ({step.notify}) at {clock(now)}: Slack did not take the page"
            self.inc.state.paging_failures.append(failure)
            entry.note("paging failed: Slack did not take the page after its retries")
            workflow.logger.error("paging failed for %s: %s", self.inc.state.incident_id, failure)
            workflow.metric_meter().create_counter(
                "runbooks_paging_failures", "escalation pages Slack did not take after every retry"
            ).add(1, {"runbook": self.inc.state.runbook})
            self.inc.publish()

    async def stakeholder_updates(self) -> None:
        interval = severity_policy(self.inc.state.severity).stakeholder_updates
        if not self.inc.policy.stakeholder_updates or interval is None:
            return
        # The severity's cadence counts from the alert's startsAt (seed 001), not from when we heard of it.
        origin = self.inc.input.alert.starts_at
        number = 1
        while True:
            due = origin + interval * number
            remaining = due - workflow.now()
            if remaining > timedelta(0):  # a slow Slack may have eaten the whole interval
                try:
                    await workflow.wait_condition(
                        lambda: self.inc.resolved, timeout=remaining, timeout_summary=f"stakeholder update #{number}"
                    )
                    return
                except asyncio.TimeoutError:
                    pass
            if self.inc.resolved:
                return
            await self.inc.slack.post(stakeholder_update(self.inc.state, self.inc.policy, self.inc.timeline, next_update=due + interval), purpose=f"stakeholder-update-{number}")
            number += 1
