"""What integration tests ask of (and answer to) a running incident: its state, its timeline, waits on
both, and gates answered as they are asked."""

from __future__ import annotations

import asyncio
import contextlib

from temporalio.client import WorkflowHandle

from tests.waiting import wait_for_async
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, QUERY_TIMELINE, UPDATE_DECIDE, Decision
from workflows.incident.timeline import TimelineEntry


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


async def settled(handle: WorkflowHandle, timeout: float = 60.0) -> IncidentState:
    """Wait until the playbook has done all it will: resolved, failed, or waiting for a human."""
    async def done() -> IncidentState | None:
        s = await state_of(handle)
        return s if s.awaiting_human or s.status in ("resolved", "failed") else None

    return await wait_for_async(done, "the playbook to finish its steps", timeout)


async def answering_gates(handle: WorkflowHandle, approved: bool, decided: list[str], **decision: str) -> None:
    """Answer every gate as it is asked (`approved`, by alice unless `decision` says otherwise), appending
    each gate to `decided`; runs until cancelled. A gate withdrawn meanwhile is skipped."""
    fields = {"by": "alice", **decision}
    while True:
        with contextlib.suppress(Exception):
            for gate in (await state_of(handle)).pending_gates:
                await handle.execute_update(UPDATE_DECIDE, Decision(gate=gate.gate, approved=approved, **fields),
                                            result_type=str)
                decided.append(gate.gate)
        await asyncio.sleep(0.2)
