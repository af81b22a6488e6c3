"""Alert storm: the webhook against raw `client.start_workflow`, on one dev server, in one run.

1. Throughput: N alerts, C at a time. Raw: the Temporal client starts N incidents itself.
   Webhook: N Alertmanager notifications (one alert each) POSTed to `runbooks triggers`
   (its own process, `triggers.app.serve`, configured by RUNBOOKS_* variables). Both on the
   same dev server; ratio = webhook / raw (goal >= 0.9); p50/p99 latency of each call.
2. Alert received -> first Slack message: alerts at a steady 20/s through the webhook, a
   worker running the Triage playbook whose Slack activities talk to the Slack stand-in;
   latency = the stand-in's ts of the incident's first message - the moment the alert was
   sent (goal p99 < 1 s).

    .venv/bin/python -m bench.alert_storm [--alerts 400] [--concurrency 20] [--rate 20] [--seconds 10] [--rounds 3]

Writes bench/results/alert_storm.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import httpx
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[1]

from standins.alertmanager import am_alert, am_payload, free_port
from standins.slack import SlackStandIn
from workflows.models import Alert, IncidentInput
from workflows.search import SEARCH_ATTRIBUTES

TOKEN = "bench-token"
RESULTS = ROOT / "bench" / "results" / "alert_storm.json"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {
        "alerts": len(latencies),
        "seconds": round(elapsed, 3),
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1000, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


async def bounded(n: int, concurrency: int, one) -> tuple[list[float], float]:
    """Run one(i) for i < n, `concurrency` at a time: every call's latency and the wall time."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def run(i: int) -> None:
        async with sem:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    return latencies, time.perf_counter() - started


def incident_input(i: int, run: str) -> IncidentInput:
    fp = f"{run}{i:06d}"
    return IncidentInput(
        alert=Alert(alertname="LLMDServiceDown", fingerprint=fp, starts_at=datetime.now(timezone.utc),
                    labels={"alertname": "LLMDServiceDown", "namespace": "llm-d"}),
        runbook="service-outage", severity="P0", namespace="llm-d",
    )


async def raw_starts(client: Client, n: int, concurrency: int, queue: str) -> tuple[list[float], float]:
    run = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        await client.start_workflow(
            "ServiceOutage", incident_input(i, run), id=f"raw-{run}-{i}", task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )

    return await bounded(n, concurrency, one)


