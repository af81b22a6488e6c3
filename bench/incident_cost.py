"""What opening one incident costs: the profile behind the storm figures.

N alerts, each its own fault (its own Alertmanager group, so each starts a Triage incident),
go through `runbooks triggers` at a modest steady rate to one or more worker processes whose
Slack activities talk to the Slack stand-in. Then, per incident:

- its history in its first minute: workflow tasks, activities (by type), timers, markers,
  search-attribute upserts and the other events, and the history's size in bytes;
- alert sent -> first Slack message (the stand-in's clock);
- CPU ms of the worker(s) and of the Temporal server per incident, and the workers' RSS growth
  per open incident (kB);
- with --py-spy: where worker 0 spends its CPU (py-spy's sampled stacks, self and inclusive
  time of the heaviest functions), from the first alert until every incident is open.

    .venv/bin/python -m bench.incident_cost [--incidents 200] [--rate 10] [--workers 1] [--py-spy] [--tag before]

Writes bench/results/incident_cost[_TAG].json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.harness import (
    RECOMMENDED_SERVER_CONFIG,
    RESULTS,
    TOKEN,
    Workers,
    bounded,
    child_named,
    cpu_seconds,
    dev_server,
    header,
    own_fault,
    send_steady,
    start_triggers,
    stats,
    stop,
    wait_for_posts,
)
from bench.pyspy import summarize
from standins.slack import SlackStandIn

_KINDS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: "workflow_tasks",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
    EventType.EVENT_TYPE_TIMER_STARTED: "timers",
    EventType.EVENT_TYPE_MARKER_RECORDED: "markers (local activities, patches)",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "search_attribute_upserts",
    EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED: "memo_upserts",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
}


async def first_minute(client: Client, wid: str) -> dict[str, Any]:
    """What one incident's history holds in its first 60 s: counts by kind, activity types, size."""
    history = await client.get_workflow_handle(wid).fetch_history()
    events = history.events
    t0 = events[0].event_time.ToDatetime()
    window = [e for e in events if e.event_time.ToDatetime() - t0 <= timedelta(seconds=60)]
    counts = Counter(_KINDS.get(e.event_type, "other") for e in window)
    activity_types = Counter(
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in window
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    first_post = next(
        (e.event_id for e in window if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED), None
    )
    wft_before_page = sum(
        1
        for e in window
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        and (first_post is None or e.event_id < first_post)
    )
    return {
        "events": len(window),
        **counts,
        "activity_types": dict(activity_types),
        "workflow_tasks_before_first_activity": wft_before_page,
        "history_bytes": sum(e.ByteSize() for e in window),
        "input_bytes": events[0].workflow_execution_started_event_attributes.input.ByteSize(),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="bench-incident-cost-"))
    env = await dev_server(([] if args.plain_server else list(RECOMMENDED_SERVER_CONFIG)) + args.server_config)
    standin = SlackStandIn().start()
    address = env.client.service_client.config.target_host
    queue = f"bench-cost-{uuid.uuid4().hex[:8]}"
    workers = Workers(
        address, queue, folder, count=args.workers, slack_url=standin.base_url, extra_args=args.worker_arg
    ).start()
    triggers, url = start_triggers(address, queue, TOKEN)
    server = child_named("temporal")
    run_id = uuid.uuid4().hex[:4]
    try:
        warm = [own_fault(i, run_id + "w") for i in range(20)]
        await send_steady(url, warm, args.rate)
        await wait_for_posts(standin, {p["alerts"][0]["annotations"]["summary"] for p in warm}, 60)
        await asyncio.sleep(2)
        before = {"worker_cpu": workers.cpu_seconds(), "server_cpu": cpu_seconds(server), "rss": workers.rss_kb()}
        payloads = [own_fault(i, run_id) for i in range(args.incidents)]
        spy = workers.attach_profiler(folder / "worker0.pyspy") if args.py_spy else None
        sent = await send_steady(url, payloads, args.rate)
        posted = await wait_for_posts(standin, set(sent), 120)
        await asyncio.sleep(2)  # the workflow task after the first message
        if spy:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        after = {
            "worker_cpu": workers.cpu_seconds(),
            "server_cpu": cpu_seconds(server),
            "rss": workers.rss_kb(),
            "peak": workers.rss_kb("VmHWM"),
        }
        await asyncio.sleep(max(0.0, 62 - (time.time() - min(sent.values()))))  # the first minute of the first one
        prefix = "triage--group-"
        ids = [wid async for wid in _incident_ids(env.client, queue, prefix)]
        histories = await bounded(ids[: args.histories], 10, lambda wid: first_minute(env.client, wid))
        if ids:  # one incident's whole history, event by event, to read beside the counts
            sample = await env.client.get_workflow_handle(ids[0]).fetch_history()
            (folder / "sample_history.json").write_text(sample.to_json())
    finally:
        stop(triggers)
        workers.stop()
        standin.stop()
        await env.shutdown()
    n = args.incidents
    latencies = [posted[k] - at for k, at in sent.items() if k in posted]
    numeric = sorted({k for h in histories for k, v in h.items() if isinstance(v, int)})
    figures: dict[str, Any] = header(load_at_start) | {
        "setup": {
            "incidents": n,
            "rate_per_second": args.rate,
            "worker_processes": args.workers,
            "playbook": "Triage via the webhook, one group per alert (one incident each)",
            "slack": "stand-in over HTTP (slack-sdk base_url)",
            "worker_args": args.worker_arg,
            "server_dynamic_config": ([] if args.plain_server else list(RECOMMENDED_SERVER_CONFIG))
            + args.server_config,
        },
        "first_slack_message": stats(latencies) | {"posted": len(latencies)},
        "per_incident": {
            "worker_cpu_ms": round((after["worker_cpu"] - before["worker_cpu"]) * 1000 / n, 2),
            "server_cpu_ms": round((after["server_cpu"] - before["server_cpu"]) * 1000 / n, 2),
            "worker_rss_kb": round((sum(after["rss"]) - sum(before["rss"])) / n, 1),
        },
        "workers_peak_rss_mb": [round(kb / 1024, 1) for kb in after["peak"]],
        "first_minute_of_an_incident": {
            "incidents_read": len(histories),
            **{k: statistics.median(h.get(k, 0) for h in histories) for k in numeric},
            "activity_types": histories[0]["activity_types"] if histories else {},
        },
    }
    if args.py_spy:
        figures["py_spy"] = summarize(folder / "worker0.pyspy", top=args.top)
    figures["logs"] = str(folder)
    return figures


async def _incident_ids(client: Client, queue: str, prefix: str):
    async for wf in client.list_workflows(f'TaskQueue = "{queue}" AND WorkflowType = "Triage"'):
        if wf.id.startswith(prefix):
            yield wf.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="alerts per second")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--histories", type=int, default=50, help="incidents whose first minute is read")
    parser.add_argument("--py-spy", action="store_true", help="sample worker 0 with py-spy")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="a flag for every worker process, e.g. --worker-arg=--no-workflow-sandbox",
    )
    parser.add_argument(
        "--server-config",
        action="append",
        default=[],
        help="dynamic config of the dev server, e.g. system.enableActivityEagerExecution=true",
    )
    parser.add_argument(
        "--plain-server",
        action="store_true",
        help="the dev server's defaults, without RECOMMENDED_SERVER_CONFIG (eager activities)",
    )
    parser.add_argument("--tag", default="", help="results file suffix, e.g. before / after")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    out = RESULTS / (f"incident_cost_{args.tag}.json" if args.tag else "incident_cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
