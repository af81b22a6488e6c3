"""The scheduled checks as Temporal Schedules, kept in step with the configuration.

Three schedules (ids `gpu-health-check`, `model-health-check`, `morning-health-check`, after
`temporal.incident_id_prefix`) start the check workflows of workflows/checks/workflows.py. The
worker applies them at its start, `runbooks schedules apply` does it by hand; both create what
is missing and update what differs, keeping a schedule's paused state and note (a human's pause
survives a worker restart). `schedules.enabled: false` deletes them. `runbooks dev` with drills
enabled creates the two paging schedules paused (`DEV_PAUSE_NOTE`): a scheduled GPU check during a
drill would open a second incident beside the drill's; `trigger` still runs them.

Policies: overlap SKIP (a check still running makes the next one skip, never pile up), a bounded
catch-up window (a run missed while Temporal was down runs only if this late), jitter on the
frequent checks. The maintenance window (seed 003) is the GPU and model schedules' `skip`
calendar, so the server starts no paging check inside it; the Temporal UI's Schedules page
shows it. The morning report runs whatever the window.

The commands (`runbooks schedules list|apply|pause|unpause|trigger ID`): cli/schedules.py.
"""

from __future__ import annotations

import logging
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

from settings import ScheduleSettings, Settings
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
DEV_PAUSE_NOTE = (
    "paused by `runbooks dev`: drills are enabled, and a scheduled check during a drill would open "
    "a second incident beside the drill's; `runbooks schedules unpause ID` runs it on its clock, "
    "`runbooks schedules trigger ID` runs it once"
)

GPU_JITTER = timedelta(seconds=60)
MODEL_JITTER = timedelta(seconds=30)


@dataclass(frozen=True)
class CheckSchedule:
    check: str  # the check's name (the schedule id without prefix)
    schedule: Schedule
    what: str  # for `list`: when it runs, in words


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
    """The three schedules the configuration asks for (pure: nothing is sent)."""
    cfg: ScheduleSettings = settings.schedules
    queue = settings.cluster_task_queue(settings.worker_cluster)
    prefix = settings.temporal.incident_id_prefix
    policy = SchedulePolicy(
        overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=cfg.catchup_window_minutes)
    )
    window = cfg.maintenance_window
    skip_note = f"; skipped in the maintenance window ({window.describe()})" if window else ""

    def action(workflow: str, check: str, arg: Any, timeout: timedelta) -> ScheduleActionStartWorkflow:
        return ScheduleActionStartWorkflow(
            workflow,
            arg,
            id=prefix + check,
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
            Schedule(
                action=action("ModelHealthCheck", MODEL_HEALTH_CHECK, model, timedelta(minutes=5)),
                spec=_paging_spec(cfg.model_health_every_minutes, MODEL_JITTER, window),
                policy=policy,
            ),
            f"every {cfg.model_health_every_minutes:g} min{skip_note}",
        ),
        CheckSchedule(
            MORNING_HEALTH_CHECK,
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
    """Create or update the three schedules (deleting them when `schedules.enabled` is false);
    returns one line per schedule saying what was done. A paused schedule stays paused, an active
    one active. `pause_paging` (a note, e.g. DEV_PAUSE_NOTE): the paging checks (PAGING_CHECKS) are
    created paused with it; one that exists keeps its state whatever this says."""
    prefix = settings.temporal.incident_id_prefix
    done = []
    if not settings.schedules.enabled:
        for check in CHECK_IDS:
            try:
                await client.get_schedule_handle(prefix + check).delete()
                done.append(f"{prefix + check}: deleted (schedules.enabled is false)")
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
        return done
    for want in desired_schedules(settings):
        sid = prefix + want.check
        paused = pause_paging is not None and want.check in PAGING_CHECKS
        if paused:
            want.schedule.state = ScheduleState(paused=True, note=pause_paging)
        try:
            await client.create_schedule(sid, want.schedule)
            done.append(f"{sid}: created{' PAUSED' if paused else ''}, {want.what}")
            continue
        except ScheduleAlreadyRunningError:
            pass

        def keep_state(current: ScheduleUpdateInput, want: CheckSchedule = want) -> ScheduleUpdate:
            schedule = want.schedule
            schedule.state = current.description.schedule.state  # a human's pause and note survive
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(sid).update(keep_state)
        done.append(f"{sid}: updated, {want.what}")
    return done


async def describe_schedules(client: Client, settings: Settings) -> str:
    """One block per schedule: state, when it runs, the next runs and the last ones (scheduled or
    triggered, with how each ended)."""
    prefix, now = settings.temporal.incident_id_prefix, datetime.now(UTC)
    wanted = {s.check: s.what for s in desired_schedules(settings)}
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
    for check in CHECK_IDS:
        sid = prefix + check
        try:
            desc: ScheduleDescription = await client.get_schedule_handle(sid).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            lines.append(f"{sid}: missing (run `runbooks schedules apply`)")
            continue
        state = desc.schedule.state
        status = "PAUSED" if state.paused else "active"
        note = f" ({state.note})" if state.note else ""
        lines.append(f"{sid}: {status}{note}; {wanted[check]}")
        # A paused schedule keeps the next times it had when it was paused; they have passed or will.
        upcoming = [t for t in desc.info.next_action_times if t > now][:3]
        nxt = ", ".join(f"{t:%Y-%m-%d %H:%M:%S}Z" for t in upcoming)
        lines.append(
            "  next: none while paused (`runbooks schedules unpause " + check + "` resumes it)"
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
                "  last: none yet" + (" (paused; `runbooks schedules trigger` runs it once)" if state.paused else "")
            )
        for started_at, action in runs[-3:]:
            lines.append(
                f"  last: {started_at:%Y-%m-%d %H:%M:%S}Z {action.workflow_id} {await _run_status(client, action)}"
            )
    return "\n".join(lines)


async def _run_status(client: Client, action: ScheduleActionExecutionStartWorkflow) -> str:
    """running, completed, failed, timed-out ... of one run (gone: past the namespace's retention)."""
    try:
        desc = await client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return "(no longer kept)"
    return desc.status.name.lower().replace("_", "-") if desc.status else "-"
