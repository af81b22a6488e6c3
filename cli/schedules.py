"""`runbooks schedules list|apply|pause|unpause|trigger ID [--wait]`: the scheduled checks from the terminal.

The schedules themselves (what runs when, the maintenance window, `apply`) are in
worker/schedule_specs.py; this module stays light to import, so `runbooks --help` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import Client

    from settings import Settings

# The schedules' ids (without `temporal.incident_id_prefix`), as workflows/checks/models.py names them.
CHECK_IDS = ("gpu-health-check", "model-health-check", "morning-health-check")


class ScheduleError(Exception):
    """A schedule command that cannot be done; the message says why."""


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """`runbooks schedules ...`; `common` adds the Temporal/config/--home flags every command takes."""
    p = sub.add_parser("schedules", help="the scheduled checks (GPU, model, morning): list, apply, pause, trigger")
    verbs = p.add_subparsers(dest="schedules_command", required=True)
    for verb, text in (
        ("list", "each schedule: state, when it runs, next and last runs"),
        ("apply", "create or update the schedules from the configuration"),
    ):
        common(verbs.add_parser(verb, help=text))
    for verb, text in (
        ("pause", "pause a schedule (it stays paused across worker restarts)"),
        ("unpause", "resume a paused schedule"),
        ("trigger", "run a check now"),
    ):
        v = verbs.add_parser(verb, help=text)
        common(v)
        v.add_argument("id", help=f"schedule id: {', '.join(CHECK_IDS)}")
        if verb in ("pause", "unpause"):
            v.add_argument("--note", default=None, help="why (shown in the Temporal UI)")
        if verb == "trigger":
            v.add_argument("--wait", action="store_true", help="wait for the check and print its result")
            v.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits at most")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Dispatch `runbooks schedules VERB`; a refusal is printed and exits 2."""
    try:
        return asyncio.run(_run(args, settings))
    except ScheduleError as err:
        print(f"runbooks schedules {args.schedules_command}: {err}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.service import RPCError, RPCStatusCode

    from worker.schedule_specs import DEV_PAUSE_NOTE, apply_schedules, describe_schedules
    from cli.settings import connect, read_dev_state

    client = await connect(settings)
    verb = args.schedules_command
    if verb == "apply":
        # On the `runbooks dev` of --home with drills, a schedule re-created here starts paused as there.
        dev = read_dev_state(args.home) or {}
        on_dev = dev.get("temporal") == settings.temporal.address and dev.get("drills_enabled")
        for line in await apply_schedules(client, settings, pause_paging=DEV_PAUSE_NOTE if on_dev else None):
            print(line)
        return 0
    if verb == "list":
        print(await describe_schedules(client, settings))
        return 0
    sid = _schedule_id(args.id, settings)
    handle = client.get_schedule_handle(sid)
    try:
        if verb == "pause":
            await handle.pause(note=args.note or "paused with runbooks schedules pause")
            print(f"{sid}: paused")
        elif verb == "unpause":
            await handle.unpause(note=args.note or "unpaused with runbooks schedules unpause")
            print(f"{sid}: active")
        else:
            return await _trigger(client, sid, args.wait, args.timeout)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScheduleError(f"no schedule {sid!r}: run `runbooks schedules apply` (or start the worker)") from None
        raise
    return 0


def _schedule_id(given: str, settings: Settings) -> str:
    prefix = settings.temporal.incident_id_prefix
    if given in CHECK_IDS:
        return prefix + given
    if given.startswith(prefix) and given.removeprefix(prefix) in CHECK_IDS:
        return given
    raise ScheduleError(f"no scheduled check {given!r}; known: {', '.join(CHECK_IDS)}")


async def _trigger(client: Client, sid: str, wait: bool, timeout: float) -> int:
    """Run the check now (even if a scheduled run is under way: a human asked), print the run's id
    and, with `wait`, its result as JSON; exit 1 if the check failed."""
    from temporalio.client import ScheduleActionExecutionStartWorkflow, ScheduleOverlapPolicy, WorkflowFailureError

    handle = client.get_schedule_handle(sid)
    before = {
        a.action.workflow_id
        for a in (await handle.describe()).info.recent_actions
        if isinstance(a.action, ScheduleActionExecutionStartWorkflow)
    }
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    deadline = asyncio.get_running_loop().time() + min(timeout, 60)
    started = None
    while started is None:
        desc = await handle.describe()
        started = next(
            (
                a.action
                for a in desc.info.recent_actions
                if isinstance(a.action, ScheduleActionExecutionStartWorkflow) and a.action.workflow_id not in before
            ),
            None,
        )
        if started is None:
            if asyncio.get_running_loop().time() > deadline:
                raise ScheduleError(f"{sid}: triggered, but no run started within {min(timeout, 60):g}s")
            await asyncio.sleep(0.3)
    print(f"{sid}: started {started.workflow_id}", flush=True)
    if not wait:
        return 0
    run = client.get_workflow_handle(started.workflow_id, run_id=started.first_execution_run_id)
    try:
        result = await asyncio.wait_for(run.result(), timeout)
    except TimeoutError:
        raise ScheduleError(f"{started.workflow_id}: still running after {timeout:g}s") from None
    except WorkflowFailureError as err:  # the check failed (it said so in the ops channel)
        cause = getattr(err, "cause", None)
        print(f"{started.workflow_id}: failed: {getattr(cause, 'message', None) or err}")
        return 1
    print(
        json.dumps(result, indent=2, default=str)
        if not hasattr(result, "model_dump_json")
        else result.model_dump_json(indent=2)
    )
    return 0
