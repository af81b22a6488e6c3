"""Alert storm: what the webhook keeps up with, with 1 and 2 worker processes side by side.

For every count in --workers, a FRESH stack (bench/harness.py `stack`): `temporal server
start-dev`, N worker processes (`python -m worker.worker`, Slack = the Slack stand-in) and
`runbooks triggers` (its own process). Then, in that order:

a. alert -> first Slack message, at steady rates (--rates, each for --seconds), every alert its own
   fault (its own Alertmanager group: a Triage incident each). Per rate: p50/p99/max of the time from
   sending the alert to the incident's first message in the stand-in, and how many were posted within
   30 s. Climbing stops after the first rate that misses (p99 >= 1 s or one not posted); between rates
   the system drains (every message posted or 30 s, then --drain s).
   `highest_rate_p99_under_1s`: goal >= 50 alerts/s.
b. webhook vs raw `client.start_workflow` at the same --concurrency, --rounds rounds of --alerts each,
   which path goes first alternating by round: starts (each alert its own fault) and joins (every alert
   of one open incident: one groupKey). Raw makes the webhook's own call (signal-with-start,
   USE_EXISTING, ALLOW_DUPLICATE, the same IncidentInput, id and search attributes: bench/storm_payloads),
   built before the clock starts. Ratio webhook/raw per second, goal >= 0.9 each.
c. one notification carrying a --group-alerts group (560: Alertmanager's `max_alerts: 0`), a mix of the
   seeds' alerts over their scopes plus unclaimed ones (storm_payloads.storm_group): the webhook's
   response time (every alert started or joined), its started/joined counts, distinct incidents.

    .venv/bin/python -m bench.alert_storm [--workers 1 2] [--rates 10,20,30,50,70,100] [--seconds 10]
        [--alerts 400] [--concurrency 20] [--rounds 3] [--group-alerts 560] [--out FILE]

Writes bench/results/alert_storm.json (or --out) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from temporalio.client import Client

from bench.harness import (
    RESULTS,
    TOKEN,
    Stack,
    header,
    own_fault,
    pct,
    send_steady,
    stack,
    stats,
    triggers_environ,
    wait_for_posts,
)
from bench.storm_payloads import expected_incidents, group_alert, raw_start, storm_group
from settings import Settings, load_settings
from workflows.incident.models import SIGNAL_ALERT_FIRING, AlertFiring

GOAL_P99_S = 1.0
GOAL_RATE = 50.0
GOAL_RATIO = 0.9
POSTED_WITHIN_S = 30.0


# -- a. alert -> first Slack message --------------------------------------------------------------


async def first_message_at(s: Stack, rate: float, seconds: float, run: str) -> dict[str, Any]:
    """`rate` alerts/s for `seconds`, each its own fault; the first message of each incident."""
    assert s.url and s.standin
    payloads = [own_fault(i, run) for i in range(max(1, round(rate * seconds)))]
    sent = await send_steady(s.url, payloads, rate)
    posted = await wait_for_posts(s.standin, set(sent), POSTED_WITHIN_S)
    latencies = [posted[k] - at for k, at in sent.items() if k in posted]
    within = sum(1 for x in latencies if x <= POSTED_WITHIN_S)
    held = bool(latencies) and within == len(sent) and pct(latencies, 0.99) < GOAL_P99_S
    return (
        {"rate_per_second": rate, "alerts": len(sent), "posted_within_30s": within}
        | stats(latencies)
        | {"p99_under_1s": held}
    )


async def rate_ladder(s: Stack, rates: list[float], seconds: float, drain: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:4]
    steps, best = [], None
    for rate in rates:
        step = await first_message_at(s, rate, seconds, f"{run}r{rate:g}")
        steps.append(step)
        print(
            f"  {rate:g}/s: p99 {step.get('p99_s')} s, {step['posted_within_30s']}/{step['alerts']} posted", flush=True
        )
        await asyncio.sleep(drain)
        if not step["p99_under_1s"]:
            break
        best = rate
    return {
        "highest_rate_p99_under_1s": best,
        "goal_rate_per_second": f">= {GOAL_RATE:g}",
        "goal_met": best is not None and best >= GOAL_RATE,
        "seconds_per_rate": seconds,
        "rates": steps,
    }


# -- b. webhook vs raw start_workflow ---------------------------------------------------------------


async def timed(n: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
    """one(i) for i < n, `concurrency` at a time: calls per second and each call's latency."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def run(i: int) -> None:
        async with sem:
            started = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    return {"calls": n, "seconds": round(elapsed, 3), "per_second": round(n / elapsed, 1)} | {
        k: v for k, v in stats(latencies, unit="ms", digits=1).items() if k != "count"
    }


