"""Seed 002's GPU hardware failure playbook end to end: the real Temporal dev server, the worker in
process, the simulated cluster with a double-bit ECC error (XID 48) on gpu-node-2, the Slack stand-in.

What must hold: alerts about one node are one incident (scope = the node); the findings (kernel XID,
nvidia-smi) name the fault next to the cordon; nothing is written before a human approves; the node
is cordoned and drained once, each workload pod evicted once, the models come back elsewhere; a
rollback uncordons exactly what it cordoned; a healthy node gets no write at all.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle

from standins.slack import SlackStandIn
from tests.helpers.audit import playbook_writes, writes
from tests.helpers.incident_queries import gate_asked, state_of, step_done, timeline_of
from tests.helpers.waiting import wait_for, wait_for_async
from settings.routes import default_routes
from worker.worker import build_worker
from workflows.playbooks.gpu_nodes.gpu_hardware_failure import GpuHardwareFailure, GpuHardwareFailureInput
from workflows.playbooks.gpu_nodes.models import GpuTimings, cordon_gate
from workflows.incident.state import IncidentState
from workflows.incident.models import SIGNAL_ROLLBACK, UPDATE_DECIDE, Alert, Decision, RollbackRequest
from workflows.incident.scope import scope_incident_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHANNEL = "#incidents-test"
HISTORIES = Path(__file__).parent / "histories"
FAULTY = "gpu-node-2"  # where the gpu-hardware-failure scenario breaks a GPU
STEPS = ["Find the node", "1. Describe the node", "2. Check GPU health", "3. Cordon and drain", "Verification"]
FAST = GpuTimings(
    probe_timeout_seconds=20,
    test_pod_timeout_seconds=20,
    pod_poll_seconds=0.1,
    verification_timeout_seconds=20,
    verification_poll_seconds=0.3,
    drain_timeout_seconds=15,
    kube_call_timeout_seconds=10,
    approval_timeout_minutes=1,
)


def hw_input(node: str = FAULTY, labels: dict[str, str] | None = None) -> GpuHardwareFailureInput:
    # As DCGM's XID rule labels it outside Kubernetes: the node is `Hostname`.
    alert = Alert(
        alertname="LLMDGPUHardwareError",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels=labels or {"severity": "high", "Hostname": node, "gpu": "0"},
        annotations={"summary": f"GPU 0 on {node} reported XID 48"},
    )
    return GpuHardwareFailureInput(
        alert=alert, runbook="gpu-hardware-failure", incident_commander="alice", slack_channel=CHANNEL, timings=FAST
    )


async def start(client: Client, inp: GpuHardwareFailureInput, task_queue: str) -> WorkflowHandle:
    return await client.start_workflow(
        GpuHardwareFailure.run, inp, task_queue=task_queue, id=f"gpu-hardware-failure-{inp.alert.fingerprint}"
    )


def test_alerts_of_one_node_are_one_incident_and_route_here():
    routes = default_routes()
    route = routes["LLMDGPUHardwareError"]
    assert route.runbook == "gpu-hardware-failure" and route.severity == "P1"
    from workflows.playbooks.catalog import playbook

    scope = playbook("gpu-hardware-failure").scope
    # two GPUs of one node (DCGM labels each GPU) -> one scope; another node -> another incident
    a = scope.of({"Hostname": FAULTY, "gpu": "0"}, group_key=None, fingerprint="a")
    b = scope.of({"Hostname": FAULTY, "gpu": "3"}, group_key=None, fingerprint="b")
    c = scope.of({"Hostname": "gpu-node-1", "gpu": "0"}, group_key=None, fingerprint="c")
    assert a.key == b.key != c.key
    assert scope_incident_id("gpu-hardware-failure", a.key) == "gpu-hardware-failure--node.gpu-node-2"


@pytest.mark.scenario("gpu-hardware-failure")
async def test_faulty_gpu_node_is_cordoned_and_drained_after_approval_then_rolled_back_on_request(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, hw_input(), task_queue)
            asked = await gate_asked(handle, cordon_gate(FAULTY))
            assert playbook_writes(simulator) == [], "nothing written before the approval"
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=cordon_gate(FAULTY), approved=True, by="alice"))
            await handle.result()
            state = await state_of(handle)
            timeline = await timeline_of(handle)
            if os.environ.get("RUNBOOKS_SAVE_HISTORIES"):
                (HISTORIES / "gpu_hardware_failure_cordon_drain.json").write_text(
                    (await handle.fetch_history()).to_json()
                )

    # the findings: the kernel's XID 48 and nvidia-smi's ECC error, named in the question and beside the writes
    (gate,) = asked.pending_gates
    assert "XID 48 (double-bit ECC error)" in gate.question and "ECC" in gate.question
    assert [e.title for e in timeline if e.kind == "step"] == STEPS
    assert state.status == "resolved" and state.resolved_by == "automation"
    assert "awaiting repair" in state.resolution
    assert state.changes and all("XID 48" in c.finding for c in state.changes)

    # healed: cordoned once, each workload pod evicted once, the models Ready on the other nodes
    assert simulator.behaviour.active_faults() == []
    assert k8s.CoreV1Api(kube_api).read_node(FAULTY).spec.unschedulable is True
    cordons = [e for e in writes(simulator) if e.resource == "nodes" and e.verb == "patch"]
    assert [(e.name, e.body["spec"]["unschedulable"]) for e in cordons] == [(FAULTY, True)]
    evicted = Counter((e.namespace, e.name) for e in writes(simulator) if e.verb == "evict")
    assert evicted and set(evicted.values()) == {1}
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("kubectl describe node gpu-node-2" in t and "Xid" in t for t in texts)
    assert any("Human only" in t and FAULTY in t for t in texts), "repair handed to a human"


@pytest.mark.scenario("gpu-hardware-failure")
async def test_rollback_on_request_uncordons_exactly_what_it_cordoned(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, hw_input(), task_queue)
            await gate_asked(handle, cordon_gate(FAULTY))
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=cordon_gate(FAULTY), approved=True, by="alice"))
            # asked for at once: the cordon goes ahead (approved), the drain and verification stop short
            await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="repair done, testing"))

            state = await step_done(handle, "Rollback")
            await handle.terminate("test over")

    cordons = [
        (e.name, e.body["spec"]["unschedulable"])
        for e in writes(simulator)
        if e.resource == "nodes" and e.verb == "patch"
    ]
    # uncordoned back to what it was: spec.unschedulable unset, as recorded before the cordon
    assert cordons == [(FAULTY, True), (FAULTY, None)], "cordoned once, uncordoned once"
    assert not k8s.CoreV1Api(kube_api).read_node(FAULTY).spec.unschedulable
    cordon, uncordon = [c for c in state.changes if c.kind == "Node"]
    assert (cordon.before, cordon.after) == (uncordon.after, uncordon.before), "restored to the recorded value"
    assert "rollback requested" in uncordon.finding


@pytest.mark.scenario("baseline")
async def test_healthy_node_gets_no_write(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, hw_input("gpu-node-1"), task_queue)

            async def found_nothing() -> IncidentState | None:
                state = await state_of(handle)
                return state if state.nothing_found else None

            state = await wait_for_async(found_nothing, "nothing wrong found")
            await handle.terminate("test over")
    assert "nvidia-smi healthy" in state.nothing_found
    assert playbook_writes(simulator) == [] and state.changes == []


def dcgm_exporter_on(kube_api: k8s.ApiClient, node: str) -> k8s.V1Pod:
    """A DCGM exporter pod on `node`, as the GPU operator's DaemonSet runs one (not hostNetwork)."""
    core = k8s.CoreV1Api(kube_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="gpu-operator")))
    core.create_namespaced_pod(
        "gpu-operator",
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="nvidia-dcgm-exporter-7x9kd", labels={"app": "nvidia-dcgm-exporter"}),
            spec=k8s.V1PodSpec(
                node_name=node,
                containers=[
                    k8s.V1Container(name="nvidia-dcgm-exporter", image="nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5")
                ],
            ),
        ),
    )

    def running() -> k8s.V1Pod | None:
        pod = core.read_namespaced_pod("nvidia-dcgm-exporter-7x9kd", "gpu-operator")
        return pod if pod.status and pod.status.pod_ip else None

    return wait_for(running, "the exporter pod's IP")


