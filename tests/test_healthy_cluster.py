"""Every playbook's alert on a healthy cluster: it looks, finds nothing to act on and changes nothing.

A field failure: an LLMDGPUCapacityLost alert with 24/24 GPUs visible restarted the device plugin; a
hand-labelled `runbook=high-memory` alert restarted the top pod. Here each playbook runs on the real
dev server with the worker in-process against the simulator's healthy `baseline` cluster: the
simulator's audit log must show no write (the GPU checks' own nvidia-smi probe pods aside, each
created and deleted once), the incident records "nothing wrong found" and tells on-call in the
thread, and it is not failed: it waits for the alert to resolve or a human.

RUNBOOKS_SAVE_HISTORIES=1 saves each run as tests/histories/<playbook>_nothing_wrong_found.json, so the
replay test also guards the `act-on-findings` branch.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from tests.helpers.audit import playbook_writes, probe_pods_balanced
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import state_of, timeline_of
from standins.slack import SlackStandIn
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.playbooks.gpu_nodes.gpu_hardware_failure import GpuHardwareFailure, GpuHardwareFailureInput
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
    SIGNAL_ALERT_RESOLVED,
    UPDATE_HUMAN_ACTION,
    Alert,
    AlertResolved,
    HumanAction,
    IncidentInput,
)
from workflows.playbooks.service_outage.models import OutageTimings, ServiceOutageInput
from workflows.playbooks.service_outage.playbook import ServiceOutage
from workflows.playbooks.triage.playbook import Triage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHANNEL = "#incidents-healthy"


def alert(name: str, **labels: str) -> Alert:
    return Alert(
        alertname=name,
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": name, **labels},
        annotations={"summary": f"{name} (healthy cluster)"},
    )


def common(name: str, playbook: str, **labels: str) -> dict:
    return dict(alert=alert(name, **labels), runbook=playbook, incident_commander="alice", slack_channel=CHANNEL)


# playbook -> (workflow run method, its input on the healthy cluster)
CASES = {
    "service-outage": lambda: (
        ServiceOutage.run,
        ServiceOutageInput(
            **common("LLMDServiceDown", "service-outage", severity="critical"),
            timings=OutageTimings(kube_call_timeout_seconds=10, health_timeout_seconds=2),
        ),
    ),
    "high-memory": lambda: (
        HighMemory.run,
        HighMemoryInput(
            **common("LLMDMemoryPressure", "high-memory", runbook="high-memory"),  # an alert labelled by hand
            timings=MemoryTimings(kube_call_timeout_seconds=10),
        ),
    ),
    "gpu-unavailable": lambda: (
        GpuUnavailable.run,
        GpuUnavailableInput(
            **common("LLMDGPUCapacityLost", "gpu-unavailable", node="gpu-node-2"),
            timings=GpuTimings(probe_timeout_seconds=20, pod_poll_seconds=0.1, kube_call_timeout_seconds=10),
        ),
    ),
    "gpu-hardware-failure": lambda: (
        GpuHardwareFailure.run,
        GpuHardwareFailureInput(
            **common("LLMDGPUHardwareError", "gpu-hardware-failure", Hostname="gpu-node-2"),
            timings=GpuTimings(probe_timeout_seconds=20, pod_poll_seconds=0.1, kube_call_timeout_seconds=10),
        ),
    ),
    "model-deploy-failure": lambda: (
        ModelDeploymentFailure.run,
        ModelDeploymentFailureInput(
            **common(
                "LLMDeploymentNotReady", "model-deploy-failure", namespace="production", llmdeployment="llama-3-8b"
            ),
            namespace="production",
            timings=DeployFailureTimings(kube_call_timeout_seconds=10),
        ),
    ),
    # seed 004 on the healthy mlops-serving/mistral-7b (KServe high latency, which reads Prometheus:
    # tests/test_kserve_latency.py::test_healthy_inference_service_nothing_wrong_found)
    **{
        runbook: (
            lambda run=run, name=name, runbook=runbook: (
                run,
                KServeIncidentInput(
                    **common(name, runbook, namespace="mlops-serving", inferenceservice="mistral-7b"),
                    timings=KServeTimings(kube_call_timeout_seconds=10),
                ),
            )
        )
        for runbook, run, name in (
            ("kserve-error-rate", KServeHighErrorRate.run, "ModelServingHighErrorRate"),
            ("kserve-model-not-loading", KServeModelNotLoading.run, "ModelServingModelNotLoading"),
            ("kserve-gpu-pending", KServeGpuPending.run, "ModelServingGPUUnavailable"),
        )
    },
}


@pytest.mark.parametrize("playbook", list(CASES))
async def test_alert_on_a_healthy_cluster_changes_nothing(
    playbook: str,
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    client: Client = temporal_dev.client
    run, inp = CASES[playbook]()
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                run, inp, id=f"{playbook}-healthy-{inp.alert.fingerprint}", task_queue=task_queue
            )

            async def nothing_found() -> IncidentState | None:
                state = await state_of(handle)
                return state if state.nothing_found and state.awaiting_human else None

            state = await wait_for_async(nothing_found, f"{playbook}: nothing wrong found", timeout=90)
            # It is not resolved by itself, nor failed: it waits for the alert or a human.
            assert state.status == "open" and state.failure is None and state.changes == []
            assert state.approvals == []
            await handle.execute_update(
                UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="false alarm")
            )
            report = await handle.result()
            timeline = await timeline_of(handle)
    await save_history(handle, f"{playbook.replace('-', '_')}_nothing_wrong_found")

    assert playbook_writes(simulator) == [], f"{playbook} wrote to a healthy cluster"
    assert probe_pods_balanced(simulator)
    assert not [e for e in timeline if e.kind == "action"]
    assert any(e.title.startswith("nothing wrong found") for e in timeline)
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("Nothing wrong found" in t and inp.alert.alertname in t for t in texts), texts
    assert "false alarm" in report


async def test_triage_on_a_healthy_cluster_only_reads(
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    """Triage never acts: it pages with the namespace's pods and ends when the alert resolves."""
    client: Client = temporal_dev.client
    inp = IncidentInput(**common("LLMDSomethingOdd", "triage", namespace="production"), namespace="production")
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                Triage.run, inp, id=f"triage-healthy-{inp.alert.fingerprint}", task_queue=task_queue
            )

            async def context_posted() -> bool:
                timeline = await timeline_of(handle)
                return any(e.title.startswith("Cluster context") and e.ended_at for e in timeline)

            await wait_for_async(context_posted, "triage's cluster context", timeout=60)
            await handle.signal(SIGNAL_ALERT_RESOLVED, AlertResolved(ends_at=datetime.now(timezone.utc)))
            await handle.result()
            state = await state_of(handle)

    assert simulator.audit() == []  # not even a probe pod
    assert state.status == "resolved" and state.failure is None and state.changes == []
    assert any("0 not healthy" in m["text"] for m in slack_standin.messages(CHANNEL))