async def raw_calls(
    client: Client, settings: Settings, payloads: list[dict[str, Any]], concurrency: int
) -> dict[str, Any]:
    calls = [raw_start(settings, p) for p in payloads]  # built before the clock starts

    async def one(i: int) -> None:
        c = calls[i]
        await client.start_workflow(
            c.workflow,
            c.arg,
            **c.options,
            start_signal=SIGNAL_ALERT_FIRING,
            start_signal_args=[AlertFiring(alert=c.firing.alert, received_at=datetime.now(UTC))],
        )

    return await timed(len(calls), concurrency, one)


async def webhook_calls(url: str, payloads: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    # aiohttp as the load generator: lighter than httpx, so the sender's own cost skews less.
    bodies = [json.dumps(p).encode() for p in payloads]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one(i: int) -> None:
            async with http.post(f"{url}/alertmanager", data=bodies[i]) as resp:
                resp.raise_for_status()

        return await timed(len(bodies), concurrency, one)


async def settle(s: Stack, payloads: list[dict[str, Any]], drain: float) -> None:
    """Until each of these incidents posted its first message (30 s at most), then `drain` s."""
    assert s.standin
    await wait_for_posts(s.standin, {p["alerts"][0]["annotations"]["summary"] for p in payloads}, POSTED_WITHIN_S)
    await asyncio.sleep(drain)


async def webhook_vs_raw(
    s: Stack, settings: Settings, n: int, concurrency: int, rounds: int, drain: float
) -> dict[str, Any]:
    assert s.url
    run = uuid.uuid4().hex[:4]
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        row: dict[str, Any] = {"first": "raw" if r % 2 == 0 else "webhook"}
        paths = ["raw", "webhook"] if r % 2 == 0 else ["webhook", "raw"]
        for path in paths:  # starts: every alert its own fault
            payloads = [own_fault(i, f"{run}s{r}{path[0]}") for i in range(n)]
            row[f"starts_{path}"] = (
                await raw_calls(s.client, settings, payloads, concurrency)
                if path == "raw"
                else await webhook_calls(s.url, payloads, concurrency)
            )
            await settle(s, payloads, drain)
        for path in paths:  # joins: every alert of one open incident, opened first
            group = f"{run}{r}{path[0]}"
            payloads = [group_alert(f"{run}j{r}{path[0]}", i, group) for i in range(n + 1)]
            if path == "raw":
                await raw_calls(s.client, settings, payloads[:1], 1)
                await settle(s, payloads[:1], 0)
                row["joins_raw"] = await raw_calls(s.client, settings, payloads[1:], concurrency)
            else:
                await webhook_calls(s.url, payloads[:1], 1)
                await settle(s, payloads[:1], 0)
                row["joins_webhook"] = await webhook_calls(s.url, payloads[1:], concurrency)
            await asyncio.sleep(drain)
        per_round.append(row)
        print(
            f"  round {r + 1}: starts raw {row['starts_raw']['per_second']}/s webhook "
            f"{row['starts_webhook']['per_second']}/s; joins raw {row['joins_raw']['per_second']}/s webhook "
            f"{row['joins_webhook']['per_second']}/s",
            flush=True,
        )

    def overall(kind: str) -> dict[str, Any]:
        total = {
            path: (
                sum(x[f"{kind}_{path}"]["calls"] for x in per_round),
                sum(x[f"{kind}_{path}"]["seconds"] for x in per_round),
            )
            for path in ("raw", "webhook")
        }
        rate = {path: round(calls / seconds, 1) for path, (calls, seconds) in total.items()}
        ratio = round(rate["webhook"] / rate["raw"], 3)
        return {
            "raw_per_second": rate["raw"],
            "webhook_per_second": rate["webhook"],
            "ratio": ratio,
            "goal_ratio": f">= {GOAL_RATIO}",
            "goal_met": ratio >= GOAL_RATIO,
        }

    return {
        "concurrency": concurrency,
        "calls_per_path_per_round": n,
        "starts": overall("starts"),
        "joins": overall("joins"),
        "rounds": per_round,
    }


# -- c. one notification, a 560-alert group ----------------------------------------------------------


async def group_storm(s: Stack, settings: Settings, size: int) -> dict[str, Any]:
    assert s.url
    payload = storm_group(size, uuid.uuid4().hex[:4])
    body = json.dumps(payload).encode()
    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        resp = await http.post(
            f"{s.url}/alertmanager",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        elapsed = time.perf_counter() - started
    outcomes = resp.json().get("incidents", []) if resp.status_code == 200 else []
    by_runbook: dict[str, set[str]] = {}
    for o in outcomes:
        by_runbook.setdefault(o["runbook"], set()).add(o["incident"])
    expected = expected_incidents(settings, payload)
    return {
        "alerts": size,
        "body_bytes": len(body),
        "status": resp.status_code,
        "response_s": round(elapsed, 3),
        "outcomes": dict(Counter(o["action"] for o in outcomes)),
        "incidents": len({o["incident"] for o in outcomes}),
        "incidents_by_runbook": {k: len(v) for k, v in sorted(by_runbook.items())},
        "expected_incidents": sum(expected.values()),
        "expected_by_runbook": expected,
        "error": None if resp.status_code == 200 else resp.text[:500],
    }


# -- the run -------------------------------------------------------------------------------------------


async def one_count(args: argparse.Namespace, count: int) -> dict[str, Any]:
    async with stack(count, name="storm", slack=True, triggers=True) as s:
        settings = load_settings(environ=triggers_environ(s.env.client.service_client.config.target_host, s.queue))
        assert s.standin
        print(f"{count} worker process(es): warming up", flush=True)
        warm = [own_fault(i, uuid.uuid4().hex[:4] + "w") for i in range(20)]
        await send_steady(s.url or "", warm, 10)
        await settle(s, warm, args.drain)
        misses = [ledger_misses(s)]
        print("a. alert -> first Slack message", flush=True)
        ladder = await rate_ladder(s, args.rates, args.seconds, args.drain)
        misses.append(ledger_misses(s))
        print("b. webhook vs raw start_workflow", flush=True)
        versus = await webhook_vs_raw(s, settings, args.alerts, args.concurrency, args.rounds, args.drain)
        misses.append(ledger_misses(s))
        print(f"c. one notification of {args.group_alerts} alerts", flush=True)
        group = await group_storm(s, settings, args.group_alerts)
        await asyncio.sleep(args.drain)
        misses.append(ledger_misses(s))
        return {
            "worker_processes": count,
            "alert_to_first_slack_message": ladder,
            "webhook_vs_raw_start_workflow": versus,
            "group_in_one_notification": group,
            # Incidents that gave up asking the coordinator's alert ledger (its updates refused:
            # at most 10 in flight on one workflow), per part; each waited out the retries first.
            "incidents_without_ledger_answer": {
                part: misses[i + 1] - misses[i]
                for i, part in enumerate(("a_first_message", "b_webhook_vs_raw", "c_group"))
            },
            "workers_peak_rss_mb": [round(kb / 1024, 1) for kb in s.workers.rss_kb("VmHWM")],
            "logs": str(s.folder),
        }


def ledger_misses(s: Stack) -> int:
    """How many incidents so far ran without the alert ledger's word (the workers' warning line)."""
    return s.workers.log_text().count("alert ledger unavailable")


def side_by_side(by_count: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def row(get: Callable[[dict[str, Any]], Any], goal: str) -> dict[str, Any]:
        return {f"{n}_workers": get(f) for n, f in by_count.items()} | {"goal": goal}

    return {
        "highest_rate_p99_under_1s": row(
            lambda f: f["alert_to_first_slack_message"]["highest_rate_p99_under_1s"], f">= {GOAL_RATE:g} alerts/s"
        ),
        "start_ratio_webhook_to_raw": row(
            lambda f: f["webhook_vs_raw_start_workflow"]["starts"]["ratio"], f">= {GOAL_RATIO}"
        ),
        "join_ratio_webhook_to_raw": row(
            lambda f: f["webhook_vs_raw_start_workflow"]["joins"]["ratio"], f">= {GOAL_RATIO}"
        ),
        "group_response_s": row(lambda f: f["group_in_one_notification"]["response_s"], "(no goal: figure)"),
        "group_incidents": row(
            lambda f: f["group_in_one_notification"]["incidents"], "= expected (distinct playbook + scope)"
        ),
        "incidents_without_ledger_answer": row(
            lambda f: sum(f["incidents_without_ledger_answer"].values()),
            "0 (the coordinator answered every new incident)",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts, each fresh")
    parser.add_argument("--rates", default="10,20,30,50,70,100", help="alerts per second, comma-separated, climbed")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate is held")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds of rest after each measurement")
    parser.add_argument("--alerts", type=int, default=400, help="calls per path per round (webhook vs raw)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--group-alerts", type=int, default=560, help="alerts in the one big notification")
    parser.add_argument("--out", type=Path, default=RESULTS / "alert_storm.json")
    args = parser.parse_args()
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not args.rates or min(args.rates) <= 0 or min(args.workers) < 1:
        raise SystemExit("--rates must be positive numbers and --workers counts >= 1")

    async def run() -> dict[str, Any]:
        load_at_start = os.getloadavg()
        by_count = {str(n): await one_count(args, n) for n in args.workers}
        return header(load_at_start) | {
            "setup": {
                "worker_processes": args.workers,
                "rates_per_second": args.rates,
                "seconds_per_rate": args.seconds,
                "concurrency": args.concurrency,
                "alerts_per_round": args.alerts,
                "rounds": args.rounds,
                "group_alerts": args.group_alerts,
                "playbooks": "the worker's own (python -m worker.worker); "
                "Slack: the stand-in over HTTP; cluster: none (throwaway kubeconfig)",
            },
            "side_by_side": side_by_side(by_count),
            "by_worker_processes": by_count,
        }

    figures = asyncio.run(run())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
