"""Polling until the world catches up: the simulator, Prometheus and Temporal all act on their own time.

One helper in two forms: `wait_for` blocks (plain test functions), `wait_for_async` yields to the event
loop between polls (async tests, where the worker runs in the same loop). Both return the predicate's
first truthy value and fail the test, naming `what` and the last value seen, after `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    shown = repr(last)
    return AssertionError(
        f"timed out after {timeout:g}s waiting for {what}; last seen: "
        f"{shown if len(shown) <= 2000 else shown[:2000] + '...'}"
    )


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 30.0, *, every: float = 0.1) -> T:
    """The first truthy value of `predicate()`, polled every `every` seconds for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, value)
        time.sleep(every)


async def wait_for_async(
    predicate: Callable[[], T | Awaitable[T]], what: str, timeout: float = 30.0, *, every: float = 0.2
) -> T:
    """`wait_for` in an event loop: `predicate` may be a coroutine function (a query, a client call) or a
    plain one (the simulator's audit log); the loop runs between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise _timed_out(what, timeout, value)
        await asyncio.sleep(every)
