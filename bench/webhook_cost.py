"""What the webhook costs per alert: the triggers' CPU for an alert that starts an incident and for
one that joins an open one, and where it goes (py-spy on the triggers process).

One fresh stack (dev server, one worker with the Slack stand-in, `runbooks triggers`). Then
--alerts notifications of one alert each, --concurrency at a time: first alerts of one open
incident (joins), then alerts each its own fault (starts). For each phase: calls per second, the
triggers' and the Temporal server's CPU ms per alert, and with --py-spy the triggers' heaviest
functions during the joins.

    .venv/bin/python -m bench.webhook_cost [--alerts 2000] [--concurrency 20] [--py-spy]

Writes bench/results/webhook_cost.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import aiohttp

from bench.harness import RESULTS, TOKEN, attach_profiler, cpu_seconds, header, own_fault, stack, wait_for_posts
from bench.pyspy import summarize
from bench.storm_payloads import group_alert


async def post_all(url: str, payloads: list[dict[str, Any]], concurrency: int) -> float:
    """POST every payload, `concurrency` at a time; the wall seconds it took."""
    bodies = [json.dumps(p).encode() for p in payloads]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one(body: bytes) -> None:
            async with sem, http.post(f"{url}/alertmanager", data=body) as resp:
                resp.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    async with stack(1, name="webhook", slack=True, triggers=True) as s:
        assert s.url and s.standin and s.triggers_pid
        run_id = uuid.uuid4().hex[:4]
        opening = group_alert(run_id, 0, run_id)
        await post_all(s.url, [opening], 1)
        await wait_for_posts(s.standin, {opening["alerts"][0]["annotations"]["summary"]}, 30)
        await post_all(s.url, [own_fault(i, run_id + "w") for i in range(50)], args.concurrency)  # warm-up
        await asyncio.sleep(3)
        phases: dict[str, Any] = {}
        for phase, payloads in (
            ("joins", [group_alert(run_id, i, run_id) for i in range(1, args.alerts + 1)]),
            ("starts", [own_fault(i, run_id) for i in range(args.alerts // 4)]),
        ):
            spy = attach_profiler(s.triggers_pid, s.folder / f"triggers-{phase}.pyspy") if args.py_spy else None
            before = (cpu_seconds(s.triggers_pid), cpu_seconds(s.server_pid))
            seconds = await post_all(s.url, payloads, args.concurrency)
            after = (cpu_seconds(s.triggers_pid), cpu_seconds(s.server_pid))
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            n = len(payloads)
            phases[phase] = {
                "alerts": n,
                "per_second": round(n / seconds, 1),
                "triggers_cpu_ms_per_alert": round((after[0] - before[0]) * 1000 / n, 2),
                "server_cpu_ms_per_alert": round((after[1] - before[1]) * 1000 / n, 2),
            }
            if spy:
                phases[phase]["triggers_py_spy"] = summarize(s.folder / f"triggers-{phase}.pyspy", top=args.top)
            await asyncio.sleep(5 if phase == "joins" else 0)
            print(
                f"{phase}: {phases[phase]['per_second']}/s, triggers {phases[phase]['triggers_cpu_ms_per_alert']} ms "
                f"and server {phases[phase]['server_cpu_ms_per_alert']} ms of CPU per alert",
                flush=True,
            )
    return header(load_at_start) | {"setup": {"concurrency": args.concurrency, "worker_processes": 1}, **phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=2000, help="join alerts (a quarter as many starts)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--py-spy", action="store_true", help="sample the triggers with py-spy")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=str(RESULTS / "webhook_cost.json"))
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    with open(args.out, "w") as out:
        out.write(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
