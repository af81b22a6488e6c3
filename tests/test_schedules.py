"""The scheduled checks on Temporal Schedules: the GPU, model and morning health checks.

On the dev server (the time-skipping server has no Schedules): the three schedules exist once
`runbooks dev` has started, with their specs (the two paging ones paused: drills run there); `runbooks schedules trigger` on the healthy simulated
cluster opens nothing; with a GPU that reads `ERR!` the GPU check opens the GPU incident; with a
model endpoint failing the model check opens that LLMDeployment's incident; the morning report
lists what the cluster holds; `pause`/`unpause` change the schedule's state, and a later `apply`
keeps it; `list` shows the last runs. The commands reach the stack by `--home`. The maintenance
window's arithmetic is unit-tested, and the real server is shown to skip it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter

from simulator.scenarios import FAILING_MODEL, GPU_NODES
from simulator.server import inject_into
from tests.helpers.dev_stack import RUNBOOKS, running_dev
from settings import ConfigError, Settings, load_settings
from triggers.routing import RoutingCatalog
from worker.schedule_specs import DEV_PAUSE_NOTE, _paging_spec, desired_schedules, pause_note
from workflows.checks.models import (
    GPU_FINDING_ALERT,
    MODEL_FINDING_ALERT,
    SOURCE_LABEL,
    MaintenanceWindow,
    MorningReport,
    ReportLine,
)
from workflows.checks.report import morning_message
from workflows.incident.scope import scope_incident_id


# ---- the maintenance window's arithmetic (pure) ---------------------------------------------------


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_window_is_the_first_saturday_2_to_6_in_los_angeles_winter_and_summer():
    window = MaintenanceWindow()  # seed 003's default
    # 2026-02-07 is February's first Saturday; 02:00 PST is 10:00 UTC.
    assert not window.contains(_utc(2026, 2, 7, 9, 59))
    assert window.contains(_utc(2026, 2, 7, 10, 0))
    assert window.contains(_utc(2026, 2, 7, 13, 59))
    assert not window.contains(_utc(2026, 2, 7, 14, 0))
    assert not window.contains(_utc(2026, 2, 14, 11, 0))  # the second Saturday
    assert not window.contains(_utc(2026, 2, 1, 11, 0))  # day 1, but a Sunday
    # 2026-07-04 is July's first Saturday; 02:00 PDT is 09:00 UTC (the zone follows daylight saving).
    assert window.contains(_utc(2026, 7, 4, 9, 0))
    assert not window.contains(_utc(2026, 7, 4, 8, 59))
    assert window.next_start(_utc(2026, 2, 7, 14, 0)) == datetime.fromisoformat("2026-03-07T02:00:00-08:00")
    assert window.next_start(_utc(2026, 1, 1)) == datetime.fromisoformat("2026-01-03T02:00:00-08:00")


def test_a_window_off_the_hour_is_three_calendar_slices_and_bad_values_are_refused(tmp_path):
    window = MaintenanceWindow(start="02:30", end="05:15", weekday="sunday", week_of_month=2)
    assert [(s.hours, s.minutes) for s in window.calendar_slices()] == [
        ((2, 2), (30, 59)),
        ((3, 4), (0, 59)),
        ((5, 5), (0, 14)),
    ]
    assert window.days == (8, 14)
    unquoted = tmp_path / "runbooks.yaml"
    unquoted.write_text("schedules:\n  maintenance_window:\n    start: 2:00\n")  # YAML 1.1: the number 120
    with pytest.raises(ConfigError, match="quoted"):
        load_settings(unquoted, environ={})
    with pytest.raises(ConfigError, match="IANA"):
        load_settings(None, environ={"RUNBOOKS_SCHEDULES__TIME_ZONE": "Pacific Standard"})
    with pytest.raises(ConfigError, match="after start"):
        load_settings(None, environ={"RUNBOOKS_SCHEDULES__MAINTENANCE_WINDOW": '{"start": "06:00", "end": "02:00"}'})


def test_the_morning_report_is_block_kit_without_markdown_tables():
    report = MorningReport(
        checked_at=_utc(2026, 3, 2, 16),
        time_zone="America/Los_Angeles",
        deployments=[ReportLine(name="production/llama-3-8b", detail="Ready 4/4", ok=True)],
        gpu_nodes=[ReportLine(name="gpu-node-2", detail="Ready · GPUs 7/8 allocatable", ok=False)],
    )
    text, blocks = morning_message(report)
    assert blocks[0]["type"] == "header" and "Mon 02 Mar 2026 08:00 PST" in blocks[0]["text"]["text"]
    assert any(b["type"] == "section" and "fields" in b for b in blocks)
    rendered = json.dumps(blocks)
    assert "production/llama-3-8b" in rendered and "gpu-node-2" in rendered
    assert "|---" not in rendered and "| " not in rendered
    assert all(len(b.get("fields", [])) <= 10 for b in blocks)
    assert "1 thing(s) need a look" in text


# ---- the real server skips the window ---------------------------------------------------------------


async def test_the_server_starts_no_paging_check_inside_the_maintenance_window(dev_client: Client):
    """Temporal's own next-run times (from a start just before the next window) jump over it."""
    window = MaintenanceWindow()
    opens = window.next_start(datetime.now(UTC) + timedelta(days=1))
    spec = _paging_spec(15, timedelta(0), window)
    spec.start_at = opens - timedelta(minutes=30)
    sid = f"window-{uuid.uuid4().hex[:8]}"
    handle = await dev_client.create_schedule(
        sid, Schedule(action=ScheduleActionStartWorkflow("NobodyRunsThis", id=sid, task_queue=f"tq-{sid}"), spec=spec)
    )
    try:
        times = (await handle.describe()).info.next_action_times
    finally:
        await handle.delete()
    assert len(times) >= 4
    assert [t for t in times if window.contains(t)] == []
    assert times[0] == opens - timedelta(minutes=30) and times[1] == opens - timedelta(minutes=15)
    assert times[2] == opens + timedelta(hours=4)  # the next run is when the window closes


