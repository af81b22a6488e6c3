"""The benchmark table of README.md, printed from bench/results/*.json (the figures of record).

    .venv/bin/python -m bench.table

One row per figure with its goal and ✔/✘; 1 and 2 worker processes side by side where the bench
ran both. A file that is missing prints as "not run".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def per_workers(data: dict[str, Any], get) -> str:
    return " · ".join(f"{n} worker{'s' if n != '1' else ''}: {get(v)}" for n, v in data["by_worker_processes"].items())


def rows() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    cost = load("incident_cost_before_after")
    if cost:
        b, a = cost["before"], cost["after"]
        bw, aw = b["per_incident"], a["per_incident"]
        total_b, total_a = bw["worker_cpu_ms"] + bw["server_cpu_ms"], aw["worker_cpu_ms"] + aw["server_cpu_ms"]
        out.append(
            (
                "opening one incident: worker + Temporal server CPU (`incident_cost.py`, via `compare.py`, 1 worker)",
                f"before {bw['worker_cpu_ms']:g} + {bw['server_cpu_ms']:g} ms → after **{aw['worker_cpu_ms']:g} + "
                f"{aw['server_cpu_ms']:g} ms** ({100 * (total_a - total_b) / total_b:+.0f}%); workflow tasks "
                f"{b['first_minute_of_an_incident']['workflow_tasks']:g} → {a['first_minute_of_an_incident']['workflow_tasks']:g}, "
                f"events in the first minute {b['first_minute_of_an_incident']['events']:g} → "
                f"{a['first_minute_of_an_incident']['events']:g}; first Slack message p99 "
                f"{b['first_slack_message']['p99_s']:g} → {a['first_slack_message']['p99_s']:g} s at 10 alerts/s",
                f"halve it {mark(total_a <= total_b / 2)}",
            )
        )
    storm = load("alert_storm")
    if storm:
        side = storm["side_by_side"]
        highest = side["highest_rate_p99_under_1s"]
        out.append(
            (
                "alert → first Slack message, highest steady rate with p99 < 1 s (`alert_storm.py`)",
                per_workers(
                    storm, lambda v: f"**{v['alert_to_first_slack_message']['highest_rate_p99_under_1s']:g}/s**"
                ),
                f"≥ 50/s {mark(all((x or 0) >= 50 for k, x in highest.items() if k != 'goal'))}",
            )
        )
        for kind in ("starts", "joins"):
            out.append(
                (
                    f"webhook vs raw `start_workflow`, {kind} (same concurrency, same run)",
                    per_workers(
                        storm,
                        lambda v, k=kind: (
                            f"{v['webhook_vs_raw_start_workflow'][k]['webhook_per_second']:g} vs "
                            f"{v['webhook_vs_raw_start_workflow'][k]['raw_per_second']:g}/s: "
                            f"**{v['webhook_vs_raw_start_workflow'][k]['ratio']:g}**"
                        ),
                    ),
                    f"≥ 0.9 {mark(all(v['webhook_vs_raw_start_workflow'][kind]['ratio'] >= 0.9 for v in storm['by_worker_processes'].values()))}",
                )
            )
        out.append(
            (
                "a 560-alert group in one notification: every alert started or joined",
                per_workers(
                    storm,
                    lambda v: (
                        f"**{v['group_in_one_notification']['response_s']:g} s**, "
                        f"{v['group_in_one_notification']['incidents']} incidents "
                        f"(expected {v['group_in_one_notification']['expected_incidents']})"
                    ),
                ),
                "(figure)",
            )
        )
    for name, what, goal_s in (
        ("escalation_timers_spread60s", "1,000 incidents, marks spread over 60 s", 1.0),
        ("escalation_timers_2000_at_once", "2,000 marks at one instant", 2.0),
    ):
        esc = load(name)
        if esc:
            out.append(
                (
                    f"{what}: escalation lateness p99; marks paged/s per worker (`escalation_timers.py`)",
                    per_workers(
                        esc,
                        lambda v: (
                            f"**{v['lateness']['recorded']['p99_s']:g} s**, "
                            f"{v['marks_paged_per_second_per_worker']:g}/s"
                        ),
                    ),
                    f"< {goal_s:g} s {mark(all(v['lateness']['recorded']['p99_s'] < goal_s for v in esc['by_worker_processes'].values()))}",
                )
            )
    big = load("escalation_timers_10000_open")
    if big:
        v = big["by_worker_processes"]["1"]
        peak = max(v["workers"]["peak_rss_mb"])
        out.append(
            (
                "10,000 open incidents waiting on their timers in one worker: peak RSS",
                f"**{peak:g} MB** ({v['workers']['rss_all_waiting_mb'][0]:g} MB with all waiting)",
                f"< 1 GB {mark(peak < 1024)}",
            )
        )
    drill = load("drill_service_outage")
    if drill:
        out.append(
            (
                "SOP-001 drill, alert → verified recovery (`drill_service_outage.py`, time scale 10)",
                f"median **{drill['alert_to_recovery_median_s']:g} s**; {drill['command_to_recovery_median_s']:g} s "
                "from typing `runbooks drill`",
                f"≤ 30 s {mark(drill['alert_to_recovery_median_s'] <= 30)}",
            )
        )
    return out


def main() -> None:
    print("| benchmark | figure | goal |\n|---|---|---|")
    for what, figure, goal in rows():
        print(f"| {what} | {figure} | {goal} |")
    loads = {
        name: (load(name) or {}).get("machine", {}).get("load_average_at_start")
        for name in ("alert_storm", "escalation_timers_spread60s", "escalation_timers_2000_at_once")
    }
    print("\nload average at start: " + ", ".join(f"{k}: {v}" for k, v in loads.items() if v))


if __name__ == "__main__":
    main()
