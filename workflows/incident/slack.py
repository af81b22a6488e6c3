"""The incident's Slack side: the announcement, its thread, approval messages.

Every post has an idempotency key (incident id + post number + purpose), so a retried
activity never posts twice. A post Slack does not take after its retries is recorded on the
timeline and returned as None; it never stops the incident.

Rate limits (HTTP 429) are waited out for as long as Slack's Retry-After says, up to a bound of
minutes (SLACK_RATE_LIMIT_BOUND); other failures get a few quick attempts (activities/slack.py).
Everything after the announcement goes in its thread: a post made while the announcement is
still being retried waits for it, and when the announcement did not get through, the next post
makes it first. A post never goes out unthreaded in its place (patch SLACK_THREAD_FIRST).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.incident.approval import ApprovalGate
from workflows.incident.state import IncidentState, failure_text
from workflows.incident.models import IncidentInput
from workflows.incident.report import STATUS_WORDS, clock
from workflows.incident.timeline import TimelineEntry

with workflow.unsafe.imports_passed_through():
    from activities.slack_models import (
        ApprovalRequest,
        IncidentMessage,
        MessageLink,
        MessageUpdate,
        SlackMessageRef,
        ThreadMessage,
    )

# Slack: a failed post must never stop the incident, so retries are bounded and failures are swallowed.
# No attempt cap here: a rate limit's retries come every Retry-After and would use a cap up inside the
# limit window; the bound is time (schedule-to-close), and the activity itself ends other failures
# after a few attempts (activities/slack.py TRANSIENT_ATTEMPTS).
SLACK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20))
SLACK_TIMEOUT = timedelta(seconds=30)
# How long a rate-limited post is retried: the announcement longer, as every later post hangs under it.
SLACK_RATE_LIMIT_BOUND = timedelta(minutes=5)
ANNOUNCEMENT_RATE_LIMIT_BOUND = timedelta(minutes=15)
# After the announcement failed, posts in this while are not made (each would wait out Slack again);
# the first post after it makes the announcement once more.
ANNOUNCE_AGAIN = SLACK_RATE_LIMIT_BOUND
# Incidents started before it posted unthreaded when the announcement had failed; since, posts wait
# for the announcement or make it first.
SLACK_THREAD_FIRST = "slack-thread-first"


_NO_THREAD = "the incident's announcement did not get through to Slack, so its thread does not exist"


class IncidentSlack:
    """Posts for one incident; `record` puts a failed post on the incident's timeline."""

    def __init__(
        self, inp: IncidentInput, state: IncidentState, title: str, record: Callable[..., TimelineEntry]
    ) -> None:
        self.input = inp
        self.state = state
        self.title = title
        self._record = record
        self._posts = 0  # numbers posts: the idempotency key is incident id + number + purpose
        self._announcing = False  # the announcement's activity is running (or retrying)
        self._announcement_failed_at: datetime | None = None

    def key(self, purpose: str) -> str:
        self._posts += 1
        return f"{self.state.incident_id}:{self._posts}:{purpose}"

    def _activity_options(self, summary: str, bound: timedelta = SLACK_RATE_LIMIT_BOUND) -> dict[str, Any]:
        """The Slack activities (activities/slack.py), called by name: each answers a SlackMessageRef."""
        return {
            "start_to_close_timeout": SLACK_TIMEOUT,
            "schedule_to_close_timeout": bound,
            "retry_policy": SLACK_RETRY,
            "summary": summary,
            "result_type": SlackMessageRef,
        }

    async def open_thread(self) -> None:
        """The announcement: the incident's first message, whose thread every later post goes in."""
        if self._announcing:  # a post is making it (SLACK_THREAD_FIRST): that one is this one
            await workflow.wait_condition(lambda: not self._announcing)
        if self.state.slack_thread is not None:
            return
        alert = self.input.alert
        msg = IncidentMessage(
            key=self.key("incident"),
            incident_id=self.state.incident_id,
            channel=self.input.slack_channel,
            severity=self.state.severity,
            title=self.title,
            summary=alert.summary,
            description=alert.annotations.get("description"),
            runbook_url=alert.annotations.get("runbook_url"),
            ui_url=self._ui_link(),
            labels={k: v for k, v in alert.labels.items() if k != "alertname"},
            incident_commander=self.state.incident_commander,
            status=STATUS_WORDS[self.state.status].capitalize(),
            started_at=alert.starts_at,
            cluster=self.state.cluster,
        )
        self._announcing = True
        try:
            self.state.slack_thread = await workflow.execute_activity(
                "post_incident",
                msg,
                **self._activity_options("announce the incident in Slack", ANNOUNCEMENT_RATE_LIMIT_BOUND),
            )
        except FailureError as err:
            self._announcement_failed_at = workflow.now()
            self._record("message", "incident announcement not posted", outcome=failure_text(err))
        finally:
            self._announcing = False

    async def _thread(self) -> tuple[SlackMessageRef | None, bool]:
        """The thread a post goes in, and whether it may go out without one (only incidents started
        before SLACK_THREAD_FIRST did). Waits for an announcement being retried; makes one not made
        yet or that failed more than ANNOUNCE_AGAIN ago."""
        thread = self.state.slack_thread
        if thread is not None:
            return thread, True
        if not workflow.patched(SLACK_THREAD_FIRST):
            return None, True
        if self._announcing:
            await workflow.wait_condition(lambda: not self._announcing)
        elif self._announcement_failed_at is None or workflow.now() - self._announcement_failed_at >= ANNOUNCE_AGAIN:
            await self.open_thread()  # not made yet, or failed a while ago: make it first
        return self.state.slack_thread, False

    async def post(
        self,
        text: str,
        *,
        purpose: str,
        blocks: list[dict[str, Any]] | None = None,
        links: list[MessageLink] | None = None,
    ) -> SlackMessageRef | None:
        thread, unthreaded_ok = await self._thread()
        if thread is None and not unthreaded_ok:
            self._record("message", f"Slack post '{purpose}' not made", outcome=_NO_THREAD)
            return None
        msg = ThreadMessage(
            key=self.key(purpose),
            incident_id=self.state.incident_id,
            channel=thread.channel if thread else self.input.slack_channel,
            thread_ts=thread.ts if thread and not thread.console else None,
            text=text,
            blocks=blocks,
            links=links or [],
            cluster=self.state.cluster,
        )
        try:
            return await workflow.execute_activity("post_in_thread", msg, **self._activity_options(f"Slack: {purpose}"))
        except FailureError as err:
            self._record("message", f"Slack post '{purpose}' failed", outcome=failure_text(err))
            return None

    async def request_approval(self, gate: ApprovalGate) -> None:
        thread, unthreaded_ok = await self._thread()
        if thread is None and not unthreaded_ok:
            self._record("message", f"approval request '{gate.gate}' not posted", outcome=_NO_THREAD)
            return
        req = ApprovalRequest(
            key=self.key(f"approval-{gate.gate}"),
            incident_id=self.state.incident_id,
            channel=thread.channel if thread else self.input.slack_channel,
            thread_ts=thread.ts if thread and not thread.console else None,
            gate=gate.gate,
            question=gate.question,
            destructive=gate.destructive,
            deadline=gate.deadline,
            approvers=gate.approvers,
            cluster=self.state.cluster,
        )
        try:
            ref = await workflow.execute_activity(
                "request_approval", req, **self._activity_options(f"ask for approval: {gate.gate}")
            )
        except FailureError as err:
            self._record("message", f"approval request '{gate.gate}' not posted", outcome=failure_text(err))
            return
        gate.message_channel, gate.message_ts = ref.channel, ref.ts

    async def close_approval_message(self, gate: ApprovalGate) -> None:
        """The buttons go away once the gate is decided, so nobody clicks a stale question."""
        if not gate.message_ts or not gate.message_channel:
            return
        when = f" at {clock(gate.decided_at)}" if gate.decided_at else ""
        comment = f" — “{gate.decision.comment}”" if gate.decision and gate.decision.comment else ""
        upd = MessageUpdate(
            incident_id=self.state.incident_id,
            channel=gate.message_channel,
            ts=gate.message_ts,
            text=f"*{gate.question}*\n{gate.outcome}{when}{comment}",
            cluster=self.state.cluster,
        )
        try:
            await workflow.execute_activity(
                "update_message", upd, **self._activity_options(f"close approval message: {gate.gate}")
            )
        except FailureError as err:
            self._record("message", f"approval message '{gate.gate}' not updated", outcome=failure_text(err))

    def _ui_link(self) -> str | None:
        if not self.input.ui_url:
            return None
        info = workflow.info()
        return f"{self.input.ui_url.rstrip('/')}/namespaces/{info.namespace}/workflows/{info.workflow_id}"
