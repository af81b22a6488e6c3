"""PagerDuty paging of one incident (issue 23), beside Slack, never instead of it.

- Only an incident whose severity pages (`IncidentInput.paging.severities`, seed 001: P0) pages
  PagerDuty; the others stay Slack only. At open it opens one PagerDuty alert with dedup_key = the incident id: repeats, retries and worker restarts add to
  that alert and never open a second; two clusters' incidents have two ids, so never merge.
- Each escalation mark whose role has a PagerDuty service (`paging.roles`) opens that role's alert,
  dedup_key = incident id + ":" + role, after the mark's Slack post.
- An acknowledgement (Slack, CLI, UI) acknowledges every alert raised so far; the incident's
  resolution resolves every alert it raised.
- A refused event (bad routing key, invalid event) or one PagerDuty would not take after the bounded
  retries (429, 5xx) is "paging failed" in the incident's details, its timeline, the worker's log and
  `runbooks_paging_failures`, and the page goes to the Slack thread so the on-call still hears of it.

Histories saved before PagerDuty have no `paging` in their input and so schedule nothing here; every
PagerDuty command is also behind `workflow.patched("pagerduty-paging")`.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.incident.models import EscalationStep, IncidentInput
from workflows.incident.report import STATUS_WORDS, clock
from workflows.incident.slack import IncidentSlack
from workflows.incident.state import IncidentState, PagedAlert, StatusBoard, failure_text
from workflows.incident.timeline import Journal

with workflow.unsafe.imports_passed_through():
    from activities.pagerduty_models import (
        MAX_DEDUP_KEY,
        SEVERITY_MAP,
        PagerDutyFollowUp,
        PagerDutyLink,
        PagerDutyReceipt,
        PagerDutyTrigger,
    )

PATCH = "pagerduty-paging"
# PagerDuty's advice for 429: retry a few times, ~30 s apart; 5xx likewise. Bounded: a page that
# cannot get through within ~4 minutes is a paging failure (and goes to Slack), not a wait.
PAGERDUTY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=15),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
    non_retryable_error_types=["PagerDutyRefused", "PagerDutyNotConfigured"],
)
PAGERDUTY_TIMEOUT = timedelta(seconds=30)


def dedup_key(incident_id: str, role: str | None = None) -> str:
    """The incident id (+ ":" + role), within PagerDuty's 255 characters (a digest ends a longer one)."""
    key = incident_id if role is None else f"{incident_id}:{role}"
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return key[: MAX_DEDUP_KEY - 17] + "-" + digest


