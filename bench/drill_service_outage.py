"""SOP-001 on the simulator: time from the alert to verified recovery (goal <= 30 s; by hand: 15 min).

Starts the whole stack as an SRE would, `runbooks dev` in its own process (Temporal dev server,
simulated llm-d cluster with its fast timings, worker, triggers) on free ports with a throwaway
--home, then runs `runbooks drill service-outage --wait --auto-approve` --runs times. Each drill
stages the outage on the simulator again and raises LLMDServiceDown through the triggers' webhook.

Per run:
    alert_to_recovery_s    the incident's workflow started (the alert reached Temporal through the
                           webhook) -> the playbook's verification resolved it (IncidentState.resolved_at)
    command_to_recovery_s  the drill command started -> resolved_at: adds the CLI's start, staging
                           the fault, and the alert rule's `for:` period the drill waits out first
    drill_command_s        wall time of the whole `runbooks drill ... --wait` command
    steps_s                how long each SOP step took (from the incident's timeline)

    .venv/bin/python -m bench.drill_service_outage [--runs 3] [--time-scale 10]

Writes bench/results/drill_service_outage.json and prints it.
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
from datetime import datetime, timezone
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from worker.worker import READY_LINE
from workflows.incident.state import IncidentState
from workflows.incident.models import QUERY_STATE, QUERY_TIMELINE
from workflows.incident.timeline import TimelineEntry

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results" / "drill_service_outage.json"
GOAL_S = 30.0
SOP_BY_HAND_S = 15 * 60
_INCIDENT = re.compile(r"^incident: (\S+)$", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runbooks_command() -> list[str]:
    """The installed console script, as an SRE runs it; else the same entry point through python -m."""
    script = shutil.which("runbooks") or shutil.which("runbooks", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "cli.main"]


def quiet_env() -> dict[str, str]:
    # No Slack token: messages go to the dev stack's console (its log file), as on a laptop.
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RUNBOOKS_SLACK"))}


class DevStack:
    """`runbooks dev` in its own process group, on free ports, state in a throwaway home."""

    def __init__(self, time_scale: float) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bench-drill-"))
        self.temporal = f"127.0.0.1:{free_port()}"
        self.log = self.home / "dev.log"
        self.cmd = runbooks_command() + [
            "dev",
            "--home",
            str(self.home),
            "--temporal-port",
            self.temporal.rsplit(":", 1)[1],
            "--ui-port",
            str(free_port()),
            "--triggers-port",
            str(free_port()),
            "--time-scale",
            f"{time_scale:g}",
        ]
        # The worker's Prometheus port has no `runbooks dev` flag; its default (9464) may be taken.
        self.env = quiet_env() | {"RUNBOOKS_WORKER__METRICS_PORT": str(free_port())}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> DevStack:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log.read_text(errors="replace") or not (self.home / "dev.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(
                    f"`runbooks dev` did not come up ({shlex.join(self.cmd)}); its log:\n"
                    f"{self.log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C, as the stack documents
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: the stack and its Temporal server
            self.proc.wait()


async def one_drill(stack: DevStack, client: Client, timeout: float) -> dict:
    # As an SRE types it: the drill finds the stack (Temporal, simulator, webhook) through --home.
    cmd = runbooks_command() + [
        "drill",
        "service-outage",
        "--wait",
        "--auto-approve",
        "--home",
        str(stack.home),
        "--timeout",
        f"{timeout:g}",
    ]
    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, env=quiet_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    wall = time.perf_counter() - t0
    text = out.decode(errors="replace")
    found = _INCIDENT.search(text)
    row: dict = {"command": shlex.join(cmd), "exit_code": proc.returncode, "drill_command_s": round(wall, 2)}
    if not found:
        return row | {"error": text[-2000:]}
    handle = client.get_workflow_handle(found.group(1))
    state = await handle.query(QUERY_STATE, result_type=IncidentState)
    timeline = await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])
    first = (await handle.fetch_history()).events[0]
    alert_in = first.event_time.ToDatetime(tzinfo=timezone.utc)
    row |= {
        "incident": found.group(1),
        "status": state.status,
        "escalation_level": state.escalation_level,
        "changes": len(state.changes),
        "approvals": [f"{g.gate}: {g.outcome}" for g in state.approvals],
        # Where the time goes: each SOP step's duration.
        "steps_s": {
            e.title: round((e.ended_at - e.started_at).total_seconds(), 2)
            for e in timeline
            if e.kind == "step" and e.ended_at
        },
    }
    if state.resolved_at is None:
        return row | {"error": "not resolved", "output_tail": text[-2000:]}
    return row | {
        "alert_to_recovery_s": round((state.resolved_at - alert_in).total_seconds(), 2),
        "command_to_recovery_s": round((state.resolved_at - started_at).total_seconds(), 2),
        "resolution": state.resolution,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--time-scale", type=float, default=10.0, help="the simulator's speed-up (runbooks dev's default)"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds each drill may wait")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    stack = DevStack(args.time_scale).start()
    print(f"runbooks dev is up: {shlex.join(stack.cmd)}", flush=True)
    runs = []
    try:
        client = await Client.connect(stack.temporal, data_converter=pydantic_data_converter)
        for i in range(args.runs):
            row = await one_drill(stack, client, args.timeout)
            runs.append(row)
            print(f"run {i + 1}: " + json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
    finally:
        stack.stop()

    recovered = [r["alert_to_recovery_s"] for r in runs if "alert_to_recovery_s" in r]
    median = round(statistics.median(recovered), 2) if recovered else None
    figures = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0],
        },
        "stack": {"command": shlex.join(stack.cmd), "time_scale": args.time_scale, "log": str(stack.log)},
        "runs": runs,
        "alert_to_recovery_median_s": median,
        "command_to_recovery_median_s": round(
            statistics.median(r["command_to_recovery_s"] for r in runs if "command_to_recovery_s" in r), 2
        )
        if recovered
        else None,
        "drill_command_median_s": round(statistics.median(r["drill_command_s"] for r in runs), 2) if runs else None,
        "goal_s": GOAL_S,
        "sop_by_hand_s": SOP_BY_HAND_S,
        "goal_met": median is not None and len(recovered) == len(runs) and max(recovered) <= GOAL_S,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
