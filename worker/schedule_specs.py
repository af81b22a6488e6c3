"""The scheduled checks as Temporal Schedules, kept in step with the configuration.

Each cluster (settings/clusters.py) has its own three schedules, which start the check
workflows of workflows/checks/workflows.py on that cluster's task queue, so that cluster's workers
run them and their findings are that cluster's. A schedule's id, also the id its runs start with,
is `<temporal.incident_id_prefix><check>.<cluster>` (`schedule_id`): `gpu-health-check.east`,
`model-health-check.east`, `morning-health-check.east`. A worker applies its own cluster's at its
start, `runbooks schedules apply --cluster NAME` does it by hand; both create what is missing and
update what differs, keeping a schedule's paused state and note (a human's pause survives a worker
restart), and touch no other cluster's schedules. `schedules.enabled: false` deletes them. The
default cluster's apply adopts a schedule 1.0 made (id `<prefix><check>`, no cluster): its paused
state and note go to the new schedule, and the old one is deleted, so an upgrade neither loses a
human's pause nor runs a check twice. `runbooks dev` with drills enabled creates the two paging
schedules paused (`DEV_PAUSE_NOTE`): a scheduled GPU check during a drill would open a second
incident beside the drill's; `trigger` still runs them.

Policies: overlap SKIP (a check still running makes the next one skip, never pile up), a bounded
catch-up window (a run missed while Temporal was down runs only if this late), jitter on the
frequent checks. The maintenance window (seed 003) is the GPU and model schedules' `skip`
calendar, so the server starts no paging check inside it; the Temporal UI's Schedules page
shows it. The morning report runs whatever the window.

The commands (`runbooks schedules list|apply|pause|unpause|trigger ID [--cluster NAME]`): cli/schedules.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from settings import ScheduleSettings, Settings, serving
from workflows.checks.models import (
    CHECK_IDS,
    GPU_HEALTH_CHECK,
    MODEL_HEALTH_CHECK,
    MORNING_HEALTH_CHECK,
    WEEKDAYS,
    GpuHealthCheckInput,
    MaintenanceWindow,
    ModelHealthCheckInput,
    MorningHealthCheckInput,
)

log = logging.getLogger(__name__)

# The schedules that page (open incidents); `runbooks dev` with drills creates them paused.
PAGING_CHECKS = (GPU_HEALTH_CHECK, MODEL_HEALTH_CHECK)
# `{schedule}` becomes the schedule's id (apply_schedules), so the commands it names just work.
DEV_PAUSE_NOTE = (
    "paused by `runbooks dev`: drills are enabled, and a scheduled check during a drill would open "
    "a second incident beside the drill's; `runbooks schedules unpause {schedule}` runs it on its clock, "
    "`runbooks schedules trigger {schedule}` runs it once"
)

GPU_JITTER = timedelta(seconds=60)
MODEL_JITTER = timedelta(seconds=30)


@dataclass(frozen=True)
class CheckSchedule:
    check: str  # the check's name: gpu-health-check, model-health-check, morning-health-check
    id: str  # the schedule's id (schedule_id), also the id its runs start with
    schedule: Schedule
    what: str  # for `list`: when it runs, in words


def schedule_id(settings: Settings, check: str, cluster: str | None = None) -> str:
    """The id of cluster `cluster`'s schedule of `check` (None: the worker's, `settings.worker_cluster`):
    `<temporal.incident_id_prefix><check>.<cluster>`, e.g. `gpu-health-check.east`."""
    return f"{settings.temporal.incident_id_prefix}{check}.{cluster or settings.worker_cluster}"


def legacy_schedule_id(settings: Settings, check: str) -> str:
    """The id 1.0 gave the one cluster's schedule of `check`; the default cluster's apply adopts it."""
    return settings.temporal.incident_id_prefix + check


def for_cluster(settings: Settings, cluster: str) -> Settings:
    """The configuration as cluster `cluster`'s worker sees it: its schedules, on its task queue."""
    return serving(settings, cluster, settings.cluster_task_queue(cluster))


def pause_note(note: str, sid: str) -> str:
    """`note` with `{schedule}` written as the schedule's id (DEV_PAUSE_NOTE)."""
    return note.replace("{schedule}", sid)


def skip_calendars(window: MaintenanceWindow) -> list[ScheduleCalendarSpec]:
    """The window as Schedule `skip` calendars (day of month AND day of week AND hour/minute all
    have to match, so days 1-7 + Saturday is the first Saturday)."""
    dow = (WEEKDAYS.index(window.weekday) + 1) % 7  # Temporal counts from Sunday = 0
    first, last = window.days
    return [
        ScheduleCalendarSpec(
            second=[ScheduleRange(0, 59)],
            minute=[ScheduleRange(*s.minutes)],
            hour=[ScheduleRange(*s.hours)],
            day_of_month=[ScheduleRange(first, last)],
            day_of_week=[ScheduleRange(dow)],
            comment=f"maintenance window (seed 003): {window.describe()}",
        )
        for s in window.calendar_slices()
    ]