class IncidentPaging:
    """The PagerDuty side of one incident (module docstring)."""

    def __init__(
        self,
        inp: IncidentInput,
        state: IncidentState,
        title: str,
        journal: Journal,
        board: StatusBoard,
        slack: IncidentSlack,
    ) -> None:
        self.input = inp
        self.state = state
        self.title = title
        self.journal = journal
        self.board = board
        self.slack = slack
        self._pages: list[asyncio.Task[None]] = []  # role pages under way (escalated)

    @property
    def enabled(self) -> bool:
        """PagerDuty is configured and the incident's severity pages (else: Slack only)."""
        plan = self.input.paging
        return plan is not None and self.state.severity in plan.severities and workflow.patched(PATCH)

    # -- what the incident calls ----------------------------------------------------------------

    async def follow(self) -> None:
        """At open: page when the severity pages; then acknowledge the alerts once a human has."""
        if not self.enabled:
            return
        await self._trigger(self.state.severity, None, f"{self.state.severity} incident opened")
        await workflow.wait_condition(
            lambda: self.state.acknowledged_by is not None or self.state.resolved_at is not None
        )
        if self.state.resolved_at is None:
            await self.acknowledge()

    async def escalated(self, step: EscalationStep) -> None:
        """An escalation mark fired: page its role's PagerDuty service, when it has one.

        The page runs beside the escalation (its retries may take minutes): the next mark's timer and
        a human's "escalate" answer do not wait for it. `settle()` ends what is left at the end."""
        if not self.enabled:
            return
        plan = self.input.paging
        assert plan is not None
        role = next((r for r in plan.roles if step.notify == r or step.notify.startswith(r + " (")), None)
        if role is not None:
            why = f"escalation to {step.notify} (level {step.level})"
            self._pages.append(asyncio.create_task(self._trigger(role, role, why)))

    async def settle(self) -> None:
        """The incident is closing: role pages still retrying are cancelled (a resolve follows them)."""
        for task in self._pages:
            task.cancel()
        await asyncio.gather(*self._pages, return_exceptions=True)
        self._pages.clear()

    async def acknowledge(self) -> None:
        for alert in list(self.state.pagerduty_alerts):
            if alert.status == "triggered":
                if await self._follow_up(alert, "acknowledge"):
                    alert.status = "acknowledged"
        self.board.publish()

    async def resolve(self) -> None:
        """Resolve every alert raised (one whose trigger did not answer too: PagerDuty drops a
        resolve for an alert it does not have)."""
        if not self.state.pagerduty_alerts:
            return
        for alert in list(self.state.pagerduty_alerts):
            if alert.status != "resolved" and await self._follow_up(alert, "resolve"):
                alert.status = "resolved"
        self.board.publish()

    # -- the activities -------------------------------------------------------------------------

    async def _trigger(self, route: str, role: str | None, why: str) -> None:
        plan = self.input.paging
        assert plan is not None
        key = dedup_key(self.state.incident_id, role)
        if any(a.dedup_key == key for a in self.state.pagerduty_alerts):
            return  # paged before (an escalation level paged again): PagerDuty already has it
        alert = PagedAlert(dedup_key=key, route=route)
        self.state.pagerduty_alerts.append(alert)
        event = PagerDutyTrigger(
            incident_id=self.state.incident_id,
            route=route,
            dedup_key=key,
            summary=f"{self.state.severity} {self.title}: {self.input.alert.summary}"
            + (f" — escalated to {role}" if role else ""),
            source=plan.source,
            severity=SEVERITY_MAP[self.state.severity],
            component=self.state.runbook,
            group=self.state.scope,
            event_class=self.input.alert.alertname,
            custom_details=self._details(),
            links=self._links(),
        )
        try:
            await workflow.execute_activity(
                "pagerduty_trigger",
                event,
                start_to_close_timeout=PAGERDUTY_TIMEOUT,
                retry_policy=PAGERDUTY_RETRY,
                summary=f"PagerDuty: page {route}",
                result_type=PagerDutyReceipt,
            )
        except FailureError as err:
            alert.status = "failed"
            await self._failed(f"page to {route} ({why})", err, fallback=True)
            return
        alert.status = "triggered"
        self.journal.record("escalation", f"paged {route} through PagerDuty", outcome=f"{why}; dedup_key {key}")
        self.board.publish()

    async def _follow_up(self, alert: PagedAlert, action: Literal["acknowledge", "resolve"]) -> bool:
        event = PagerDutyFollowUp(
            incident_id=self.state.incident_id, route=alert.route, dedup_key=alert.dedup_key, action=action
        )
        try:
            await workflow.execute_activity(
                "pagerduty_follow_up",
                event,
                start_to_close_timeout=PAGERDUTY_TIMEOUT,
                retry_policy=PAGERDUTY_RETRY,
                summary=f"PagerDuty: {action} {alert.route}",
                result_type=PagerDutyReceipt,
            )
        except FailureError as err:
            await self._failed(f"{action} of the {alert.route} alert", err, fallback=False)
            return False
        return True

    async def _failed(self, what: str, err: FailureError, *, fallback: bool) -> None:
        reason = failure_text(err)
        failure = f"PagerDuty {what} at {clock(workflow.now())}: {reason}"
        self.state.paging_failures.append(failure)
        entry = self.journal.record("escalation", f"paging failed: PagerDuty {what}", outcome=reason)
        workflow.logger.error("paging failed for %s: %s", self.state.incident_id, failure)
        workflow.metric_meter().create_counter(
            "runbooks_paging_failures", "escalation pages Slack did not take after every retry"
        ).add(1, {"runbook": self.state.runbook})
        self.board.publish()
        if fallback:
            entry.note("the page went to the Slack thread instead")
            await self.slack.post(
                f":rotating_light: *Paging failed* — PagerDuty did not take the {what}: {reason}.\n"
                f"On-call ({self.state.escalated_to}), this is your page: {self.state.severity} {self.title}: "
                f"{self.input.alert.summary}",
                purpose="pagerduty-failed",
            )

    # -- what the alert carries -----------------------------------------------------------------

    def _details(self) -> dict[str, Any]:
        s = self.state
        done = [
            f"{e.title}" + (f": {e.outcome}" if e.outcome else "")
            for e in self.journal.entries
            if e.kind in ("step", "action", "check", "status")
        ]
        return {
            "incident": s.incident_id,
            "status": STATUS_WORDS[s.status],
            "severity": s.severity,
            "playbook": s.runbook,
            "scope": s.scope,
            "cluster": s.cluster,
            "escalated_to": s.escalated_to,
            "automation found and did": done[-10:],
            "gates waiting": [g.question for g in s.pending_gates],
        }

    def _links(self) -> list[PagerDutyLink]:
        links: list[PagerDutyLink] = []
        if self.input.ui_url:
            info = workflow.info()
            ui = f"{self.input.ui_url.rstrip('/')}/namespaces/{info.namespace}/workflows/{info.workflow_id}"
            links.append(PagerDutyLink(href=ui, text="Temporal UI: the incident"))
        thread = self.state.slack_thread
        if thread is not None and not thread.console:
            links.append(
                PagerDutyLink(
                    href=f"https://slack.com/archives/{thread.channel}/p{thread.ts.replace('.', '')}",
                    text="Slack thread",
                )
            )
        runbook = self.input.alert.annotations.get("runbook_url")
        if runbook:
            links.append(PagerDutyLink(href=runbook, text="Runbook"))
        return links
