"""Seed 004's KServe incidents end to end: the real Temporal dev server, the worker in-process, the
simulated cluster with InferenceServices (simulator/kserve.py) and the Slack Web API stand-in.
Each playbook heals the InferenceService or ends with a human and the diagnosis; each write is once
in the simulator's audit log with its before/after."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from kubernetes import client as k8s

import simulator.scenarios  # noqa: F401 - registers the KServe faults (scenarios_kserve) first
from simulator.scenarios_kserve import KV_CACHE_ERROR
from tests.helpers.audit import writes
from tests.helpers.incident_queries import answering_gates, settled
from tests.helpers.kserve import CHANNEL, ISVC, kserve_input
from tests.helpers.waiting import wait_for
from worker.worker import build_worker
from workflows.playbooks.kserve.error_rate import KServeHighErrorRate
from workflows.playbooks.kserve.gpu_pending import KServeGpuPending
from workflows.playbooks.kserve.model_not_loading import KServeModelNotLoading

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


async def run_incident(temporal_dev, kube_api, slack_client, task_queue, run, inp, *, approve: bool | None = None):
    decided: list[str] = []
    client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                run, inp, id=f"{inp.runbook}-{inp.alert.fingerprint}", task_queue=task_queue
            )
            answering = (
                asyncio.create_task(answering_gates(handle, bool(approve), decided, via="slack"))
                if approve is not None
                else None
            )
            try:
                state = await settled(handle, 100)
            finally:
                if answering:
                    answering.cancel()
            if state.status != "resolved":
                await handle.terminate("test over")
    return state, decided


@pytest.mark.scenario("canary-rollback")
async def test_canary_rollback_after_approval_heals_and_records_both_patches(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    slack_standin,
    slack_client,
):
    state, decided = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeHighErrorRate.run,
        kserve_input("ModelServingHighErrorRate", "kserve-error-rate", "mistral-7b"),
        approve=True,
    )
    assert decided == ["canary-rollback:mistral-7b"]
    assert state.status == "resolved" and state.resolved_by == "automation", state
    assert simulator.behaviour.active_faults() == []
    isvc = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(*ISVC, "mistral-7b")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://llm-mlops-models/mistral-7b/v1"
    assert [(e.verb, e.resource, e.name) for e in writes(simulator)] == [
        ("patch", "inferenceservices", "mistral-7b"),
        ("patch", "inferenceservices", "mistral-7b"),
    ]
    assert [(c.field, c.before, c.after) for c in state.changes] == [
        ("spec.predictor.canaryTrafficPercent", 20, 0),
        (
            "spec.predictor.model.storageUri",
            "s3://llm-mlops-models/mistral-7b/v3",
            "s3://llm-mlops-models/mistral-7b/v1",
        ),
    ]
    assert all(c.finding and "canary revision mistral-7b-predictor-00002" in c.finding for c in state.changes)


@pytest.mark.scenario("canary-rollback")
async def test_canary_rollback_rejected_changes_nothing(
    temporal_dev, task_queue, simulator, kube_api, slack_standin, slack_client
):
    state, decided = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeHighErrorRate.run,
        kserve_input("ModelServingHighErrorRate", "kserve-error-rate", "mistral-7b"),
        approve=False,
    )
    assert decided == ["canary-rollback:mistral-7b"] and state.changes == [] and writes(simulator) == []
    assert simulator.behaviour.active_faults() == ["canary-rollback"]


@pytest.mark.scenario("high-error-rate")
async def test_transient_errors_restart_the_predictor_once_and_heal(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    slack_standin,
    slack_client,
):
    state, _ = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeHighErrorRate.run,
        kserve_input("ModelServingHighErrorRate", "kserve-error-rate", "mistral-7b"),
    )
    assert state.status == "resolved", state
    assert simulator.behaviour.active_faults() == []
    assert [(e.verb, e.resource, e.name) for e in writes(simulator)] == [
        ("patch", "deployments", "mistral-7b-predictor")
    ]
    [change] = state.changes
    assert change.action == "restart deployment" and change.before is None and change.after
    assert "transient" in (change.finding or "")


@pytest.mark.parametrize(
    "cause,expected",
    [
        pytest.param(c, e, marks=pytest.mark.scenario(f"model-not-loading:{c}"))
        for c, e in (("access-denied", "AccessDenied"), ("not-found", "No model found"))
    ],
)
async def test_model_not_loading_escalates_with_the_diagnosis_and_writes_nothing(
    cause,
    expected,
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    slack_standin,
    slack_client,
):
    await asyncio.sleep(3)  # the storage-initializer fails once or twice
    state, _ = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeModelNotLoading.run,
        kserve_input("ModelServingModelNotLoading", "kserve-model-not-loading", "mistral-7b-v2"),
    )
    assert state.awaiting_human and state.status != "resolved" and state.escalation_level >= 1, state
    assert state.changes == [] and writes(simulator) == []
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    assert f"{cause}" in posted and expected in posted and "s3 ls s3://llm-mlops-models/mistral-7b/" in posted


@pytest.mark.scenario("kserve-gpu-pending")
async def test_gpu_pending_names_hoarders_taint_and_the_eksctl_command(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    slack_standin,
    slack_client,
):
    await asyncio.sleep(3)
    state, _ = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeGpuPending.run,
        kserve_input("ModelServingGPUUnavailable", "kserve-gpu-pending", "llama-3-8b"),
    )
    assert state.awaiting_human and state.changes == [] and writes(simulator) == []
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    assert "research/jupyter-gpu-gpu-node-" in posted and "dedicated=training:NoSchedule" in posted
    assert "eksctl scale nodegroup --cluster llm-mlops-dev --name gpu-inference --nodes 4" in posted


@pytest.mark.scenario("kserve-gpu-pending")
async def test_gpu_pending_counts_no_gpu_of_a_notready_node_and_offers_no_lifecycle_taint(
    temporal_dev, task_queue, simulator, kube_api, slack_standin, slack_client
):
    await asyncio.sleep(3)
    simulator.behaviour.node_unreachable("gpu-node-3")  # the node whose GPUs are free (behind its taint)
    state, _ = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeGpuPending.run,
        kserve_input("ModelServingGPUUnavailable", "kserve-gpu-pending", "llama-3-8b"),
    )
    assert state.changes == [] and writes(simulator) == []
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    lines = posted.splitlines()
    assert any("gpu-node-3 Ready Unknown" in line and "not free" in line for line in lines), posted
    taint_lines = [line for line in lines if line.startswith("• taint:")]
    assert taint_lines and not [line for line in taint_lines if "node.kubernetes.io/" in line], (
        "never offered for removal"
    )
    hoarders = [line for line in lines if line.startswith("• hoarder:")]
    assert hoarders and not [line for line in hoarders if "mlops-serving/llama-3-8b" in line or "no node" in line]
    # none of gpu-node-3's GPUs counts: one whole node more than the three there are
    assert "eksctl scale nodegroup --cluster llm-mlops-dev --name gpu-inference --nodes 4" in posted


@pytest.mark.scenario("model-not-loading:kv-cache")
async def test_a_crash_looping_model_server_is_diagnosed_from_its_own_error_not_sent_to_s3(
    temporal_dev, task_queue, simulator, kube_api, slack_standin, slack_client
):
    def failed_to_load():
        isvc = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", "mlops-serving", "inferenceservices", "mistral-7b-v2"
        )
        return (isvc.get("status") or {}).get("modelStatus", {}).get("lastFailureInfo") and isvc

    isvc = wait_for(failed_to_load, "KServe's lastFailureInfo", timeout=60)
    model, ready = isvc["status"]["modelStatus"], next(c for c in isvc["status"]["conditions"] if c["type"] == "Ready")
    # as KServe writes it: the model server's words in modelStatus, the Deployment's in the Ready condition
    assert model["states"]["targetModelState"] == "FailedToLoad" and model["transitionStatus"] == "BlockedByFailedLoad"
    assert (
        model["lastFailureInfo"]["reason"] == "ModelLoadFailed"
        and KV_CACHE_ERROR in model["lastFailureInfo"]["message"]
    )
    assert ready["status"] == "False" and "KV cache" not in ready.get("message", "")

    state, _ = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeModelNotLoading.run,
        kserve_input("ModelServingModelNotLoading", "kserve-model-not-loading", "mistral-7b-v2"),
    )
    assert state.awaiting_human and state.escalation_level >= 1 and state.changes == [] and writes(simulator) == []
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    assert "kv-cache" in posted and "max seq len (32768)" in posted and "--max-model-len" in posted
    assert "s3 ls" not in posted and "IRSA" not in posted and "no known storage error" not in posted
