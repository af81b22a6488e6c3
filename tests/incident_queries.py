"""What integration tests ask a running incident: its state, its timeline, and waits on both."""

from __future__ import annotations

from temporalio.client import WorkflowHandle

from tests.waiting import wait_for_async
from workflows.incident import IncidentState
from workflows.models import QUERY_STATE, QUERY_TIMELINE
from workflows.timeline import TimelineEntry


async def state_of(handle: WorkflowHandle) -> IncidentState:
    return await handle.query(QUERY_STATE, result_type=IncidentState)


async def timeline_of(handle: WorkflowHandle) -> list[TimelineEntry]:
    return await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])


async def gate_asked(handle: WorkflowHandle, gate: str, timeout: float = 30.0) -> IncidentState:
    """Wait until `gate` (as a decision names it, `kind:target`) is pending; the state then."""
    async def asked() -> IncidentState | None:
        state = await state_of(handle)
        return state if any(g.gate == gate for g in state.pending_gates) else None

    return await wait_for_async(asked, f"the {gate} approval request", timeout)


async def step_done(handle: WorkflowHandle, title: str, timeout: float = 30.0) -> IncidentState:
    """Wait until the timeline's step `title` has ended; the state then."""
    async def done() -> IncidentState | None:
        ended = any(e.title == title and e.ended_at for e in await timeline_of(handle))
        return await state_of(handle) if ended else None

    return await wait_for_async(done, f"step {title!r} to end", timeout)