@pytest.mark.scenario("gpu-hardware-failure")
@pytest.mark.parametrize("named_by", ["Hostname", "instance"])
async def test_dcgm_exporter_labels_in_kubernetes_find_the_node_its_pod_runs_on(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client, named_by: str
):
    exporter = dcgm_exporter_on(kube_api, FAULTY)
    # DCGM exporter in Kubernetes: Hostname is its pod's name, instance its pod's IP; no node label
    dcgm = {
        "severity": "high",
        "gpu": "3",
        "UUID": "GPU-5c8e3f0a-1d2b-4c6e-9f7a-2b3c4d5e6f70",
        "modelName": "NVIDIA H100 80GB HBM3",
        "pod": "llama-3-70b-0",
        "namespace": "production",
    }
    dcgm |= (
        {"Hostname": exporter.metadata.name}
        if named_by == "Hostname"
        else {"instance": f"{exporter.status.pod_ip}:9400"}
    )
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, hw_input(labels=dcgm), task_queue)
            asked = await gate_asked(handle, cordon_gate(FAULTY))
            timeline = await timeline_of(handle)
            await handle.terminate("test over")

    assert asked.pending_gates and "XID 48" in asked.pending_gates[0].question
    (found,) = [e for e in timeline if e.title == "Find the node"]
    assert found.outcome.startswith(
        f"{FAULTY}, from label {named_by}="
    ) and "gpu-operator/nvidia-dcgm-exporter-7x9kd" in (found.outcome), found.outcome
