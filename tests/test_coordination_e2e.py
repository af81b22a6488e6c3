"""Coordination across incidents, end to end: the real Temporal dev server, the worker
in-process (which runs the coordinator), the simulated cluster and the Slack Web API stand-in.

- SOP-001 (the cluster's outage) and SOP-004 (one failing model) both want to roll the same
  Deployment: it is restarted once; the second incident waits for the holder, then a human decides;
  both timelines name the other incident.
- Three GPU nodes fail at once: the first cordon is the playbook's own (after its cordon-drain gate),
  the second passes the cap "1 node cordoned by automation at once" and becomes an approval gate
  that says so; rejected, that node is never touched.

The incidents start as the webhook starts them (`coordinated=True`, ids `<prefix><runbook>--<scope>`),
with short timings so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle

from activities.kube.models import RESTARTED_AT
from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.incident_queries import gate_asked, state_of, timeline_of
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.incident.coordination_models import QUERY_COORDINATOR_STATE, CoordinatorState, coordinator_workflow_id
from workflows.playbooks.gpu_nodes.models import GpuTimings, GpuUnavailableInput, cordon_gate
from workflows.playbooks.gpu_nodes.gpu_unavailable import GpuUnavailable
from workflows.playbooks.model_deploy_failure.models import DeployFailureTimings, ModelDeploymentFailureInput
from workflows.playbooks.model_deploy_failure.playbook import ModelDeploymentFailure
from workflows.incident.models import (
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    Alert,
    Decision,
    HumanAction,
)
from workflows.incident.scope import scope_incident_id
from workflows.playbooks.service_outage.models import OutageTimings, ServiceOutageInput
from workflows.playbooks.service_outage.playbook import ServiceOutage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CHANNEL = "#incidents-coordination"
NS, MODEL = "production", "mixtral-8x7b"  # simulator/scenarios.py FAILING_MODEL
DEPLOYMENT = f"Deployment {NS}/{MODEL}"  # the object both playbooks claim (workflows/incident/claims.py)


def alert(name: str, summary: str, **labels: str) -> Alert:
    return Alert(
        alertname=name,
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": name, **labels},
        annotations={"summary": summary},
    )


def incident_id(task_queue: str, runbook: str, scope: str) -> str:
    """The id the webhook gives the scope's incident (`triggers_settings(task_queue)`'s prefix)."""
    return f"{task_queue}." + scope_incident_id(runbook, scope)


async def coordinator_state(client: Client, task_queue: str) -> CoordinatorState:
    handle = client.get_workflow_handle(coordinator_workflow_id(task_queue))
    return await handle.query(QUERY_COORDINATOR_STATE, result_type=CoordinatorState)


async def decide(handle: WorkflowHandle, gate: str, approved: bool, comment: str) -> None:
    await handle.execute_update(
        UPDATE_DECIDE, Decision(gate=gate, approved=approved, by="alice", comment=comment), result_type=str
    )


async def resolve(handle: WorkflowHandle, note: str) -> str:
    await handle.execute_update(
        UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note=note), result_type=str
    )
    return await asyncio.wait_for(handle.result(), 30)


def restarts(simulator, namespace: str, name: str) -> int:
    """`kubectl rollout restart` writes of one Deployment (the restartedAt annotation)."""
    return sum(
        1
        for e in writes(simulator)
        if e.resource == "deployments"
        and e.verb == "patch"
        and (e.namespace, e.name) == (namespace, name)
        and RESTARTED_AT in str(e.body)
    )


@contextlib.asynccontextmanager
async def worker(client: Client, kube_api, slack_client, task_queue: str) -> AsyncIterator[None]:
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            yield


@contextlib.asynccontextmanager
async def explained(*handles: WorkflowHandle) -> AsyncIterator[None]:
    """A wait that times out says where each incident was (its timeline), not only that it timed out."""
    try:
        yield
    except AssertionError as err:
        lines = [f"{h.id}: {e.kind}: {e.title} -> {e.outcome}" for h in handles for e in await timeline_of(h)]
        raise AssertionError(f"{err}\n" + "\n".join(lines)) from None


def test_writes_to_a_model_claim_its_deployment() -> None:
    """SOP-001 restarts `deployment/<name>` of a failed LLMDeployment; SOP-004 patches the LLMDeployment or
    deletes its failed pods (`app=<name>`): all three claim the same object, so they meet at one hold."""
    from activities.kube.deployments_models import RestartRequest
    from activities.kube.llmdeployments_models import LLMDeploymentPatch
    from activities.kube.models import PodRef
    from activities.kube.pods_models import FailedPodsDeletion
    from workflows.incident.claims import claim_for

    restart = claim_for(
        "restart_deployment", RestartRequest(namespace=NS, name=MODEL, restarted_at="t", restarted_by="i")
    )
    patch = claim_for("patch_llm_deployment", LLMDeploymentPatch(namespace=NS, name=MODEL, spec={"replicas": 1}))
    delete = claim_for(
        "delete_failed_pods",
        FailedPodsDeletion(namespace=NS, app=MODEL, pods=[PodRef(namespace=NS, name="p", uid="u")]),
    )
    assert [(str(o), w) for o, w in (restart, patch, delete)] == [  # type: ignore[misc]
        (DEPLOYMENT, "restart"),
        (DEPLOYMENT, "patch"),
        (DEPLOYMENT, "restart"),
    ]


# ---- SOP-001 and SOP-004 on one Deployment --------------------------------------------------------


@pytest.mark.scenario("model-deploy-failure:oom")
async def test_sop_001_and_sop_004_on_one_deployment_restart_it_once_and_both_name_the_holder(
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    client: Client = temporal_dev.client
    outage_id = incident_id(task_queue, "service-outage", "cluster")
    model_id = incident_id(task_queue, "model-deploy-failure", f"{NS}/{MODEL}")
    outage = ServiceOutageInput(
        alert=alert("LLMDServiceDown", "llm-d service is down", namespace=NS),
        runbook="service-outage",
        incident_commander="alice",
        slack_channel=CHANNEL,
        namespace=NS,
        scope="cluster",
        coordinated=True,
        timings=OutageTimings(
            restart_grace_seconds=1,
            verification_timeout_seconds=5,
            verification_poll_seconds=0.5,
            health_timeout_seconds=2,
            kube_call_timeout_seconds=10,
            approval_timeout_minutes=5,
        ),
    )
    model = ModelDeploymentFailureInput(
        alert=alert(
            "LLMDeploymentNotReady", f"LLMDeployment {NS}/{MODEL} is not Ready", namespace=NS, llmdeployment=MODEL
        ),
        runbook="model-deploy-failure",
        incident_commander="alice",
        slack_channel=CHANNEL,
        namespace=NS,
        scope=f"{NS}/{MODEL}",
        coordinated=True,
        hold_wait_seconds=2,
        timings=DeployFailureTimings(
            recovery_timeout_seconds=5,
            recovery_poll_seconds=0.5,
            verification_timeout_seconds=5,
            verification_poll_seconds=0.5,
            health_timeout_seconds=2,
            kube_call_timeout_seconds=10,
            approval_timeout_minutes=5,
        ),
    )
    async with worker(client, kube_api, slack_client, task_queue):
        # Both alerts arrive together, as they would: the cluster's outage and the one model's failure.
        sop001, sop004 = await asyncio.gather(
            client.start_workflow(ServiceOutage.run, outage, id=outage_id, task_queue=task_queue),
            client.start_workflow(ModelDeploymentFailure.run, model, id=model_id, task_queue=task_queue),
        )
        # SOP-001 restarts the failed model's Deployment; SOP-004 diagnoses OOM and asks to change its resources.
        async with explained(sop001, sop004):
            await wait_for_async(lambda: restarts(simulator, NS, MODEL) == 1, "SOP-001's restart", 45)
        await gate_asked(sop004, f"reduce-resources:{MODEL}", 45)
        await decide(sop004, f"reduce-resources:{MODEL}", True, "go")
        # ... but SOP-001 holds the Deployment: SOP-004 waits (2 s here), then asks a human.
        held_gate = f"held-object:{DEPLOYMENT}"
        asked = await gate_asked(sop004, held_gate, 45)
        question = next(g.question for g in asked.pending_gates if g.gate == held_gate)
        assert outage_id in question and "service-outage" in question, question
        await decide(sop004, held_gate, False, "SOP-001 is on it; let its restart settle")
        await wait_for_async(lambda: _skipped(sop004), "SOP-004 to record the skipped patch")

        holds = (await coordinator_state(client, task_queue)).holds
        assert holds[DEPLOYMENT].incident_id == outage_id and holds[DEPLOYMENT].waiters == [model_id]

        outage_timeline, model_timeline = await timeline_of(sop001), await timeline_of(sop004)
        model_report = await resolve(sop004, "resources to be raised by hand after SOP-001")
        outage_report = await resolve(sop001, "drill over")
        model_state = await state_of(sop004)
        released = await coordinator_state(client, task_queue)

    # restarted once; SOP-004's patch never reached the cluster
    assert restarts(simulator, NS, MODEL) == 1
    assert not [e for e in writes(simulator) if e.resource == "llmdeployments"], writes(simulator)
    # both timelines name the holder: the waiter's says who holds it, the holder's who wanted it
    waiting = [e for e in model_timeline if e.title == f"waiting: {DEPLOYMENT} is held by incident {outage_id}"]
    assert len(waiting) == 1 and "still held by" in (waiting[0].outcome or ""), model_timeline
    noted = [
        e
        for e in outage_timeline
        if e.title.startswith(
            f"incident {model_id} (model-deploy-failure) wanted to patch {DEPLOYMENT}, which this incident holds"
        )
    ]
    assert len(noted) == 1, [e.title for e in outage_timeline]
    assert outage_id in model_report and model_id in outage_report
    # the human's "no" is the gate's outcome, and nothing was changed by SOP-004
    (gate,) = [g for g in model_state.approvals if g.gate == held_gate]
    assert gate.decision is not None and not gate.decision.approved and model_state.changes == []
    # at their end both incidents released what they held
    assert released.holds == {}


async def _skipped(handle: WorkflowHandle) -> bool:
    return any(e.kind == "action" and (e.outcome or "").startswith("skipped") for e in await timeline_of(handle))


# ---- three GPU nodes at once ------------------------------------------------------------------------


@pytest.mark.scenario("gpu-unavailable:driver")  # gpu-node-3: the NVIDIA driver is not loaded
async def test_three_gpu_nodes_failing_at_once_the_second_cordon_asks_for_approval(
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    simulator.inject("gpu-hardware-failure")  # gpu-node-2: a GPU with a double-bit ECC error
    with simulator.behaviour.store.lock:  # gpu-node-1 loses its driver too: all three at once
        simulator.behaviour.gpus["gpu-node-1"].driver_loaded = False
    client: Client = temporal_dev.client
    gpu_id = incident_id(task_queue, "gpu-unavailable", "cluster")
    inp = GpuUnavailableInput(
        alert=alert("LLMDGPUCapacityLost", "GPU nodes report no allocatable nvidia.com/gpu", namespace="kube-system"),
        runbook="gpu-unavailable",
        incident_commander="alice",
        slack_channel=CHANNEL,
        namespace="kube-system",
        scope="cluster",
        coordinated=True,
        timings=GpuTimings(
            plugin_rollout_timeout_seconds=20,
            rollout_poll_seconds=0.2,
            probe_timeout_seconds=20,
            test_pod_timeout_seconds=10,
            pod_poll_seconds=0.1,
            visibility_timeout_seconds=3,
            verification_timeout_seconds=3,
            verification_poll_seconds=0.5,
            drain_timeout_seconds=10,
            kube_call_timeout_seconds=10,
            approval_timeout_minutes=5,
        ),
    )
    async with worker(client, kube_api, slack_client, task_queue):
        handle = await client.start_workflow(GpuUnavailable.run, inp, id=gpu_id, task_queue=task_queue)
        # The first node: the playbook's own gate, then the cordon goes ahead (within the cap).
        await gate_asked(handle, cordon_gate("gpu-node-1"), 45)
        await decide(handle, cordon_gate("gpu-node-1"), True, "take it out")
        # The second: its own gate approved too, but a second cordon by automation passes the cap.
        await gate_asked(handle, cordon_gate("gpu-node-2"), 45)
        await decide(handle, cordon_gate("gpu-node-2"), True, "take it out")
        capped = await gate_asked(handle, "beyond-cap:Node gpu-node-2", 45)
        question = next(g.question for g in capped.pending_gates if g.gate == "beyond-cap:Node gpu-node-2")
        await decide(handle, "beyond-cap:Node gpu-node-2", False, "not with every GPU node down")
        await gate_asked(handle, cordon_gate("gpu-node-3"), 45)
        await decide(handle, cordon_gate("gpu-node-3"), True, "take it out")
        await gate_asked(handle, "beyond-cap:Node gpu-node-3", 45)
        await decide(handle, "beyond-cap:Node gpu-node-3", False, "not with every GPU node down")
        report = await resolve(handle, "hardware team on it")
        state = await state_of(handle)

    # the cap's sentence names the node already cordoned, and the cap
    assert "1 node already cordoned by automation (gpu-node-1); cap 1 without approval" in question, question
    assert "kubectl cordon gpu-node-2" in question
    # only gpu-node-1 was cordoned (and, verification failing, uncordoned by the rollback)
    patched = [
        (e.name, (e.body.get("spec") or {}).get("unschedulable"))
        for e in writes(simulator)
        if e.resource == "nodes" and e.verb == "patch"
    ]
    assert [n for n, _ in patched] and {n for n, _ in patched} == {"gpu-node-1"}, patched
    assert patched[0] == ("gpu-node-1", True)
    kinds = [(g.kind, g.target, g.decision.approved if g.decision else None) for g in state.approvals]
    assert kinds[:5] == [
        ("cordon-drain", "gpu-node-1", True),
        ("cordon-drain", "gpu-node-2", True),
        ("beyond-cap", "Node gpu-node-2", False),
        ("cordon-drain", "gpu-node-3", True),
        ("beyond-cap", "Node gpu-node-3", False),
    ], kinds
    assert "beyond-cap:Node gpu-node-2" in report
    assert not [c for c in state.changes if c.kind == "Node" and c.name != "gpu-node-1"], state.changes
