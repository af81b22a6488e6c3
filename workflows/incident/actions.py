"""What an incident does on the cluster: steps of the SOP, reads (`check`) and writes (`act`).

A write is refused (None, recorded why) once automation must not act: handed over, resolved,
or every alert of the scope resolved (a human's rollback excepted). It is claimed through the
coordinator first when the incident is coordinated (holds, caps: a capped or held write asks a
human), sent as a server-side dry run in shadow mode, and every ClusterChange it returns is
recorded with the value it replaced and the finding that justified it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Protocol

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.incident.claims import Ask, IncidentCoordination
from workflows.incident.guard import Guard
from workflows.incident.state import IncidentState, StatusBoard, change_outcome, changes_in, failure_text, where
from workflows.incident.timeline import Journal, TimelineEntry

with workflow.unsafe.imports_passed_through():
    from activities.models import ClusterChange, writes_before_failure

# Cluster work: retried with backoff, a few times, then the playbook decides.
ACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)


class ActivityRunner(Protocol):
    """What the activity facades (workflows/incident/calls.py) run their calls through: an
    `IncidentActions`, or the `Incident` that holds one."""

    def check(
        self,
        activity: Callable[..., Any] | str,
        arg: BaseModel,
        *,
        summary: str,
        timeout: timedelta = ...,
        retry: RetryPolicy = ...,
        heartbeat_timeout: timedelta | None = None,
        result_type: type | None = None,
    ) -> Awaitable[Any]: ...

    def act(
        self,
        activity: Callable[..., Any] | str,
        arg: BaseModel,
        *,
        summary: str,
        timeout: timedelta = ...,
        retry: RetryPolicy = ...,
        heartbeat_timeout: timedelta | None = None,
        result_type: type | None = None,
        finding: str | None = None,
    ) -> Awaitable[Any]: ...


class IncidentActions:
    """Steps, reads and writes of one incident. `coordination` is None when the incident is not
    coordinated (no claims); `ask` is the incident's approval gate (a capped or held write asks)."""

    def __init__(
        self,
        state: IncidentState,
        guard: Guard,
        journal: Journal,
        board: StatusBoard,
        coordination: IncidentCoordination | None,
        ask: Ask,
    ) -> None:
        self.state = state
        self.guard = guard
        self.journal = journal
        self.board = board
        self.coordination = coordination
        self.ask = ask

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[TimelineEntry]:
        """A step of the SOP on the timeline, with start, end, outcome and details."""
        entry = self.journal.record("step", name, outcome=None)
        entry.ended_at = None
        self.state.current_step = name
        self.board.publish()
        try:
            yield entry
        except GeneratorExit:
            # The worker is evicting this run from its cache (shutdown, or replay elsewhere):
            # there is no workflow context left to record anything in.
            raise
        except asyncio.CancelledError:
            entry.outcome = entry.outcome or "cancelled"
            self.end_step(entry, name)
            raise
        except BaseException as err:
            entry.outcome = f"failed: {failure_text(err)}"
            self.end_step(entry, name)
            raise
        self.end_step(entry, name)

    def end_step(self, entry: TimelineEntry, name: str) -> None:
        entry.ended_at = workflow.now()
        entry.outcome = entry.outcome or "done"
        if self.state.current_step == name:
            self.state.current_step = None
        self.board.publish()

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
        it goes next to the write on the timeline and in the report. Returns None, recording why,
        when automation must not write. In shadow mode `arg.dry_run` is set: the API server
        validates the write and changes nothing; a request without `dry_run` is not sent at all.
        """
        guard, record = self.guard, self.journal.record
        why_not = guard.why_not_writing()
        if why_not:
            record("action", summary, outcome=f"skipped: {why_not}")
            return None
        if self.state.mode == "shadow":
            if "dry_run" not in type(arg).model_fields:
                record("action", f"would have: {summary}", outcome="shadow mode: not sent (no dry run for it)")
                return None
            arg = arg.model_copy(update={"dry_run": True})
        elif self.coordination is not None and not await self.coordination.may_write(
            activity, arg, summary, self.ask, record, lambda: guard.why_not_writing() is None
        ):
            record("action", summary, outcome=f"skipped: {guard.why_not_writing() or 'not approved'}")
            return None
        if self.state.status in ("open", "acknowledged"):
            self.board.set_status("mitigating")
        try:
            result = await self.execute(activity, arg, summary, timeout, retry, heartbeat_timeout, result_type)
        except ActivityError as err:
            # Writes the activity made before it failed are on the record all the same (rollback needs them).
            self._record_changes(writes_before_failure(err), finding, note="made before the activity failed")
            raise
        self._record_changes(list(changes_in(result)), finding)
        return result

    def _record_changes(self, changes: list[ClusterChange], finding: str | None, *, note: str | None = None) -> None:
        for change in changes:
            change.finding = change.finding or finding
            self.state.changes.append(change)
            title = f"{change.action} {change.kind} {where(change)}"
            entry = self.journal.record(
                "action", f"would have: {title}" if change.dry_run else title, outcome=change_outcome(change)
            )
            if change.finding:
                entry.note(f"because: {change.finding}")
            if note:
                entry.note(note)
        self.board.publish()

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
        return await self.execute(activity, arg, summary, timeout, retry, heartbeat_timeout, result_type)

    async def execute(
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
            activity,  # type: ignore[arg-type, call-overload]
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry,
            summary=summary,
            result_type=result_type,
        )