async def webhook_starts(url: str, n: int, concurrency: int) -> tuple[list[float], float]:
    # aiohttp as the load generator: lighter than httpx, so the sender's own cost skews less.
    bodies = [json.dumps(am_payload(am_alert("LLMDServiceDown"))).encode() for _ in range(n)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def one(i: int) -> None:
            async with http.post(f"{url}/alertmanager", data=bodies[i]) as resp:
                resp.raise_for_status()

        return await bounded(n, concurrency, one)


def start_triggers(address: str, queue: str, port: int) -> subprocess.Popen:
    env = os.environ | {
        "RUNBOOKS_TEMPORAL__ADDRESS": address,
        "RUNBOOKS_TEMPORAL__TASK_QUEUE": queue,
        "RUNBOOKS_WEBHOOK__BEARER_TOKEN": TOKEN,
        "RUNBOOKS_SERVER__PORT": str(port),
        "RUNBOOKS_SLACK__CHANNELS": '{"default": "#storm"}',
    }
    code = "import logging; logging.disable(logging.INFO); from triggers.app import serve; " \
           "from settings import load_settings; serve(load_settings())"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("triggers did not become ready")


WORKER_CODE = """
import asyncio, sys
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from activities.slack import SlackActivities
from workflows.triage import Triage

async def main(address, queue, slack_url):
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    slack = SlackActivities(AsyncWebClient(token="xoxb-bench", base_url=slack_url), default_channel="#storm")
    acts = [slack.post_incident, slack.post_in_thread, slack.request_approval, slack.update_message]
    async with Worker(client, task_queue=queue, workflows=[Triage], activities=acts):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def first_message_latency(address: str, rate: float, seconds: float) -> dict:
    """Steady `rate` alerts/s through the webhook; a Triage worker process posts to the Slack stand-in."""
    standin = SlackStandIn().start()
    queue = f"storm-slack-{uuid.uuid4().hex[:8]}"
    sent: dict[str, float] = {}
    worker = subprocess.Popen([sys.executable, "-c", WORKER_CODE, address, queue, standin.base_url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    triggers_port = free_port()
    triggers = start_triggers(address, queue, triggers_port)
    try:
        assert worker.stdout and worker.stdout.readline().strip() == "ready"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{triggers_port}",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async def send(i: int) -> None:
                alert = am_alert(f"StormAlert{i:05d}")
                alert["labels"].pop("namespace")  # triage without cluster context: Slack only
                alert["annotations"]["summary"] = f"storm-{i:05d}"
                sent[f"storm-{i:05d}"] = time.time()
                (await http.post("/alertmanager", json=am_payload(alert))).raise_for_status()

            tasks = []
            started = time.perf_counter()
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(send(i)))
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(_first_posts(standin)) < len(sent):
                await asyncio.sleep(0.2)
        posted = _first_posts(standin)
        latencies = [posted[key] - at for key, at in sent.items() if key in posted]
        return {
            "rate_per_second": rate, "alerts": len(sent), "first_messages": len(latencies),
            "p50_ms": round(pct(latencies, 0.5) * 1000, 1), "p99_ms": round(pct(latencies, 0.99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1), "goal_p99_ms": 1000,
        }
    finally:
        for proc in (triggers, worker):
            proc.terminate()
            proc.wait(timeout=15)
        standin.stop()


def _first_posts(standin: SlackStandIn) -> dict[str, float]:
    """storm-key -> when the incident's first message landed (the stand-in's ts is its clock)."""
    firsts: dict[str, float] = {}
    for message in standin.messages("#storm"):
        if message.get("thread_ts"):
            continue
        key = next((w for w in message.get("text", "").split() if w.startswith("storm-")), None)
        if key and key not in firsts:
            firsts[key] = float(message["ts"])
    return firsts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal") or str(ROOT / ".venv/bin/temporal"),
        data_converter=pydantic_data_converter, search_attributes=[k for k, _ in SEARCH_ATTRIBUTES],
        ui=False, dev_server_log_level="error",
    )
    queue = f"storm-{uuid.uuid4().hex[:8]}"
    port = free_port()
    address = env.client.service_client.config.target_host
    triggers = start_triggers(address, queue, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await raw_starts(env.client, 50, args.concurrency, queue)  # warm-up, both paths
        await webhook_starts(url, 50, args.concurrency)
        # Alternate the two paths so drift in the server (its db growing) hits both alike.
        rounds = [(await raw_starts(env.client, args.alerts, args.concurrency, queue),
                   await webhook_starts(url, args.alerts, args.concurrency)) for _ in range(args.rounds)]
        raw = summary([x for r, _ in rounds for x in r[0]], sum(r[1] for r, _ in rounds))
        hook = summary([x for _, h in rounds for x in h[0]], sum(h[1] for _, h in rounds))
    finally:
        triggers.terminate()
        triggers.wait(timeout=10)
    try:
        slack = await first_message_latency(address, args.rate, args.seconds)
    finally:
        await env.shutdown()

    figures = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "throughput": {
            "concurrency": args.concurrency, "raw_start_workflow": raw, "webhook": hook,
            "ratio": round(hook["per_second"] / raw["per_second"], 3), "goal_ratio": 0.9,
            "rounds": [{"raw_per_second": round(len(r[0]) / r[1], 1), "webhook_per_second": round(len(h[0]) / h[1], 1)}
                       for r, h in rounds],
        },
        "alert_to_first_slack_message": slack,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
