"""Open incidents waiting on their escalation timers, with 1 and 2 worker processes side by side.

For every count in --workers, a FRESH stack (bench/harness.py `stack`): `temporal server
start-dev` (in memory, its own port) and N worker processes (`python -m worker.worker`, exactly as
deployed; no Slack token, so every message goes to each worker's console log). N Triage incidents
start, all with the same alert `startsAt` and a short escalation policy (marks at --first and
--second seconds after it; default 120 s and 150 s, late enough that all 1,000 are open and waiting
on their timer first), so every mark of every incident falls due at the same instant: the stress.

Figures, per worker count:
- lateness of each escalation = when it happened - its mark (startsAt + after), read from
  each incident's history and `state` query (--histories of them, evenly sampled):
    timer_fired     the server fired the durable timer (TimerFired event)
    recorded        the workflow recorded the escalation (EscalationRecord.at, workflow time)
    page_scheduled  the page to Slack was committed to history (ActivityTaskScheduled)
    page_posted     the page was posted (ActivityTaskCompleted; console mode, no Slack token)
  goal: p99 of `recorded` < 2 s with every mark at one instant, < 1 s with --spread 60
- marks_paged_per_second_per_worker: escalations recorded (visibility count) / (the last one
  recorded - the first mark) / worker processes, per level; the headline is level 1
- each worker's peak RSS (VmHWM of its /proc/<pid>/status), goal < 1 GB (with --incidents 10000)
- time to start all incidents.

--first counts from the alerts' startsAt, which is when the bench starts the first incident:
opening 10,000 takes minutes on 2 cores, so give it room (--incidents 10000 --first 900
--second 960). A mark already past when an incident gets there fires at once; the figures then
say so (`marks_past_before_all_started`, `recorded_past_on_arrival`) and the lateness is not the
timers' (the RSS figure still is).

    .venv/bin/python -m bench.escalation_timers [--workers 1 2] [--incidents 1000] [--first 120] [--second 150]
        [--concurrency 50] [--spread 0] [--histories 2000] [--out FILE]

Writes bench/results/escalation_timers.json (with --spread S: escalation_timers_spreadSs.json;
or --out) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.converter import DefaultPayloadConverter

from bench.harness import RESULTS, Workers, bounded, cpu_seconds, header, pct, proc_kb, stack, stats
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, Alert, EscalationStep, IncidentInput, incident_id

GOAL_P99_S = 2.0
GOAL_SPREAD_P99_S = 1.0
GOAL_RSS_MB = 1024
_MARK = re.compile(r"escalate to .* at ([0-9.]+) min")
_PAGE = re.compile(r"Slack: escalation-(\d+)")


def when(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def summary_of(event: HistoryEvent) -> str:
    if not event.HasField("user_metadata") or not event.user_metadata.HasField("summary"):
        return ""
    return DefaultPayloadConverter().from_payload(event.user_metadata.summary, str)


# -- the incidents ------------------------------------------------------------------------------


def incident(i: int, run: str, starts_at: datetime, marks: list[float]) -> IncidentInput:
    steps = [
        EscalationStep(after_minutes=seconds / 60, notify=who, level=level)
        for level, (seconds, who) in enumerate(zip(marks, ("Senior SRE", "Engineering team")), start=1)
    ]
    return IncidentInput(
        alert=Alert(
            alertname="BenchEscalationTimers",
            fingerprint=f"{run}{i:05d}",
            starts_at=starts_at,
            labels={"alertname": "BenchEscalationTimers", "bench": run},
            annotations={"summary": f"escalation timer bench {i}"},
        ),
        runbook="triage",
        severity="P2",  # P2: no stakeholder updates, so the escalation marks are the only timers
        escalation=steps,
    )


async def start_all(
    client: Client, inputs: list[IncidentInput], queue: str, concurrency: int
) -> tuple[list[str], float]:
    async def one(inp: IncidentInput) -> str:
        wid = incident_id(inp.runbook, inp.alert.fingerprint, inp.alert.starts_at)
        await client.start_workflow("Triage", inp, id=wid, task_queue=queue)
        return wid

    started = time.perf_counter()
    ids = await bounded(inputs, concurrency, one)
    return ids, time.perf_counter() - started


async def wait_escalated(client: Client, queue: str, level: int, n: int, deadline: float) -> int:
    """Poll visibility until `n` incidents of this run reached `level` (or the deadline)."""
    query = f'TaskQueue = "{queue}" AND EscalationLevel >= {level}'
    count = 0
    while time.monotonic() < deadline:
        count = (await client.count_workflows(query)).count
        if count >= n:
            break
        await asyncio.sleep(1)
    return count


async def escalations_of(client: Client, wid: str, starts_at: datetime, marks: list[float]) -> list[dict[str, Any]]:
    """One row per escalation of one incident: seconds past its mark when it was fired, recorded, paged.

    `marks[level - 1]` is that level's mark in seconds after `starts_at`. `timer_fired` is None
    when no timer fired for it: its mark was already past when the incident got there (it was
    still opening, or the previous level fired that late), so it fired at once.
    """
    handle = client.get_workflow_handle(wid)
    history = await handle.fetch_history()
    # A query runs on a worker; with thousands of open incidents one that fell out of the worker's
    # cache is replayed first, which may take longer than a query's default timeout.
    for attempt in range(3):
        try:
            state = await handle.query(QUERY_STATE, result_type=IncidentState, rpc_timeout=timedelta(seconds=60))
            break
        except RPCError:
            if attempt == 2:
                return []
            await asyncio.sleep(2)
    events = history.events
    by_id = {e.event_id: e for e in events}
    completed = {
        e.activity_task_completed_event_attributes.scheduled_event_id: e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    }
    level_at = {round(seconds / 60, 6): level for level, seconds in enumerate(marks, start=1)}

    def since(at: datetime) -> float:
        return (at - starts_at).total_seconds()

    rows = {
        r.level: {
            "level": r.level,
            "recorded": since(r.at) - marks[r.level - 1],
            "recorded_at": r.at.timestamp(),
            "mark_at": starts_at.timestamp() + marks[r.level - 1],
            "timer_fired": None,
            "page_scheduled": None,
            "page_posted": None,
        }
        for r in state.escalations
    }
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            started = by_id[e.timer_fired_event_attributes.started_event_id]
            m = _MARK.search(summary_of(started))  # the summary names the mark in minutes
            row = rows.get(level_at.get(round(float(m.group(1)), 6), 0)) if m else None
            if row:
                row["timer_fired"] = since(when(e)) - marks[row["level"] - 1]
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and (m := _PAGE.search(summary_of(e))):
            row = rows.get(int(m.group(1)))
            if row:
                row["page_scheduled"] = since(when(e)) - marks[row["level"] - 1]
                if e.event_id in completed:
                    row["page_posted"] = since(when(completed[e.event_id])) - marks[row["level"] - 1]
    opened = next(
        (
            since(when(e))
            for e in events
            if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and _MARK.search(summary_of(e))
        ),
        None,
    )
    return [dict(row, incident_waiting_at=opened) for row in rows.values()]


def lateness_figures(rows: list[dict[str, Any]], goal_p99_s: float) -> dict[str, Any]:
    def col(name: str, subset: list[dict[str, Any]]) -> list[float]:
        return [r[name] for r in subset if r[name] is not None]

    on_timer = [r for r in rows if r["timer_fired"] is not None]
    on_arrival = [r for r in rows if r["timer_fired"] is None]
    return {
        "recorded": stats(col("recorded", rows)),
        "recorded_on_timer": stats(col("recorded", on_timer)),
        "recorded_past_on_arrival": stats(col("recorded", on_arrival)),
        "timer_fired": stats(col("timer_fired", on_timer)),
        "page_scheduled": stats(col("page_scheduled", rows)),
        "page_posted": stats(col("page_posted", rows)),
        "by_level": {
            f"level_{level}": stats(col("recorded", [r for r in rows if r["level"] == level]))
            for level in sorted({r["level"] for r in rows})
        },
        "goal_recorded_p99_s": goal_p99_s,
    }


def paging_rate(rows: list[dict[str, Any]], escalated: dict[int, int], workers: int) -> dict[str, Any]:
    """Per level: escalations recorded / (the last one recorded - the first mark) / worker processes."""
    by_level: dict[str, Any] = {}
    for level, count in escalated.items():
        mine = [r for r in rows if r["level"] == level]
        if not mine or not count:
            by_level[f"level_{level}"] = None
            continue
        span = max(r["recorded_at"] for r in mine) - min(r["mark_at"] for r in mine)
        by_level[f"level_{level}"] = {
            "recorded": count,
            "seconds_from_mark_to_last": round(span, 2),
            "per_second_per_worker": round(count / max(span, 0.001) / workers, 1),
        }
    return by_level


# -- the run ------------------------------------------------------------------------------------


async def one_count(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    marks = [args.first, args.second]
    async with stack(workers, name="esc") as s:
        client, w = s.client, s.workers
        idle = {"rss_kb": w.rss_kb(), "cpu_s": w.cpu_seconds(), "server_cpu_s": cpu_seconds(s.server_pid)}
        base = datetime.now(UTC)
        t0 = time.monotonic()
        starts = [base + timedelta(seconds=args.spread * i / args.incidents) for i in range(args.incidents)]
        inputs = [incident(i, s.queue[-8:], at, marks) for i, at in enumerate(starts)]
        ids, start_seconds = await start_all(client, inputs, s.queue, args.concurrency)
        print(
            f"{workers} worker process(es): started {len(ids)} incidents in {start_seconds:.1f}s; "
            f"marks at +{args.first:g}s and +{args.second:g}s",
            flush=True,
        )
        if args.rss_only:  # every incident open and waiting: the workers' CPU has gone quiet
            await quiet(w, deadline=t0 + args.first - 1)
        # Just before the first mark every incident should be open and waiting on its timer.
        else:
            await asyncio.sleep(max(0.0, t0 + args.first - 1 - time.monotonic()))
        waiting = {
            "rss_kb": w.rss_kb(),
            "peak_kb": w.rss_kb("VmHWM"),
            "cpu_s": w.cpu_seconds(),
            "server_cpu_s": cpu_seconds(s.server_pid),
        }
        if args.rss_only:
            running = (await client.count_workflows(f'TaskQueue = "{s.queue}" AND ExecutionStatus = "Running"')).count
            return rss_figures(workers, start_seconds, running, time.monotonic() - t0, idle, waiting)
        deadline = max(t0 + args.second + args.spread, time.monotonic()) + args.settle
        escalated = {level: await wait_escalated(client, s.queue, level, len(ids), deadline) for level in (1, 2)}
        all_escalated_s = time.monotonic() - t0
        end = {
            "peak_kb": w.rss_kb("VmHWM"),
            "cpu_s": w.cpu_seconds(),
            "server_cpu_s": cpu_seconds(s.server_pid),
            "server_peak_kb": proc_kb(s.server_pid, "VmHWM"),
        }
        print(
            f"  escalated: {escalated[1]} to level 1, {escalated[2]} to level 2, {all_escalated_s:.1f}s after startsAt",
            flush=True,
        )
        step = max(1, -(-len(ids) // args.histories))  # every step-th incident: at most --histories read
        sample = list(zip(ids, starts))[::step]
        per_incident = await bounded(sample, 5, lambda one: escalations_of(client, one[0], one[1], marks))
        log_text = w.log_text()

    rows = [row for rows in per_incident for row in rows]
    # When each incident armed its first escalation timer (it is open and waiting), from the first start.
    opened = [
        rows[0]["incident_waiting_at"] + (at - base).total_seconds()
        for rows, (_, at) in zip(per_incident, sample)
        if rows and rows[0]["incident_waiting_at"] is not None
    ]
    goal = GOAL_SPREAD_P99_S if args.spread else GOAL_P99_S
    recorded = [r["recorded"] for r in rows]
    peaks_mb = [round(kb / 1024, 1) for kb in end["peak_kb"]]
    rate = paging_rate(rows, escalated, workers)
    return {
        "worker_processes": workers,
        "start_all_incidents_s": round(start_seconds, 2),
        "starts_per_second": round(len(ids) / start_seconds, 1),
        "marks_past_before_all_started": start_seconds >= args.first,
        "incidents_waiting_on_timer_after_first_start": stats(opened),
        "escalated": {
            "level_1": escalated[1],
            "level_2": escalated[2],
            "expected_each": len(ids),
            "all_escalated_s_after_first_start": round(all_escalated_s, 1),
            "incidents_read": len(sample),
        },
        "lateness": lateness_figures(rows, goal),
        "marks_paged_per_second_per_worker": rate["level_1"]["per_second_per_worker"] if rate["level_1"] else None,
        "paging_rate_by_level": rate,
        "workers": {
            "peak_rss_mb": peaks_mb,
            "rss_idle_mb": [round(kb / 1024, 1) for kb in idle["rss_kb"]],
            "rss_all_waiting_mb": [round(kb / 1024, 1) for kb in waiting["rss_kb"]],
            "peak_rss_while_opening_mb": [round(kb / 1024, 1) for kb in waiting["peak_kb"]],
            "cpu_s_opening_incidents": round(waiting["cpu_s"] - idle["cpu_s"], 1),
            "cpu_s_escalating": round(end["cpu_s"] - waiting["cpu_s"], 1),
            "slack_console_messages": log_text.count("[slack:console]"),  # each is printed once
            "logs": str(s.folder),
            "goal_peak_rss_mb": GOAL_RSS_MB,
        },
        # The dev server shares the machine's cores with the workers: its load explains part of the lateness.
        "temporal_server": {
            "cpu_s_opening_incidents": round(waiting["server_cpu_s"] - idle["server_cpu_s"], 1),
            "cpu_s_escalating": round(end["server_cpu_s"] - waiting["server_cpu_s"], 1),
            "peak_rss_mb": round(end["server_peak_kb"] / 1024, 1),
        },
        "goals_met": {
            f"p99_lateness_under_{goal:g}s": bool(recorded)
            and pct(recorded, 0.99) < goal
            and escalated[2] == len(ids) == escalated[1],
            "peak_rss_under_1gb_each": max(peaks_mb) < GOAL_RSS_MB,
        },
    }


async def quiet(w: Workers, deadline: float, idle_cpu_s: float = 0.3, every: float = 5.0) -> None:
    """Until the workers spend less than `idle_cpu_s` of CPU in `every` seconds (every incident has
    opened and waits on its timer), or the monotonic `deadline`."""
    last = w.cpu_seconds()
    while time.monotonic() < deadline:
        await asyncio.sleep(every)
        now = w.cpu_seconds()
        if now - last < idle_cpu_s:
            return
        last = now


def rss_figures(
    workers: int, start_seconds: float, running: int, waited_s: float, idle: dict[str, Any], waiting: dict[str, Any]
) -> dict[str, Any]:
    """--rss-only: memory with every incident open and waiting (no escalation is waited for)."""
    peaks_mb = [round(kb / 1024, 1) for kb in waiting["peak_kb"]]
    return {
        "worker_processes": workers,
        "start_all_incidents_s": round(start_seconds, 2),
        "incidents_running": running,
        "all_waiting_after_s": round(waited_s, 1),
        "workers": {
            "peak_rss_mb": peaks_mb,
            "rss_idle_mb": [round(kb / 1024, 1) for kb in idle["rss_kb"]],
            "rss_all_waiting_mb": [round(kb / 1024, 1) for kb in waiting["rss_kb"]],
            "cpu_s_opening_incidents": round(waiting["cpu_s"] - idle["cpu_s"], 1),
            "goal_peak_rss_mb": GOAL_RSS_MB,
        },
        "temporal_server": {"cpu_s_opening_incidents": round(waiting["server_cpu_s"] - idle["server_cpu_s"], 1)},
        "goals_met": {"peak_rss_under_1gb_each": max(peaks_mb) < GOAL_RSS_MB},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts, each fresh")
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--first", type=float, default=120.0, help="first escalation mark, seconds after startsAt")
    parser.add_argument("--second", type=float, default=150.0, help="second escalation mark, seconds after startsAt")
    parser.add_argument("--concurrency", type=int, default=50, help="workflow starts in flight at once")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the last mark to wait for stragglers")
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="spread the alerts' startsAt evenly over this many seconds (0: every mark at one instant)",
    )
    parser.add_argument("--histories", type=int, default=2000, help="at most this many incidents read (evenly)")
    parser.add_argument(
        "--rss-only",
        action="store_true",
        help="stop once every incident is open and waiting: memory only (the 10,000 run)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not 0 < args.first < args.second:
        raise SystemExit("--first must be > 0 and < --second")
    if args.incidents < 1 or args.histories < 1 or min(args.workers) < 1:
        raise SystemExit("--incidents, --histories and --workers counts must be >= 1")

    async def run() -> dict[str, Any]:
        load_at_start = os.getloadavg()
        by_count = {str(n): await one_count(args, n) for n in args.workers}

        def row(get, goal: str) -> dict[str, Any]:
            return {f"{n}_workers": get(f) for n, f in by_count.items()} | {"goal": goal}

        goal = GOAL_SPREAD_P99_S if args.spread else GOAL_P99_S
        return header(load_at_start) | {
            "setup": {
                "incidents": args.incidents,
                "playbook": "Triage (P2, no namespace: Slack console only)",
                "escalation_marks_s": [args.first, args.second],
                "worker_processes": args.workers,
                "worker": "python -m worker.worker, N processes on one task queue",
                "server": "temporal server start-dev (in memory), fresh per worker count",
                "start_concurrency": args.concurrency,
                "startsAt_spread_s": args.spread,
            },
            "side_by_side": {
                "peak_rss_mb_per_worker": row(lambda f: f["workers"]["peak_rss_mb"], f"< {GOAL_RSS_MB} MB each")
            }
            if args.rss_only
            else {
                "recorded_lateness_p99_s": row(lambda f: f["lateness"]["recorded"].get("p99_s"), f"< {goal:g} s"),
                "marks_paged_per_second_per_worker": row(
                    lambda f: f["marks_paged_per_second_per_worker"], "(figure: more processes should keep it)"
                ),
                "peak_rss_mb_per_worker": row(lambda f: f["workers"]["peak_rss_mb"], f"< {GOAL_RSS_MB} MB each"),
                "start_all_incidents_s": row(lambda f: f["start_all_incidents_s"], "(figure)"),
            },
            "by_worker_processes": by_count,
        }

    figures = asyncio.run(run())
    out = args.out or (
        RESULTS / "escalation_timers.json"
        if not args.spread
        else RESULTS / f"escalation_timers_spread{args.spread:g}s.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
