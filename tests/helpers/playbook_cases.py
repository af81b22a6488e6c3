"""Every playbook on its fault, as the shadow-mode and RBAC tests drive them: the scenario that stages the
fault, the workflow's run method, its input (shadow mode, short timings) and the (kind, object) it must at
least say it would change."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from temporalio.client import WorkflowHandle

from tests.helpers.incident_queries import state_of
from workflows.incident.models import Alert, IncidentInput
from workflows.incident.state import IncidentState
from workflows.playbooks.gpu_nodes.gpu_hardware_failure import GpuHardwareFailure, GpuHardwareFailureInput
from workflows.playbooks.service_down.playbook import ServiceDown
from workflows.playbooks.service_down.models import ServiceDownInput, ServiceDownTimings
from workflows.playbooks.gpu_nodes.models import GpuTimings, GpuUnavailableInput
from workflows.playbooks.gpu_nodes.gpu_unavailable import GpuUnavailable
from workflows.playbooks.high_memory.playbook import HighMemory
from workflows.playbooks.high_memory.models import HighMemoryInput, MemoryTimings
from workflows.playbooks.kserve.error_rate import KServeHighErrorRate
from workflows.playbooks.kserve.gpu_pending import KServeGpuPending
from workflows.playbooks.kserve.model_not_loading import KServeModelNotLoading
from workflows.playbooks.kserve.models import KServeIncidentInput, KServeTimings
from workflows.playbooks.model_deploy_failure.models import DeployFailureTimings, ModelDeploymentFailureInput
from workflows.playbooks.model_deploy_failure.playbook import ModelDeploymentFailure
from workflows.playbooks.service_outage.models import OutageTimings, ServiceOutageInput
from workflows.playbooks.service_outage.playbook import ServiceOutage
from workflows.playbooks.triage.playbook import Triage

CHANNEL = "#incidents-shadow"


def alert(name: str, **labels: str) -> Alert:
    return Alert(
        alertname=name,
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": name, **labels},
        annotations={"summary": f"{name} (shadow drill)"},
    )


def common(name: str, runbook: str, **labels: str) -> dict:
    return dict(
        alert=alert(name, **labels),
        runbook=runbook,
        incident_commander="alice",
        slack_channel=CHANNEL,
        mode="shadow",
        coordinated=True,
    )


# playbook -> (scenario, workflow run method, its input, the (kind, object) it must at least say it would change)
CASES: dict[str, tuple[str, Callable, Callable[[], IncidentInput], set[tuple[str, str]]]] = {
    "service-outage": (
        "service-outage",
        ServiceOutage.run,
        lambda: ServiceOutageInput(
            **common("LLMDServiceDown", "service-outage", namespace="production"),
            namespace="production",
            operator_previous_image="llm-d/operator:v0.4.0",
            timings=OutageTimings(
                operator_rollout_timeout_seconds=3,
                rollout_poll_seconds=0.25,
                restart_grace_seconds=1,
                verification_timeout_seconds=2,
                verification_poll_seconds=0.5,
                health_timeout_seconds=2,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {
            ("Deployment", "llm-d-system/llm-d-operator"),
            ("Deployment", "production/llama-3-8b"),
            ("Ingress", "default/maintenance-mode"),
        },
    ),
    "high-memory": (
        "high-memory",
        HighMemory.run,
        lambda: HighMemoryInput(
            **common("LLMDMemoryPressure", "high-memory"),
            timings=MemoryTimings(
                relief_settle_seconds=1,
                verification_timeout_seconds=2,
                verification_poll_seconds=0.5,
                oom_quiet_minutes=0.15,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {("LLMDeployment", "production/llama-3-8b")},
    ),
    "gpu-unavailable": (
        "gpu-hardware-failure",
        GpuUnavailable.run,
        lambda: GpuUnavailableInput(
            **common("LLMDGPUCapacityLost", "gpu-unavailable", namespace="kube-system"),
            namespace="kube-system",
            timings=GpuTimings(
                plugin_rollout_timeout_seconds=5,
                rollout_poll_seconds=0.2,
                probe_timeout_seconds=20,
                test_pod_timeout_seconds=10,
                pod_poll_seconds=0.1,
                visibility_timeout_seconds=3,
                verification_timeout_seconds=2,
                verification_poll_seconds=0.5,
                drain_timeout_seconds=3,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {("Node", "gpu-node-2")},
    ),
    "service-down": (
        "service-down:bad-rollout",
        ServiceDown.run,
        lambda: ServiceDownInput(
            **common("LLMModelNotResponding", "service-down", namespace="production", service="llm-d-decode"),
            timings=ServiceDownTimings(
                rollout_timeout_seconds=2,
                rollout_poll_seconds=0.5,
                validation_timeout_seconds=2,
                validation_poll_seconds=0.5,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {("Deployment", "production/llm-d-decode")},
    ),
    "gpu-hardware-failure": (
        "gpu-hardware-failure",
        GpuHardwareFailure.run,
        lambda: GpuHardwareFailureInput(
            **common("LLMDGPUHardwareError", "gpu-hardware-failure", Hostname="gpu-node-2"),
            timings=GpuTimings(
                probe_timeout_seconds=20,
                pod_poll_seconds=0.1,
                drain_timeout_seconds=3,
                verification_timeout_seconds=2,
                verification_poll_seconds=0.5,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {("Node", "gpu-node-2")},
    ),
    "model-deploy-failure": (
        "model-deploy-failure:oom",
        ModelDeploymentFailure.run,
        lambda: ModelDeploymentFailureInput(
            **common(
                "LLMDeploymentNotReady", "model-deploy-failure", namespace="production", llmdeployment="mixtral-8x7b"
            ),
            namespace="production",
            timings=DeployFailureTimings(
                recovery_timeout_seconds=2,
                recovery_poll_seconds=0.5,
                verification_timeout_seconds=2,
                verification_poll_seconds=0.5,
                health_timeout_seconds=2,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {("LLMDeployment", "production/mixtral-8x7b")},
    ),
    # seed 004 (KServe high latency reads Prometheus: tests/test_kserve_latency.py has its shadow run)
    "kserve-error-rate": (
        "canary-rollback",
        KServeHighErrorRate.run,
        lambda: KServeIncidentInput(
            **common(
                "ModelServingHighErrorRate",
                "kserve-error-rate",
                namespace="mlops-serving",
                inferenceservice="mistral-7b",
            ),
            timings=KServeTimings(
                verification_timeout_seconds=2,
                verification_poll_seconds=0.5,
                kube_call_timeout_seconds=10,
                approval_timeout_minutes=1,
            ),
        ),
        {("InferenceService", "mlops-serving/mistral-7b")},
    ),
    # the KServe diagnoses and triage only tell on-call: in shadow mode as in act mode, they write nothing
    "kserve-model-not-loading": (
        "model-not-loading:access-denied",
        KServeModelNotLoading.run,
        lambda: KServeIncidentInput(
            **common(
                "ModelServingModelNotLoading",
                "kserve-model-not-loading",
                namespace="mlops-serving",
                inferenceservice="mistral-7b-v2",
            ),
            timings=KServeTimings(kube_call_timeout_seconds=10),
        ),
        set(),
    ),
    "kserve-gpu-pending": (
        "kserve-gpu-pending",
        KServeGpuPending.run,
        lambda: KServeIncidentInput(
            **common(
                "ModelServingGPUUnavailable",
                "kserve-gpu-pending",
                namespace="mlops-serving",
                inferenceservice="llama-3-8b",
            ),
            timings=KServeTimings(kube_call_timeout_seconds=10),
        ),
        set(),
    ),
    "triage": (
        "baseline",
        Triage.run,
        lambda: IncidentInput(**common("KubePodCrashLooping", "triage", namespace="production")),
        set(),
    ),
}


async def automation_done(handle: WorkflowHandle) -> IncidentState | None:
    """The state once the playbook has done all it will on its own: resolved, failed, waiting for a human, or
    (triage) waiting for the alert to resolve once on-call is told; None before."""
    state = await state_of(handle)
    waiting = state.current_step == "Wait for the alert to resolve"  # triage, once on-call is told
    return state if state.awaiting_human or waiting or state.status in ("resolved", "failed") else None