# ---- `runbooks dev` and `runbooks schedules` ---------------------------------------------------------


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("dev-home")
    with running_dev(home) as temporal:
        yield home, temporal


def schedules(stack, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`runbooks schedules ...` as a user of that dev stack types it: --home, no --temporal."""
    home, _ = stack
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOKS_TEMPORAL__ADDRESS"}
    return subprocess.run(
        [RUNBOOKS, "schedules", *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout, env=env
    )


def trigger(stack, check: str) -> dict:
    done = schedules(stack, "trigger", check, "--wait", "--timeout", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.split("\n", 1)[1])  # after the "started <id>" line


def _incident_for(labels: dict[str, str]) -> str:
    routed = RoutingCatalog.from_settings(Settings().routing).route(labels, fingerprint="x")
    return scope_incident_id(routed.runbook, routed.scope.key)


async def _client(stack) -> Client:
    return await Client.connect(stack[1], data_converter=pydantic_data_converter)


async def _open_incidents(stack) -> list[str]:
    client = await _client(stack)
    return [wf.id async for wf in client.list_workflows("ExecutionStatus = 'Running' AND Runbook IS NOT NULL")]


async def test_runbooks_dev_has_the_three_schedules_with_their_specs(dev_stack):
    client = await _client(dev_stack)
    want = {s.id: s for s in desired_schedules(Settings())}
    # the dev stack's one cluster is the default one: its schedules carry its name
    for sid in ("gpu-health-check.default", "model-health-check.default", "morning-health-check.default"):
        desc = await client.get_schedule_handle(sid).describe()
        policy = desc.schedule.policy
        assert policy.overlap == ScheduleOverlapPolicy.SKIP
        assert policy.catchup_window is not None and policy.catchup_window <= timedelta(hours=1)
        # drills run on `runbooks dev`: the paging checks start paused, saying why; the report runs
        paging = not sid.startswith("morning-health-check")
        assert desc.schedule.state.paused == paging, sid
        assert (desc.schedule.state.note == pause_note(DEV_PAUSE_NOTE, sid)) if paging else not desc.schedule.state.note
        assert desc.info.next_action_times, sid
        assert isinstance(desc.schedule.action, ScheduleActionStartWorkflow)
        assert desc.schedule.action.workflow == want[sid].schedule.action.workflow
        assert (desc.schedule.action.id, desc.schedule.action.task_queue) == (sid, "llm-runbooks.default")
    gpu = (await client.get_schedule_handle("gpu-health-check.default").describe()).schedule.spec
    assert [i.every for i in gpu.intervals] == [timedelta(minutes=15)] and gpu.jitter
    assert gpu.time_zone_name == "America/Los_Angeles"
    assert [
        (s.day_of_month[0].start, s.day_of_month[0].end, s.day_of_week[0].start, s.hour[0].start, s.hour[0].end)
        for s in gpu.skip
    ] == [(1, 7, 6, 2, 5)]  # first Saturday, 02:00-05:59
    model = (await client.get_schedule_handle("model-health-check.default").describe()).schedule.spec
    assert [i.every for i in model.intervals] == [timedelta(minutes=5)] and model.skip
    morning = (await client.get_schedule_handle("morning-health-check.default").describe()).schedule.spec
    assert [(c.hour[0].start, c.minute[0].start) for c in morning.calendars] == [(8, 0)]
    assert not morning.skip  # the report is not paused by the window: it pages no one
    listed = schedules(dev_stack, "list")
    assert listed.returncode == 0, listed.stderr
    assert "cluster default: task queue llm-runbooks.default\n" in listed.stdout
    assert "gpu-health-check.default: PAUSED (paused by `runbooks dev`: drills are enabled" in listed.stdout
    assert "`runbooks schedules unpause gpu-health-check.default` runs it" in listed.stdout
    assert "; every 15 min" in listed.stdout
    assert "morning-health-check.default: active; daily at 08:00" in listed.stdout
    assert (
        "last: none yet (paused; `runbooks schedules trigger gpu-health-check.default` runs it once)" in listed.stdout
    )
    # a paused schedule runs nothing: no "next" times (the ones it had when paused go stale)
    gpu_block = listed.stdout.split("gpu-health-check.default: PAUSED", 1)[1].split("\n", 2)[1]
    assert gpu_block == "  next: none while paused (`runbooks schedules unpause gpu-health-check.default` resumes it)"
    morning_next = listed.stdout.split("morning-health-check.default: active", 1)[1].split("\n", 2)[1]
    assert morning_next.startswith("  next: 20"), morning_next
    banner = (dev_stack[0] / "dev.log").read_text()
    assert "gpu-health-check and model-health-check PAUSED while drills run here" in banner
    assert f"KUBECONFIG={dev_stack[0] / 'simulator.kubeconfig'} kubectl get llmdeployments -A" in banner
    assert "maintenance window: first Saturday of the month, 02:00-06:00 America/Los_Angeles" in listed.stdout


async def test_checks_on_a_healthy_cluster_open_nothing(dev_stack):
    gpu = trigger(dev_stack, "gpu-health-check")
    assert sorted(n["node"] for n in gpu["nodes"]) == sorted(GPU_NODES)
    assert all(n["healthy"] and n["probed"] for n in gpu["nodes"]) and gpu["incidents"] == []
    model = trigger(dev_stack, "model-health-check")
    assert len(model["models"]) >= 3 and all(m["ok"] for m in model["models"]), model
    assert model["incidents"] == []
    assert await _open_incidents(dev_stack) == []


async def test_the_morning_report_lists_what_the_cluster_holds(dev_stack):
    home, _ = dev_stack
    api = k8s_config.new_client_from_config(config_file=str(home / "simulator.kubeconfig"))
    items = k8s.CustomObjectsApi(api).list_cluster_custom_object("inference.llm-d.io", "v1alpha1", "llmdeployments")
    deployments = sorted(f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items["items"])
    report = trigger(dev_stack, "morning-health-check")
    assert sorted(d["name"] for d in report["deployments"]) == deployments
    assert sorted(n["name"] for n in report["gpu_nodes"]) == sorted(GPU_NODES)
    assert report["gpus_capacity"] == 24 and report["could_not_check"] == []
    rendered = json.dumps(report["blocks"])
    assert report["blocks"][0]["type"] == "header"
    assert all(name in rendered for name in deployments + list(GPU_NODES))
    assert "|---" not in rendered
    assert report["slack_ts"]  # posted (to the console: the dev stack has no Slack token)


async def test_pause_and_unpause_change_the_schedules_state(dev_stack):
    client = await _client(dev_stack)
    handle = client.get_schedule_handle("model-health-check.default")
    # the dev stack's pause is lifted by a human; a later apply (as at a worker restart) keeps that
    done = schedules(dev_stack, "unpause", "model-health-check")
    assert done.returncode == 0, done.stderr
    applied = schedules(dev_stack, "apply")
    assert applied.returncode == 0 and "model-health-check.default: updated" in applied.stdout, applied.stderr
    assert not (await handle.describe()).schedule.state.paused
    assert (await client.get_schedule_handle("gpu-health-check.default").describe()).schedule.state.paused
    # the checks the earlier tests triggered are its last runs, with how each ended
    listed = schedules(dev_stack, "list").stdout
    block = listed.split("model-health-check.default:", 1)[1].split("morning-health-check.default:", 1)[0]
    assert re.search(r"last: \S+ \S+Z model-health-check\S* completed", block), listed
    done = schedules(dev_stack, "pause", "model-health-check", "--note", "maintenance: node upgrades")
    assert done.returncode == 0, done.stderr
    state = (await handle.describe()).schedule.state
    assert state.paused and state.note == "maintenance: node upgrades"
    assert "model-health-check.default: PAUSED (maintenance: node upgrades)" in schedules(dev_stack, "list").stdout
    done = schedules(dev_stack, "unpause", "model-health-check.default")  # the full id, as `list` prints it
    assert done.returncode == 0, done.stderr
    assert not (await handle.describe()).schedule.state.paused
    refused = schedules(dev_stack, "pause", "no-such-check")
    assert refused.returncode == 2 and "no scheduled check 'no-such-check'" in refused.stderr


async def test_a_gpu_reading_err_opens_the_gpu_incident_labelled_from_the_schedule(dev_stack):
    home, _ = dev_stack
    inject_into(home / "simulator.kubeconfig", "gpu-hardware-failure")  # a GPU of gpu-node-2: XID 48, ERR!
    result = trigger(dev_stack, "gpu-health-check")
    sick = [n for n in result["nodes"] if not n["healthy"]]
    assert [n["node"] for n in sick] == ["gpu-node-2"]
    assert any("ERR!" in r for r in sick[0]["reasons"]), sick
    # The incident an alert of this fault on this node opens (the same routing and scope).
    wanted = _incident_for({"alertname": GPU_FINDING_ALERT, "node": "gpu-node-2", "namespace": "kube-system"})
    assert [(i["incident"], i["action"] in ("started", "joined")) for i in result["incidents"]] == [(wanted, True)]
    client = await _client(dev_stack)
    desc = await client.get_workflow_handle(wanted).describe()
    assert desc.status is not None and desc.status.name == "RUNNING"
    history = await client.get_workflow_handle(wanted).fetch_history()
    first = history.events[0].workflow_execution_started_event_attributes.input.payloads[0].data
    assert f'"{SOURCE_LABEL}":"schedule"' in first.decode().replace(" ", "")


async def test_a_failing_model_endpoint_opens_its_deployment_incident(dev_stack):
    home, _ = dev_stack
    inject_into(home / "simulator.kubeconfig", "model-deploy-failure:image-pull")
    ns, name = FAILING_MODEL
    result = trigger(dev_stack, "model-health-check")
    failing = [m for m in result["models"] if not m["ok"]]
    assert f"{ns}/{name}" in [f"{m['namespace']}/{m['name']}" for m in failing]
    wanted = _incident_for({"alertname": MODEL_FINDING_ALERT, "namespace": ns, "llmdeployment": name})
    assert wanted.startswith("model-deploy-failure--")  # SOP-004, one incident per LLMDeployment
    assert wanted in [i["incident"] for i in result["incidents"] if i["action"] in ("started", "joined")]
    assert wanted in await _open_incidents(dev_stack)
