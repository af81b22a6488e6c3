"""What every playbook writes: a pause that a human's step cuts short, a poll until a deadline
(a verification, a recovery), and the note when the alert names no object to act on.

Each wait is a durable timer (`workflow.wait_condition` with a timeout), so it survives a worker
crash and ends at once when `stop()` turns true. The shapes below are the playbooks' own; their
commands (the reads, the timers and their durations) are in the saved histories that
tests/test_replay.py replays, so a change here is a change to every playbook's history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow

T = TypeVar("T")

SHORTEST_WAIT = timedelta(seconds=1)


async def pause(
    stop: Callable[[], bool], duration: timedelta, *, summary: str, shortest: timedelta | None = SHORTEST_WAIT
) -> bool:
    """Wait `duration` (at least `shortest`, when given) unless `stop()` turns true first.

    True when `stop()` ended it, False when the time passed. `summary` names the timer in the UI.
    """
    if shortest is not None:
        duration = max(duration, shortest)
    try:
        await workflow.wait_condition(stop, timeout=duration, timeout_summary=summary)
    except asyncio.TimeoutError:
        return False
    return True


async def poll_until(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    deadline: datetime,
    every: timedelta,
    stop: Callable[[], bool],
    summary: str,
    ends: Callable[[], bool] | None = None,
    to_deadline: bool = True,
    shortest: timedelta | None = SHORTEST_WAIT,
    look_again: bool = True,
) -> T:
    """`read()` until `done(result)`, the deadline passes or `stop()`; returns the last result.

    After each read the poll ends when `done(result)`, `ends()` (default: `stop()`) or the deadline
    has come; else it pauses `every` (`to_deadline`: no later than the deadline; at least
    `shortest`, when given), a pause that `stop()` cuts short. A pause cut short is followed by one
    more read (`look_again`), or ends the poll with the result before it.
    """
    ends = ends or stop
    while True:
        result = await read()
        if done(result) or ends() or workflow.now() >= deadline:
            return result
        wait = min(every, deadline - workflow.now()) if to_deadline else every
        if await pause(stop, wait, summary=summary, shortest=shortest) and not look_again:
            return result


async def missing_target(
    say: Callable[..., Awaitable[Any]], kind: str, *, steps: str, labels: str | None = None
) -> None:
    """The alert names no `kind` (an InferenceService, a node) to act on: on-call follows `steps`
    (the SOP's, e.g. "seed 004's high-latency steps") by hand. `say` is `Incident.say`; `labels`
    the alert labels that would have named it. The playbook body returns after this."""
    where = f" (labels {labels})" if labels else ""
    await say(
        f":warning: The alert names no {kind}{where}; on-call, please follow {steps} by hand.", purpose="no-target"
    )
