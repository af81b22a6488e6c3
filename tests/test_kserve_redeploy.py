"""Seed 004's KServe incidents, the branches tests/test_kserve_incidents.py leaves: the high-error-rate
playbook's redeploy ("If model is corrupted, redeploy", after approval, and not without it) and the
model-not-loading playbook's third common issue (disk full, the node named). The real Temporal dev
server, the worker in-process, the simulated cluster and the Slack Web API stand-in; each run is
saved for tests/test_replay.py with RUNBOOKS_SAVE_HISTORIES=1."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from kubernetes import client as k8s

from tests.helpers.audit import target, writes
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import answering_gates, settled
from tests.helpers.kserve import CHANNEL, ISVC, kserve_input
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.playbooks.kserve.error_rate import KServeHighErrorRate
from workflows.playbooks.kserve.model_not_loading import KServeModelNotLoading
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


async def run_incident(
    temporal_dev, kube_api, slack_client, task_queue, run, inp, *, approve: bool | None, history: str
) -> tuple[IncidentState, list[str]]:
    """Run one incident to its end (resolved, or with a human: then a human resolves it), answering
    every gate with `approve`; the history is saved as `history`."""
    decided: list[str] = []
    client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                run, inp, id=f"{inp.runbook}-{inp.alert.fingerprint}", task_queue=task_queue
            )
            answering = (
                asyncio.create_task(answering_gates(handle, bool(approve), decided)) if approve is not None else None
            )
            try:
                state = await settled(handle, 100)
            finally:
                if answering:
                    answering.cancel()
            if state.status != "resolved":
                await handle.execute_update(
                    UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="test over"), result_type=str
                )
            await asyncio.wait_for(handle.result(), 30)
    await save_history(handle, history)
    return state, decided


def uid(kube_api: k8s.ApiClient) -> str:
    return k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(*ISVC, "mistral-7b")["metadata"]["uid"]


@pytest.mark.scenario("high-error-rate:model-corrupted")
async def test_corrupted_model_is_redeployed_after_approval_and_heals(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    slack_standin,
    slack_client,
):
    old = uid(kube_api)
    state, decided = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeHighErrorRate.run,
        kserve_input("ModelServingHighErrorRate", "kserve-error-rate", "mistral-7b"),
        approve=True,
        history="kserve_error_rate_redeploy",
    )
    assert decided == ["redeploy:mistral-7b"]
    assert state.status == "resolved" and state.resolved_by == "automation", state
    assert simulator.behaviour.active_faults() == []  # new pods downloaded the model again
    new = uid(kube_api)
    assert new != old
    # the redeploy: one delete and one create of the InferenceService, nothing else
    assert [(e.verb, e.resource, target(e)) for e in writes(simulator)] == [
        ("delete", "inferenceservices", "mistral-7b"),
        ("create", "inferenceservices", "mistral-7b"),
    ]
    [change] = state.changes
    assert (change.action, change.kind, change.field, change.before, change.after) == (
        "redeploy InferenceService",
        "InferenceService",
        "metadata.uid",
        old,
        new,
    )
    assert "model-loading" in (change.finding or "")
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    assert "SafetensorError" in posted or "model-loading" in posted


@pytest.mark.scenario("high-error-rate:model-corrupted")
async def test_no_redeploy_without_approval(temporal_dev, task_queue, simulator, kube_api, slack_standin, slack_client):
    old = uid(kube_api)
    state, decided = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeHighErrorRate.run,
        kserve_input("ModelServingHighErrorRate", "kserve-error-rate", "mistral-7b"),
        approve=False,
        history="kserve_error_rate_redeploy_rejected",
    )
    assert decided == ["redeploy:mistral-7b"] and state.changes == [] and writes(simulator) == []
    assert uid(kube_api) == old and simulator.behaviour.active_faults() == ["high-error-rate:model-corrupted"]


@pytest.mark.scenario("model-not-loading:disk-full")
async def test_disk_full_escalates_naming_the_node_and_writes_nothing(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    slack_standin,
    slack_client,
):
    async def init_failed() -> bool:
        fault = next(f for f in simulator.behaviour.faults if f.name == "model-not-loading:disk-full")
        return fault.full_node is not None

    for _ in range(60):
        if await init_failed():
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # the storage-initializer fails once or twice
    full_node = next(f for f in simulator.behaviour.faults if f.name == "model-not-loading:disk-full").full_node
    state, _ = await run_incident(
        temporal_dev,
        kube_api,
        slack_client,
        task_queue,
        KServeModelNotLoading.run,
        kserve_input("ModelServingModelNotLoading", "kserve-model-not-loading", "mistral-7b-v2"),
        approve=None,
        history="kserve_model_not_loading_disk_full",
    )
    assert state.awaiting_human and state.escalation_level >= 1, state
    assert state.changes == [] and writes(simulator) == []
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    assert "disk-full" in posted and "No space left on device" in posted
    assert f"on node {full_node}" in posted and "check node storage" in posted
