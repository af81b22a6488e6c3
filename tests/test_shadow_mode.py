"""Shadow mode end to end (issue 8): every playbook drilled on its fault with `mode="shadow"`.

The real Temporal dev server, the worker in-process, the simulated cluster in each playbook's fault
and the Slack Web API stand-in; every gate is approved as `runbooks drill --auto-approve` does, so
each playbook goes as far as it would. The simulator's audit log must hold only server-side dry
runs (`dryRun=All`), the fault must still be there, and the report must say "Shadow mode" and list
each would-have change in its Actions table. The GPU checks' own nvidia-smi probe and test pods are
reads, not remediation: they run in shadow mode too and are created and deleted once each.

`runbooks drill X --shadow` is checked the same way: the drill's alert carries
`runbooks_shadow="true"`, which the webhook honours whatever the configuration says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle

from tests.fixtures_alertmanager import triggers_settings
from tests.audit import playbook_writes, probe_pods_balanced
from standins.slack import SlackStandIn
from tests.waiting import wait_for_async
from cli.main import build_parser
from cli.drill import SHADOW_LABEL, drill_alert, run_drill
from cli.settings import DEV_STATE
from worker.worker import build_worker
from workflows.playbooks.gpu_nodes.gpu_hardware_failure import GpuHardwareFailure, GpuHardwareFailureInput
from workflows.playbooks.service_down.playbook import ServiceDown
from workflows.playbooks.service_down.models import ServiceDownInput, ServiceDownTimings
from workflows.playbooks.gpu_nodes.models import GpuTimings, GpuUnavailableInput
from workflows.playbooks.gpu_nodes.gpu_unavailable import GpuUnavailable
from workflows.playbooks.high_memory.playbook import HighMemory
from workflows.playbooks.high_memory.models import HighMemoryInput, MemoryTimings
from workflows.incident.state import IncidentState
from workflows.playbooks.kserve.error_rate import KServeHighErrorRate
from workflows.playbooks.kserve.gpu_pending import KServeGpuPending
from workflows.playbooks.kserve.model_not_loading import KServeModelNotLoading
from workflows.playbooks.kserve.models import KServeIncidentInput, KServeTimings
from workflows.playbooks.model_deploy_failure.models import DeployFailureTimings, ModelDeploymentFailureInput
from workflows.playbooks.model_deploy_failure.playbook import ModelDeploymentFailure
from workflows.incident.models import (
    QUERY_STATE,
    QUERY_TIMELINE,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    Alert,
    Decision,
    HumanAction,
    IncidentInput,
)
from workflows.playbooks.service_outage.models import OutageTimings, ServiceOutageInput
from workflows.playbooks.service_outage.playbook import ServiceOutage
from workflows.incident.timeline import TimelineEntry
from workflows.playbooks.triage.playbook import Triage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CHANNEL = "#incidents-shadow"


def alert(name: str, **labels: str) -> Alert:
    return Alert(alertname=name, fingerprint=uuid.uuid4().hex[:16], starts_at=datetime.now(timezone.utc),
                 labels={"alertname": name, **labels}, annotations={"summary": f"{name} (shadow drill)"})


def common(name: str, runbook: str, **labels: str) -> dict:
    return dict(alert=alert(name, **labels), runbook=runbook, incident_commander="alice", slack_channel=CHANNEL,
                mode="shadow", coordinated=True)


# playbook -> (scenario, workflow run method, its input, the (kind, object) it must at least say it would change)
CASES: dict[str, tuple[str, Callable, Callable[[], IncidentInput], set[tuple[str, str]]]] = {
    "service-outage": ("service-outage", ServiceOutage.run, lambda: ServiceOutageInput(
        **common("LLMDServiceDown", "service-outage", namespace="production"), namespace="production",
        operator_previous_image="llm-d/operator:v0.4.0",
        timings=OutageTimings(operator_rollout_timeout_seconds=3, rollout_poll_seconds=0.25, restart_grace_seconds=1,
                              verification_timeout_seconds=2, verification_poll_seconds=0.5, health_timeout_seconds=2,
                              kube_call_timeout_seconds=10, approval_timeout_minutes=1)),
        {("Deployment", "llm-d-system/llm-d-operator"), ("Deployment", "production/llama-3-8b"),
         ("Ingress", "default/maintenance-mode")}),
    "high-memory": ("high-memory", HighMemory.run, lambda: HighMemoryInput(
        **common("LLMDMemoryPressure", "high-memory"),
        timings=MemoryTimings(relief_settle_seconds=1, verification_timeout_seconds=2, verification_poll_seconds=0.5,
                              oom_quiet_minutes=0.15, kube_call_timeout_seconds=10, approval_timeout_minutes=1)),
        {("LLMDeployment", "production/llama-3-8b")}),
    "gpu-unavailable": ("gpu-hardware-failure", GpuUnavailable.run, lambda: GpuUnavailableInput(
        **common("LLMDGPUCapacityLost", "gpu-unavailable", namespace="kube-system"), namespace="kube-system",
        timings=GpuTimings(plugin_rollout_timeout_seconds=5, rollout_poll_seconds=0.2, probe_timeout_seconds=20,
                           test_pod_timeout_seconds=10, pod_poll_seconds=0.1, visibility_timeout_seconds=3,
                           verification_timeout_seconds=2, verification_poll_seconds=0.5, drain_timeout_seconds=3,
                           kube_call_timeout_seconds=10, approval_timeout_minutes=1)),
        {("Node", "gpu-node-2")}),
    "service-down": ("service-down:bad-rollout", ServiceDown.run, lambda: ServiceDownInput(
        **common("LLMModelNotResponding", "service-down", namespace="production", service="llm-d-decode"),
        timings=ServiceDownTimings(rollout_timeout_seconds=2, rollout_poll_seconds=0.5, validation_timeout_seconds=2,
                                   validation_poll_seconds=0.5, kube_call_timeout_seconds=10, approval_timeout_minutes=1)),
        {("Deployment", "production/llm-d-decode")}),
    "gpu-hardware-failure": ("gpu-hardware-failure", GpuHardwareFailure.run, lambda: GpuHardwareFailureInput(
        **common("LLMDGPUHardwareError", "gpu-hardware-failure", Hostname="gpu-node-2"),
        timings=GpuTimings(probe_timeout_seconds=20, pod_poll_seconds=0.1, drain_timeout_seconds=3,
                           verification_timeout_seconds=2, verification_poll_seconds=0.5, kube_call_timeout_seconds=10,
                           approval_timeout_minutes=1)),
        {("Node", "gpu-node-2")}),
    "model-deploy-failure": ("model-deploy-failure:oom", ModelDeploymentFailure.run, lambda: ModelDeploymentFailureInput(
        **common("LLMDeploymentNotReady", "model-deploy-failure", namespace="production", llmdeployment="mixtral-8x7b"),
        namespace="production",
        timings=DeployFailureTimings(recovery_timeout_seconds=2, recovery_poll_seconds=0.5, verification_timeout_seconds=2,
                                     verification_poll_seconds=0.5, health_timeout_seconds=2, kube_call_timeout_seconds=10,
                                     approval_timeout_minutes=1)),
        {("LLMDeployment", "production/mixtral-8x7b")}),
    # seed 004 (KServe high latency reads Prometheus: tests/test_kserve_latency.py has its shadow run)
    "kserve-error-rate": ("canary-rollback", KServeHighErrorRate.run, lambda: KServeIncidentInput(
        **common("ModelServingHighErrorRate", "kserve-error-rate", namespace="mlops-serving", inferenceservice="mistral-7b"),
        timings=KServeTimings(verification_timeout_seconds=2, verification_poll_seconds=0.5, kube_call_timeout_seconds=10,
                              approval_timeout_minutes=1)),
        {("InferenceService", "mlops-serving/mistral-7b")}),
    # the KServe diagnoses and triage only tell on-call: in shadow mode as in act mode, they write nothing
    "kserve-model-not-loading": ("model-not-loading:access-denied", KServeModelNotLoading.run, lambda: KServeIncidentInput(
        **common("ModelServingModelNotLoading", "kserve-model-not-loading", namespace="mlops-serving",
                 inferenceservice="mistral-7b-v2"), timings=KServeTimings(kube_call_timeout_seconds=10)), set()),
    "kserve-gpu-pending": ("kserve-gpu-pending", KServeGpuPending.run, lambda: KServeIncidentInput(
        **common("ModelServingGPUUnavailable", "kserve-gpu-pending", namespace="mlops-serving",
                 inferenceservice="llama-3-8b"), timings=KServeTimings(kube_call_timeout_seconds=10)), set()),
    "triage": ("baseline", Triage.run, lambda: IncidentInput(**common("KubePodCrashLooping", "triage", namespace="production")),
               set()),
}


async def state_of(handle: WorkflowHandle) -> IncidentState:
    return await handle.query(QUERY_STATE, result_type=IncidentState)


@contextlib.asynccontextmanager
async def approving_everything(handle: WorkflowHandle) -> AsyncIterator[list[str]]:
    """Approves each gate as it is asked (as `runbooks drill --auto-approve`), so the playbook goes all the way."""
    decided: list[str] = []

    async def loop() -> None:
        while True:
            with contextlib.suppress(Exception):
                for gate in (await state_of(handle)).pending_gates:
                    await handle.execute_update(UPDATE_DECIDE, Decision(gate=gate.gate, approved=True, by="alice"),
                                                result_type=str)
                    decided.append(gate.gate)
            await asyncio.sleep(0.2)

    task = asyncio.create_task(loop())
    try:
        yield decided
    finally:
        task.cancel()


async def automation_done(handle: WorkflowHandle) -> IncidentState | None:
    state = await state_of(handle)
    waiting = state.current_step == "Wait for the alert to resolve"  # triage, once on-call is told
    return state if state.awaiting_human or waiting or state.status in ("resolved", "failed") else None


def obj(change) -> str:
    return f"{change.kind} {change.namespace + '/' if change.namespace else ''}{change.name}"


@pytest.mark.parametrize("playbook", [pytest.param(p, marks=pytest.mark.scenario(c[0])) for p, c in CASES.items()])
async def test_every_playbook_in_shadow_mode_writes_only_dry_runs_and_reports_what_would_have_changed(
    playbook: str, temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn,
    slack_client,
):
    scenario, run, make_input, expected = CASES[playbook]
    client: Client = temporal_dev.client
    inp = make_input()
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(run, inp, id=f"{task_queue}.{playbook}--shadow", task_queue=task_queue)
            async with approving_everything(handle) as decided:
                done = await wait_for_async(lambda: automation_done(handle), f"{playbook} to do all it would", 60)
            assert isinstance(done, IncidentState) and done.failure is None, done
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="shadow drill over"),
                                        result_type=str)
            report = await asyncio.wait_for(handle.result(), 30)
            state = await state_of(handle)
            timeline = await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])

    writes = playbook_writes(simulator)
    # the audit log holds only dry-run writes: nothing the playbook sent changed the cluster
    assert [(e.verb, e.resource, e.name) for e in writes if not e.dry_run] == []
    assert probe_pods_balanced(simulator)
    if scenario != "baseline":
        assert scenario in simulator.behaviour.active_faults(), "the fault healed: something was written"
    assert "**Shadow mode**" in report and state.mode == "shadow"
    if not expected:  # a playbook that only tells on-call
        assert writes == [] and state.changes == []
        return
    # ... and it did try: each would-have change is a dry run the API server validated
    assert writes and state.changes, f"{playbook} found nothing to do in shadow mode ({decided})"
    assert all(c.dry_run for c in state.changes)
    dry_run_names = {e.name or ((e.body or {}).get("metadata") or {}).get("name") for e in writes}
    assert {c.name for c in state.changes} <= dry_run_names, (state.changes, writes)
    assert expected <= {(c.kind, f"{c.namespace}/{c.name}" if c.namespace else c.name) for c in state.changes}
    # the report's Actions table lists every would-have change, each marked "dry run"
    actions = report.split("## Actions", 1)[1].split("## Approvals", 1)[0]
    rows = [line for line in actions.splitlines() if line.startswith("| ") and "dry run" in line]
    assert len(rows) == len(state.changes), actions
    for change, row in zip(state.changes, rows):
        assert obj(change) in row and change.action in row, (change, row)
    would_have = [e for e in timeline if e.kind == "action" and e.title.startswith("would have: ")]
    assert len(would_have) >= len(state.changes)


# ---- `runbooks drill X --shadow` ---------------------------------------------------------------------


def test_drill_help_offers_shadow_and_the_alert_carries_the_label():
    parser = build_parser()
    drill = parser._subparsers._group_actions[0].choices["drill"]  # type: ignore[union-attr]
    assert "--shadow" in drill.format_help() and "dry run" in drill.format_help()
    assert parser.parse_args(["drill", "service-outage", "--shadow"]).shadow is True
    now = datetime.now(timezone.utc)
    assert drill_alert("service-outage", now=now, shadow=True)["labels"][SHADOW_LABEL] == "true"
    assert SHADOW_LABEL not in drill_alert("service-outage", now=now)["labels"]


async def test_drill_shadow_on_the_simulator_changes_nothing_and_prints_the_would_have_report(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    """`runbooks drill model-deploy-failure:oom --shadow --wait --auto-approve`, in-process against the
    test's dev server, worker and simulator (the dev stack's state file points the drill at them)."""
    client: Client = temporal_dev.client
    home = tmp_path / "home"
    home.mkdir()
    (home / DEV_STATE).write_text(json.dumps({
        "temporal": client.service_client.config.target_host, "kubeconfig": str(simulator.kubeconfig_path),
        "time_scale": 30}))
    # `mode: act` in the configuration: the drill's label alone puts the incident in shadow mode. Anyone
    # may approve (as on `runbooks dev`), so --auto-approve's "drill" answers every gate.
    settings = triggers_settings(task_queue, drills={"enabled": True}, approvers={"default": []})
    assert settings.mode == "act"
    args = argparse.Namespace(scenario="model-deploy-failure:oom", home=home, temporal=None, wait=True,
                              auto_approve=True, timeout=75.0, shadow=True, no_reset=True)
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            code = await run_drill(settings, args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "shadow mode: every write is a server-side dry run" in out
    assert "would have been made" in out and "**Shadow mode**" in out
    actions = out.split("## Actions", 1)[1].split("## Approvals", 1)[0]
    assert any("LLMDeployment production/mixtral-8x7b" in row and "dry run" in row for row in actions.splitlines()), actions
    writes = playbook_writes(simulator)
    assert writes and all(e.dry_run for e in writes), [(e.verb, e.resource, e.name, e.dry_run) for e in writes]
    assert "model-deploy-failure:oom" in simulator.behaviour.active_faults()
