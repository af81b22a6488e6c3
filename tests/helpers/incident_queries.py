"""What integration tests ask of (and answer to) a running incident: its state, its timeline, waits on
both, and gates answered as they are asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from tests.helpers.waiting import wait_for_async
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, QUERY_TIMELINE, UPDATE_DECIDE, Decision
from workflows.incident.timeline import TimelineEntry


# A query waits for a worker to answer it; one too busy to answer in time (a loaded machine) makes the
# RPC time out. Queries change nothing, so asking again is safe.
_BUSY = (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE)


async def query(handle: WorkflowHandle, name: str, result_type: type, attempts: int = 4):
    """`handle.query(name)`, asked again (up to `attempts` times, 1 s apart) when the RPC times out."""
    for attempt in range(1, attempts + 1):
        try:
            return await handle.query(name, result_type=result_type)
        except RPCError as err:
            if attempt == attempts or (err.status not in _BUSY and "Timeout expired" not in str(err)):
                raise
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


async def state_of(handle: WorkflowHandle) -> IncidentState:
    return await query(handle, QUERY_STATE, IncidentState)


async def timeline_of(handle: WorkflowHandle) -> list[TimelineEntry]:
    return await query(handle, QUERY_TIMELINE, list[TimelineEntry])


async def until(
    handle: WorkflowHandle,
    predicate: Callable[[IncidentState], object],
    what: str = "the expected state",
    timeout: float = 30.0,
) -> IncidentState:
    """Poll the `state` query until `predicate(state)` holds; the state then. On the time-skipping server
    this waits in real time: the server skips no time meanwhile. A failure shows the last state and the
    timeline."""
    last: list[IncidentState] = []

    async def reached() -> IncidentState | None:
        last[:] = [await state_of(handle)]
        return last[0] if predicate(last[0]) else None

    try:
        return await wait_for_async(reached, what, timeout)
    except AssertionError:
        try:
            seen = "\n".join(f"  {e.kind}: {e.title}: {e.outcome}" for e in await timeline_of(handle))
        except Exception as err:  # noqa: BLE001 - the failure to report is the wait's
            seen = f"  (not read: {err})"
        state = last[0].model_dump_json(indent=1) if last else "none read"
        raise AssertionError(
            f"{handle.id} never reached {what} within {timeout:g}s; last state: {state}\nthe timeline:\n{seen}"
        ) from None


async def gate_asked(handle: WorkflowHandle, gate: str, timeout: float = 30.0) -> IncidentState:
    """Wait until `gate` (as a decision names it, `kind:target`) is pending; the state then."""
    return await until(
        handle, lambda s: any(g.gate == gate for g in s.pending_gates), f"the {gate} approval request", timeout
    )


async def step_done(handle: WorkflowHandle, title: str, timeout: float = 30.0) -> IncidentState:
    """Wait until the timeline's step `title` has ended; the state then."""

    async def done() -> IncidentState | None:
        ended = any(e.title == title and e.ended_at for e in await timeline_of(handle))
        return await state_of(handle) if ended else None

    return await wait_for_async(done, f"step {title!r} to end", timeout)


async def settled(handle: WorkflowHandle, timeout: float = 60.0) -> IncidentState:
    """Wait until the playbook has done all it will: resolved, failed, or waiting for a human."""
    return await until(
        handle,
        lambda s: s.awaiting_human or s.status in ("resolved", "failed"),
        "the playbook to finish its steps",
        timeout,
    )


async def answering_gates(handle: WorkflowHandle, approved: bool, decided: list[str], **decision: str) -> None:
    """Answer every gate as it is asked (`approved`, by alice unless `decision` says otherwise), appending
    each gate to `decided`; runs until cancelled. A gate withdrawn meanwhile is skipped."""
    fields = {"by": "alice", **decision}
    while True:
        with contextlib.suppress(Exception):
            for gate in (await state_of(handle)).pending_gates:
                await handle.execute_update(
                    UPDATE_DECIDE, Decision(gate=gate.gate, approved=approved, **fields), result_type=str
                )
                decided.append(gate.gate)
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def approving_everything(handle: WorkflowHandle, **decision: str) -> AsyncIterator[list[str]]:
    """Approve each gate as it is asked, by alice unless `decision` says otherwise (as `runbooks drill
    --auto-approve`), while the block runs, so the playbook goes all the way; yields the gates decided so far."""
    decided: list[str] = []
    task = asyncio.create_task(answering_gates(handle, True, decided, **decision))
    try:
        yield decided
    finally:
        task.cancel()
