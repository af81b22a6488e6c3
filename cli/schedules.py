"""`runbooks schedules list|apply|pause|unpause|trigger ID [--wait] [--cluster NAME]`: the scheduled
checks from the terminal.

Each served cluster has its own three schedules (`gpu-health-check.east`, ...). A command acts on
one cluster's: `--cluster NAME`, else the one an ID names (`gpu-health-check.west`), else
`clusters.default`'s; `list` without `--cluster` shows every served cluster's. ID is a check's name
(`gpu-health-check`) or a schedule's full id, `temporal.incident_id_prefix` in front or not.

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
    for verb, text, cluster_help in (
        (
            "list",
            "each schedule: state, when it runs, next and last runs",
            "only this cluster's (default: every served one's)",
        ),
        (
            "apply",
            "create or update the schedules from the configuration",
            "this cluster's (default: clusters.default)",
        ),
    ):
        v = verbs.add_parser(verb, help=text)
        common(v)
        v.add_argument("--cluster", default=None, metavar="NAME", help=cluster_help)
    for verb, text in (
        ("pause", "pause a schedule (it stays paused across worker restarts)"),
        ("unpause", "resume a paused schedule"),
        ("trigger", "run a check now"),
    ):
        v = verbs.add_parser(verb, help=text)
        common(v)
        v.add_argument(
            "id", help=f"a check ({', '.join(CHECK_IDS)}), or a schedule's id: CHECK.CLUSTER (gpu-health-check.east)"
        )
        v.add_argument(
            "--cluster",
            default=None,
            metavar="NAME",
            help="the cluster whose schedule (default: the ID's, else clusters.default)",
        )
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

    from worker.schedule_specs import DEV_PAUSE_NOTE, apply_schedules, describe_schedules, for_cluster
    from cli.settings import connect, read_dev_state

    verb = args.schedules_command
    # The arguments are checked before Temporal is called: a wrong one changes nothing.
    cluster = _served(args.cluster, settings) if args.cluster else None
    sid, owner = _schedule_id(args.id, cluster, settings) if verb in ("pause", "unpause", "trigger") else ("", "")
    client = await connect(settings)
    if verb == "apply":
        # On the `runbooks dev` of --home with drills, a schedule re-created here starts paused as there.
        dev = read_dev_state(args.home) or {}
        on_dev = dev.get("temporal") == settings.temporal.address and dev.get("drills_enabled")
        applied = for_cluster(settings, cluster or settings.clusters.default)
        for line in await apply_schedules(client, applied, pause_paging=DEV_PAUSE_NOTE if on_dev else None):
            print(line)
        return 0
    if verb == "list":
        print(await describe_schedules(client, settings, [cluster] if cluster else settings.clusters.names()))
        return 0
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
            flag = "" if owner == settings.clusters.default else f" --cluster {owner}"
            raise ScheduleError(
                f"no schedule {sid!r}: run `runbooks schedules apply{flag}` (or start cluster {owner}'s worker)"
            ) from None
        raise
    return 0


def _served(cluster: str, settings: Settings) -> str:
    if not settings.clusters.serves(cluster):
        raise ScheduleError(
            f"cluster {cluster!r} is not served: clusters.served lists {', '.join(settings.clusters.names())}"
        )
    return cluster


def _schedule_id(given: str, cluster: str | None, settings: Settings) -> tuple[str, str]:
    """The schedule ID means, and its cluster: a check resolved with `cluster` (None: clusters.default),
    or a full id `[prefix]CHECK.CLUSTER` (a `cluster` that differs from its own is refused)."""
    from worker.schedule_specs import schedule_id

    prefix = settings.temporal.incident_id_prefix
    bare = given.removeprefix(prefix) if prefix and given.startswith(prefix) else given
    if bare in CHECK_IDS:
        cluster = cluster or settings.clusters.default
        return schedule_id(settings, bare, cluster), cluster
    check = next((c for c in CHECK_IDS if bare.startswith(c + ".")), None)
    if check is None:
        raise ScheduleError(
            f"no scheduled check {given!r}; known: {', '.join(CHECK_IDS)} "
            f"(or a schedule's id, e.g. {schedule_id(settings, CHECK_IDS[0], settings.clusters.default)})"
        )
    named = bare.removeprefix(check + ".")
    if cluster is not None and named != cluster:
        raise ScheduleError(f"{given!r} is cluster {named}'s schedule, not --cluster {cluster}'s")
    return schedule_id(settings, check, _served(named, settings)), named


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