def _paging_spec(every_minutes: float, jitter: timedelta, window: MaintenanceWindow | None) -> ScheduleSpec:
    return ScheduleSpec(
        intervals=[ScheduleIntervalSpec(every=timedelta(minutes=every_minutes))],
        jitter=jitter,
        skip=skip_calendars(window) if window else [],
        time_zone_name=window.time_zone if window else None,
    )


def desired_schedules(settings: Settings) -> list[CheckSchedule]:
    """The three schedules the configuration asks for, of the worker's cluster (`worker_cluster`;
    `for_cluster` picks another), on that cluster's task queue (pure: nothing is sent)."""
    cfg: ScheduleSettings = settings.schedules
    queue = settings.cluster_task_queue(settings.worker_cluster)
    policy = SchedulePolicy(
        overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=cfg.catchup_window_minutes)
    )
    window = cfg.maintenance_window
    skip_note = f"; skipped in the maintenance window ({window.describe()})" if window else ""

    def action(workflow: str, check: str, arg: Any, timeout: timedelta) -> ScheduleActionStartWorkflow:
        return ScheduleActionStartWorkflow(
            workflow,
            arg,
            id=schedule_id(settings, check),
            task_queue=queue,
            execution_timeout=timeout,
            static_summary=f"scheduled check {check}",
        )

    gpu = GpuHealthCheckInput(ops_channel=cfg.ops_channel, probe_timeout_seconds=cfg.gpu_probe_timeout_seconds)
    model = ModelHealthCheckInput(ops_channel=cfg.ops_channel, probe_timeout_seconds=cfg.model_probe_timeout_seconds)
    morning = MorningHealthCheckInput(ops_channel=cfg.ops_channel, time_zone=cfg.time_zone)
    at = cfg.morning_health_at
    return [
        CheckSchedule(
            GPU_HEALTH_CHECK,
            schedule_id(settings, GPU_HEALTH_CHECK),
            Schedule(
                action=action(
                    "GpuHealthCheck", GPU_HEALTH_CHECK, gpu, timedelta(seconds=cfg.gpu_probe_timeout_seconds + 300)
                ),
                spec=_paging_spec(cfg.gpu_health_every_minutes, GPU_JITTER, window),
                policy=policy,
            ),
            f"every {cfg.gpu_health_every_minutes:g} min{skip_note}",
        ),
        CheckSchedule(
            MODEL_HEALTH_CHECK,
            schedule_id(settings, MODEL_HEALTH_CHECK),
            Schedule(
                action=action("ModelHealthCheck", MODEL_HEALTH_CHECK, model, timedelta(minutes=5)),
                spec=_paging_spec(cfg.model_health_every_minutes, MODEL_JITTER, window),
                policy=policy,
            ),
            f"every {cfg.model_health_every_minutes:g} min{skip_note}",
        ),
        CheckSchedule(
            MORNING_HEALTH_CHECK,
            schedule_id(settings, MORNING_HEALTH_CHECK),
            Schedule(
                action=action("MorningHealthCheck", MORNING_HEALTH_CHECK, morning, timedelta(minutes=15)),
                spec=ScheduleSpec(
                    calendars=[
                        ScheduleCalendarSpec(
                            hour=[ScheduleRange(at.hour)],
                            minute=[ScheduleRange(at.minute)],
                            comment="seed 002/003 morning health check",
                        )
                    ],
                    time_zone_name=cfg.time_zone,
                ),
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=1)),
            ),
            f"daily at {at:%H:%M} {cfg.time_zone}",
        ),
    ]


