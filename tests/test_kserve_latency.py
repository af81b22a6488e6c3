"""Seed 004's KServe high latency end to end: the real Temporal dev server, the worker in-process, the
simulated cluster with mistral-7b's one predictor replica overloaded (`kserve-high-latency`), a real
Prometheus scraping it and the Slack Web API stand-in. The scale-up (minReplicas 1 → 3) heals it, is
once in the audit log with its before/after, and a rollback on request restores exactly 1; a healthy
InferenceService gets "nothing wrong found" and no write."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import WorkflowHandle

from tests.helpers.audit import playbook_writes, writes
from tests.helpers.fixtures_prometheus import needs_prometheus, query
from tests.helpers.histories import save_history
from standins.slack import SlackStandIn
from tests.helpers.incident_queries import state_of, timeline_of
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.playbooks.kserve.latency import KServeHighLatency, KServeLatencyInput, KServeLatencyTimings
from workflows.incident.models import (
    SIGNAL_ROLLBACK,
    UPDATE_HUMAN_ACTION,
    Alert,
    HumanAction,
    RollbackRequest,
)

pytestmark = [pytest.mark.integration, needs_prometheus, pytest.mark.timeout(150)]

CHANNEL = "#incidents-high"
NS, ISVC = "mlops-serving", "mistral-7b"
CUSTOM = ("serving.kserve.io", "v1beta1", NS, "inferenceservices", ISVC)
P99 = (
    'histogram_quantile(0.99, sum by (le) (rate(inference_latency_seconds_bucket'
    '{namespace="mlops-serving", service="mistral-7b-predictor"}[10s])))'
)
STEPS = [
    "1. Check current latency",
    "2. Check if replicas are overloaded",
    "3. Check GPU memory; 5. check for long prompts",
    "4. Scale up if needed",
]
# Prometheus scrapes every second: a 10 s rate window is enough to see the load change.
FAST = KServeLatencyTimings(
    rate_window_seconds=10, verification_timeout_seconds=60, verification_poll_seconds=1, kube_call_timeout_seconds=10
)


def latency_input(**timings) -> KServeLatencyInput:
    alert = Alert(
        alertname="ModelServingHighLatency",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={
            "alertname": "ModelServingHighLatency",
            "namespace": NS,
            "inferenceservice": ISVC,
            "severity": "high",
            "service": "model-serving",
        },
        annotations={"summary": "Model serving P99 latency above 2s"},
    )
    return KServeLatencyInput(
        alert=alert,
        runbook="kserve-high-latency",
        incident_commander="alice",
        slack_channel=CHANNEL,
        timings=FAST.model_copy(update=timings),
    )


def min_replicas(kube_api: k8s.ApiClient) -> int:
    return k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(*CUSTOM)["spec"]["predictor"]["minReplicas"]


async def p99_over(url: str, seconds: float) -> None:
    async def holds() -> bool:
        return bool(await asyncio.to_thread(query, url, f"{P99} > {seconds}"))

    await wait_for_async(holds, f"mistral-7b's p99 over {seconds}s", 40)


async def run_incident(client, kube_api, slack_client, prometheus, task_queue, inp, during=None, history=None):
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                KServeHighLatency.run, inp, id=f"kserve-high-latency-{inp.alert.fingerprint}", task_queue=task_queue
            )
            if during is not None:
                await during(handle)
            report = await asyncio.wait_for(handle.result(), 100)
            state = await state_of(handle)
            timeline = await timeline_of(handle)
    if history:
        await save_history(handle, history)
    return report, state, timeline


@pytest.mark.scenario("kserve-high-latency")
async def test_overloaded_predictor_gets_min_replicas_3_once_and_heals(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_standin: SlackStandIn,
    slack_client,
):
    await p99_over(prometheus, 2)
    report, state, timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input(),
        history="kserve_high_latency_scale_up",
    )

    assert state.status == "resolved" and state.resolved_by == "automation", state
    assert simulator.behaviour.active_faults() == []  # three replicas carry the load
    assert [e.title for e in timeline if e.kind == "step"] == [*STEPS, "Verification"]
    assert min_replicas(kube_api) == 3
    assert [(e.verb, e.resource, e.name, e.body) for e in writes(simulator)] == [
        ("patch", "inferenceservices", ISVC, [{"op": "replace", "path": "/spec/predictor/minReplicas", "value": 3}])
    ]
    [change] = state.changes
    assert (change.kind, change.name, change.field, change.before, change.after) == (
        "InferenceService",
        ISVC,
        "spec.predictor.minReplicas",
        1,
        3,
    )
    assert "p99" in change.finding and "overloaded" in change.finding and "GPU" in change.finding
    assert f"InferenceService {NS}/{ISVC} | spec.predictor.minReplicas | 1 | 3" in report
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("p99 latency" in t and "GPU memory (KV cache)" in t for t in texts)


@pytest.mark.scenario("kserve-high-latency")
async def test_rollback_on_request_restores_min_replicas_exactly(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await p99_over(prometheus, 2)

    async def roll_back_after_the_scale(handle: WorkflowHandle) -> None:
        async def scaled() -> bool:
            return bool((await state_of(handle)).changes)

        await wait_for_async(scaled, "the minReplicas patch", 60)
        await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="GPUs needed elsewhere"))

        async def done() -> bool:
            s = await state_of(handle)
            return s.awaiting_human or s.status in ("resolved", "failed")

        await wait_for_async(done, "the rollback", 60)
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="carol", note="by hand"), result_type=str
        )

    _report, state, timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input(verification_timeout_seconds=90),
        roll_back_after_the_scale,
        history="kserve_high_latency_rollback_on_request",
    )

    assert min_replicas(kube_api) == 1
    assert [(e.resource, e.body[0]["value"]) for e in writes(simulator)] == [
        ("inferenceservices", 3),
        ("inferenceservices", 1),
    ]
    assert [(c.action, c.before, c.after) for c in state.changes] == [
        ("scale-up min replicas", 1, 3),
        ("rollback: restore minReplicas", 3, 1),
    ]
    assert "Rollback" in [e.title for e in timeline if e.kind == "step"]


@pytest.mark.scenario("baseline")
async def test_healthy_inference_service_nothing_wrong_found(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_standin: SlackStandIn,
    slack_client,
):
    async def scraped() -> bool:
        return bool(await asyncio.to_thread(query, prometheus, P99))

    await wait_for_async(scraped, "mistral-7b's p99 series", 40)

    async def hand_over_once_checked(handle: WorkflowHandle) -> None:
        async def checked() -> bool:
            return (await state_of(handle)).nothing_found is not None

        await wait_for_async(checked, "the checks", 60)
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="carol", note="false alarm"), result_type=str
        )

    _report, state, _timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input(),
        hand_over_once_checked,
        history="kserve_high_latency_nothing_wrong_found",
    )
    assert "p99" in state.nothing_found and "no overloaded replica" in state.nothing_found
    assert state.changes == [] and writes(simulator) == [] and min_replicas(kube_api) == 1


@pytest.mark.scenario("kserve-high-latency")
async def test_shadow_mode_scale_up_is_a_dry_run(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await p99_over(prometheus, 2)

    async def hand_over_once_tried(handle: WorkflowHandle) -> None:
        async def tried() -> bool:
            return bool((await state_of(handle)).changes)

        await wait_for_async(tried, "the would-have patch", 60)
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="carol", note="shadow over"), result_type=str
        )

    report, state, _timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input().model_copy(update={"mode": "shadow"}),
        hand_over_once_tried,
    )
    [change] = state.changes
    assert change.dry_run and (change.before, change.after) == (1, 3)
    audit = playbook_writes(simulator)
    assert audit and all(e.dry_run for e in audit) and min_replicas(kube_api) == 1
    assert "kserve-high-latency" in simulator.behaviour.active_faults() and "**Shadow mode**" in report
