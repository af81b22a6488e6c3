"""SOP-003 (GPU unavailable) on the dev server and the simulator's GPU faults: the input the tests start
it with, the cordon gate answered as alice would, and what they read back from the cluster."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone

from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle

from simulator.server import SimulatedCluster
from tests.helpers.audit import writes
from tests.helpers.incident_queries import gate_asked
from workflows.incident.models import UPDATE_DECIDE, Alert, Decision
from workflows.incident.state import IncidentState
from workflows.playbooks.gpu_nodes.gpu_unavailable import GpuUnavailable
from workflows.playbooks.gpu_nodes.models import GpuTimings, GpuUnavailableInput, cordon_gate

CHANNEL = "#incidents-test"
FAULTY_NODE = "gpu-node-2"  # where the gpu-hardware-failure scenario breaks a GPU
# The simulator runs 30x faster than life; these keep SOP-003 to seconds without special cases.
FAST = GpuTimings(
    plugin_rollout_timeout_seconds=20,
    rollout_poll_seconds=0.2,
    probe_timeout_seconds=20,
    test_pod_timeout_seconds=20,
    pod_poll_seconds=0.1,
    visibility_timeout_seconds=10,
    verification_timeout_seconds=15,
    verification_poll_seconds=0.3,
    drain_timeout_seconds=10,
    kube_call_timeout_seconds=10,
    approval_timeout_minutes=1,
)


def gpu_input(test_gpus: int = 1, **timings) -> GpuUnavailableInput:
    """SOP-003's input for an `LLMDGPUCapacityLost` alert firing now, with `FAST` timings and `timings` over them."""
    alert = Alert(
        alertname="LLMDGPUCapacityLost",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"severity": "high", "namespace": "kube-system"},
        annotations={"summary": "GPU nodes report no allocatable nvidia.com/gpu"},
    )
    return GpuUnavailableInput(
        alert=alert,
        runbook="gpu-unavailable",
        incident_commander="alice",
        slack_channel=CHANNEL,
        namespace="kube-system",
        test_gpus=test_gpus,
        timings=FAST.model_copy(update=timings),
    )


async def start(client: Client, inp: GpuUnavailableInput, task_queue: str) -> WorkflowHandle:
    return await client.start_workflow(
        GpuUnavailable.run, inp, id=f"gpu-unavailable-{inp.alert.fingerprint}", task_queue=task_queue
    )


async def approve_cordon(handle: WorkflowHandle, node: str) -> IncidentState:
    """Wait for the node's gate, approve it as alice would; the state while it was pending."""
    state = await gate_asked(handle, cordon_gate(node))
    await handle.execute_update(
        UPDATE_DECIDE, Decision(gate=cordon_gate(node), approved=True, by="alice", comment="move the workloads")
    )
    return state


def evictions(simulator: SimulatedCluster) -> Counter:
    """(namespace, pod) -> how many evictions of it the API accepted."""
    return Counter((e.namespace, e.name) for e in writes(simulator) if e.verb == "evict")


def workload_pods_on(kube_api: k8s.ApiClient, node: str) -> set[tuple[str, str]]:
    """(namespace, name) of the pods still running on `node`, DaemonSet pods aside."""
    pods = k8s.CoreV1Api(kube_api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    return {
        (p.metadata.namespace, p.metadata.name)
        for p in pods
        if p.status.phase not in ("Succeeded", "Failed")
        and not any(o.kind == "DaemonSet" for o in p.metadata.owner_references or [])
    }