async def apply_schedules(client: Client, settings: Settings, *, pause_paging: str | None = None) -> list[str]:
    """Create or update the three schedules of the worker's cluster (`settings.worker_cluster`;
    `for_cluster` picks another), deleting them when `schedules.enabled` is false; returns one line
    per schedule saying what was done. No other cluster's schedule is touched; the default
    cluster's apply adopts 1.0's (module docstring). A paused schedule stays paused, an active one
    active. `pause_paging` (a note, e.g. DEV_PAUSE_NOTE): the paging checks (PAGING_CHECKS) are
    created paused with it; one that exists keeps its state whatever this says."""
    adopts = settings.worker_cluster == settings.clusters.default
    done = []
    if not settings.schedules.enabled:
        for check in CHECK_IDS:
            for sid in (schedule_id(settings, check), *([legacy_schedule_id(settings, check)] if adopts else [])):
                if await _delete(client, sid):
                    done.append(f"{sid}: deleted (schedules.enabled is false)")
        return done
    for want in desired_schedules(settings):
        sid, legacy = want.id, legacy_schedule_id(settings, want.check)
        legacy_state = await _state_of(client, legacy) if adopts else None
        if legacy_state is not None:  # 1.0's schedule: a human's pause and note carry over
            want.schedule.state = ScheduleState(paused=legacy_state.paused, note=legacy_state.note)
        elif pause_paging is not None and want.check in PAGING_CHECKS:
            want.schedule.state = ScheduleState(paused=True, note=pause_note(pause_paging, sid))
        adopted = f"; 1.0's {legacy} adopted and deleted" if legacy_state is not None else ""
        try:
            await client.create_schedule(sid, want.schedule)
            paused = " PAUSED" if want.schedule.state.paused else ""
            done.append(f"{sid}: created{paused}, {want.what}{adopted}")
        except ScheduleAlreadyRunningError:

            def keep_state(current: ScheduleUpdateInput, want: CheckSchedule = want) -> ScheduleUpdate:
                schedule = want.schedule
                schedule.state = current.description.schedule.state  # a human's pause and note survive
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(sid).update(keep_state)
            done.append(f"{sid}: updated, {want.what}{adopted}")
        if legacy_state is not None:  # only once its successor exists: a check is never left unscheduled
            await _delete(client, legacy)
    return done


async def _state_of(client: Client, sid: str) -> ScheduleState | None:
    """The schedule's state (paused, note), None when there is no such schedule."""
    try:
        return (await client.get_schedule_handle(sid).describe()).schedule.state
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return None


async def _delete(client: Client, sid: str) -> bool:
    """Delete the schedule; False when there was none."""
    try:
        await client.get_schedule_handle(sid).delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def describe_schedules(client: Client, settings: Settings, clusters: Sequence[str] | None = None) -> str:
    """Per cluster (`clusters`, served ones; default: the worker's), its task queue, then one block
    per schedule: state, when it runs, the next runs and the last ones (scheduled or triggered,
    with how each ended)."""
    now = datetime.now(UTC)
    lines = []
    window = settings.schedules.maintenance_window
    if window:
        inside = window.contains(now)
        lines.append(
            f"maintenance window: {window.describe()}; "
            + (
                "NOW: the GPU and model checks are skipped"
                if inside
                else f"next opens {window.next_start(now):%Y-%m-%d %H:%M %Z}"
            )
        )
    for cluster in clusters or [settings.worker_cluster]:
        lines += await _describe_cluster(client, for_cluster(settings, cluster), now)
    return "\n".join(lines)


async def _describe_cluster(client: Client, settings: Settings, now: datetime) -> list[str]:
    """The lines of `describe_schedules` for the worker's cluster of `settings` (for_cluster)."""
    cluster = settings.worker_cluster
    default = cluster == settings.clusters.default
    flag = "" if default else f" --cluster {cluster}"
    lines = [f"cluster {cluster}: task queue {settings.cluster_task_queue(cluster)}"]
    for want in desired_schedules(settings):
        sid = want.id
        try:
            desc: ScheduleDescription = await client.get_schedule_handle(sid).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            lines.append(f"{sid}: missing (run `runbooks schedules apply{flag}`, or start the cluster's worker)")
            continue
        state = desc.schedule.state
        status = "PAUSED" if state.paused else "active"
        note = f" ({state.note})" if state.note else ""
        lines.append(f"{sid}: {status}{note}; {want.what}")
        # A paused schedule keeps the next times it had when it was paused; they have passed or will.
        upcoming = [t for t in desc.info.next_action_times if t > now][:3]
        nxt = ", ".join(f"{t:%Y-%m-%d %H:%M:%S}Z" for t in upcoming)
        lines.append(
            f"  next: none while paused (`runbooks schedules unpause {sid}` resumes it)"
            if state.paused
            else f"  next: {nxt or '-'}"
        )
        runs = [
            (r.started_at, r.action)
            for r in desc.info.recent_actions
            if isinstance(r.action, ScheduleActionExecutionStartWorkflow)
        ]
        if not runs:
            lines.append(
                "  last: none yet"
                + (f" (paused; `runbooks schedules trigger {sid}` runs it once)" if state.paused else "")
            )
        for started_at, action in runs[-3:]:
            lines.append(
                f"  last: {started_at:%Y-%m-%d %H:%M:%S}Z {action.workflow_id} {await _run_status(client, action)}"
            )
    for check in CHECK_IDS if default else ():
        legacy = legacy_schedule_id(settings, check)
        if await _state_of(client, legacy) is not None:
            lines.append(f"{legacy}: 1.0's schedule, still there (`runbooks schedules apply` adopts and deletes it)")
    return lines


async def _run_status(client: Client, action: ScheduleActionExecutionStartWorkflow) -> str:
    """running, completed, failed, timed-out ... of one run (gone: past the namespace's retention)."""
    try:
        desc = await client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return "(no longer kept)"
    return desc.status.name.lower().replace("_", "-") if desc.status else "-"
