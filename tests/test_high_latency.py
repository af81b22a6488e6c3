"""Seed 001's high-latency runbook end to end: the real Temporal dev server, the worker in-process,
the simulated cluster in one of the runbook's root causes, a real Prometheus scraping it, and the
Slack Web API stand-in. Each branch heals the cluster or ends with a human and the diagnosis; each
write is once in the simulator's audit log with its before/after; a rollback restores it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities.kube.deployments_models import SCALED_BY_ANNOTATION
from activities.prometheus import PrometheusQueries
from activities.prometheus_models import InstantQuery, RangeQuery
from tests.helpers.audit import playbook_writes, writes
from tests.helpers.fixtures_prometheus import needs_prometheus
from standins.slack import SlackStandIn
from tests.helpers.high_latency import CHANNEL, NS, STEPS, latency_input, run_incident, shows
from tests.helpers.incident_queries import settled, state_of
from tests.helpers.waiting import wait_for_async
from workflows.incident.models import (
    SIGNAL_ROLLBACK,
    UPDATE_HUMAN_ACTION,
    HumanAction,
    RollbackRequest,
)

pytestmark = [pytest.mark.integration, needs_prometheus, pytest.mark.timeout(150)]


def replicas(kube_api: k8s.ApiClient, name: str) -> tuple[int, dict]:
    d = k8s.AppsV1Api(kube_api).read_namespaced_deployment(name, NS)
    return d.spec.replicas, d.metadata.annotations or {}


# ---- the activity against a real Prometheus ------------------------------------------------------


async def test_prometheus_activity_answers_typed_and_says_why_it_fails(simulator, prometheus):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"}', "the queue depth series")
    async with httpx.AsyncClient() as http:
        p = PrometheusQueries(http, prometheus)
        result = await p.query_prometheus(InstantQuery(expr="max by (service) (llm_d_queue_depth)"))
        assert "llm-d-decode" in result.by("service") and all(
            isinstance(v, float) for v in result.by("service").values()
        )
        scalar = await p.query_prometheus(InstantQuery(expr="1 + 1"))
        assert scalar.first() == 2.0
        now = datetime.now(timezone.utc)
        window = await p.query_prometheus_range(
            RangeQuery(expr="sum(llm_d_queue_depth)", start=now - timedelta(seconds=20), end=now, step_seconds=2)
        )
        assert (
            window.series
            and window.series[0].points
            and all(
                now - timedelta(seconds=21) <= t <= now + timedelta(milliseconds=1) for t, _ in window.series[0].points
            )
        )  # Prometheus keeps ms
        with pytest.raises(ApplicationError, match="rejected the query") as bad:
            await p.query_prometheus(InstantQuery(expr="sum(rate(llm_d_requests_total[5m]"))
        assert bad.value.non_retryable and bad.value.type == "PrometheusBadQuery"
        with pytest.raises(ApplicationError, match="is not answering") as down:
            await PrometheusQueries(http, "http://127.0.0.1:9").query_prometheus(InstantQuery(expr="up"))
        assert not down.value.non_retryable and down.value.type == "PrometheusUnavailable"
        with pytest.raises(ApplicationError, match="prometheus.url"):
            await PrometheusQueries(http, None).query_prometheus(InstantQuery(expr="up"))


# ---- the branches -----------------------------------------------------------------------------------


@pytest.mark.scenario("high-latency:queue-depth")
async def test_queue_depth_scales_decode_once_and_heals(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_standin: SlackStandIn,
    slack_client,
):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"} > 10', "decode queue depth over 10")
    before, _ = replicas(kube_api, "llm-d-decode")
    report, state, timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input(),
        history="high_latency_queue_depth",
    )

    assert state.status == "resolved" and state.resolved_by == "automation", state
    assert simulator.behaviour.active_faults() == []  # the decode pods carry the load
    assert [e.title for e in timeline if e.kind == "step"] == [
        *STEPS,
        "Common root causes and solutions",
        "Verification",
    ]
    after, annotations = replicas(kube_api, "llm-d-decode")
    assert (before, after) == (2, 4) and annotations.get(SCALED_BY_ANNOTATION)
    # one write, once in the audit log, with its before/after in the incident and the report
    assert [(e.verb, e.resource, e.name, e.body["spec"]["replicas"]) for e in writes(simulator, dry_runs=True)] == [
        ("patch", "deployments", "llm-d-decode", 4)
    ]
    [change] = state.changes
    assert (change.kind, change.name, change.field, change.before, change.after) == (
        "Deployment",
        "llm-d-decode",
        "spec.replicas",
        2,
        4,
    )
    assert "llm-d-decode queue depth" in change.finding and "> 10" in change.finding
    assert f"Deployment {NS}/llm-d-decode | spec.replicas | 2 | 4" in report
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("queue depth" in t and "cache hit ratio" in t for t in texts)


@pytest.mark.scenario("high-latency:queue-depth")
async def test_rollback_on_request_restores_the_recorded_replicas(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"} > 10', "decode queue depth over 10")

    async def roll_back_after_the_scale(handle: WorkflowHandle) -> None:
        async def scaled() -> bool:
            return bool((await state_of(handle)).changes)

        await wait_for_async(scaled, "the decode scale-up", 60)
        await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="capacity needed elsewhere"))
        await settled(handle)
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
        history="high_latency_rollback_on_request",
    )

    after, annotations = replicas(kube_api, "llm-d-decode")
    assert after == 2 and SCALED_BY_ANNOTATION not in annotations  # exactly what the incident found, no trace left
    assert [(e.resource, e.name, e.body["spec"]["replicas"]) for e in writes(simulator, dry_runs=True)] == [
        ("deployments", "llm-d-decode", 4),
        ("deployments", "llm-d-decode", 2),
    ]
    assert [(c.action, c.before, c.after) for c in state.changes] == [
        ("scale deployment", 2, 4),
        ("rollback: restore replicas", 4, 2),
    ]
    assert "Rollback" in [e.title for e in timeline if e.kind == "step"]


@pytest.mark.scenario("high-latency:cold-start")
async def test_cold_start_posts_the_warm_up_endpoint_and_heals(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_model_load_time_seconds{service="llm-d-prefill"} > 120', "a cold model load")
    report, state, _timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input("LLMHighLatency"),
        history="high_latency_cold_start",
    )

    assert state.status == "resolved" and state.resolved_by == "automation", state
    assert simulator.behaviour.active_faults() == []
    [change] = state.changes
    assert (change.action, change.kind, change.name) == ("warm up model", "Service", "llm-d-prefill")
    assert change.field.startswith("POST ") and "/simulated/warmup/production/llm-d-prefill" in change.field
    assert "model load time" in change.finding and "meta-llama/Llama-3.1-70B-Instruct" in change.after
    assert writes(simulator, dry_runs=True) == []  # an HTTP call to the model server, no cluster write
    assert "warm up model" in report


@pytest.mark.scenario("high-latency:gpu-exhaustion")
async def test_gpu_exhaustion_scales_prefill_within_the_maximum(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_gpu_utilization{service="llm-d-prefill"} > 95', "prefill GPUs over 95%")
    _report, state, _timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, prometheus, task_queue, latency_input("LLMDGPUHighUtilization")
    )

    assert state.status == "resolved", state
    assert simulator.behaviour.active_faults() == []
    [change] = state.changes
    assert (change.name, change.before, change.after) == ("llm-d-prefill", 2, 3)  # × 1.5 (seed 001: 4 → 6)
    assert "GPU utilization" in change.finding
    assert [(e.resource, e.name) for e in writes(simulator, dry_runs=True)] == [("deployments", "llm-d-prefill")]


@pytest.mark.scenario("high-latency:queue-depth")
async def test_a_scale_up_never_passes_the_configured_maximum(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"} > 10', "decode queue depth over 10")
    inp = latency_input().model_copy(update={"max_replicas": 2})

    async def hand_over(handle: WorkflowHandle) -> None:
        state = await settled(handle)
        assert state.awaiting_human and state.changes == []
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="added nodes"), result_type=str
        )

    _report, _state, timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, prometheus, task_queue, inp, hand_over
    )
    assert writes(simulator, dry_runs=True) == [] and replicas(kube_api, "llm-d-decode")[0] == 2
    assert any(e.title == "scale llm-d-decode: not possible" and "max 2" in (e.outcome or "") for e in timeline)


@pytest.mark.scenario("high-latency:cache-misses")
async def test_cache_misses_end_with_a_human_and_the_cache_figures(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_standin: SlackStandIn,
    slack_client,
):
    await shows(
        prometheus,
        'sum by (service) (rate(llm_d_cache_hits_total{service="llm-d-decode"}[10s])) / '
        'sum by (service) (rate(llm_d_cache_requests_total[10s])) < 0.6',
        "the cache hit ratio down",
    )

    async def human_takes_it(handle: WorkflowHandle) -> None:
        state = await settled(handle)
        assert state.awaiting_human and state.status != "resolved"
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="cache resized"), result_type=str
        )

    _report, state, timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input("LLMDKVCacheOverflow"),
        human_takes_it,
        history="high_latency_cache_misses",
    )
    assert state.changes == [] and writes(simulator, dry_runs=True) == []
    assert state.resolved_by == "bob"
    assert any(e.title == "cache misses: handed to a human" for e in timeline)
    cache = [m["text"] for m in slack_standin.messages(CHANNEL) if "Cache misses" in m["text"]]
    assert cache and "35%" in cache[0] and "KV-cache evictions" in cache[0] and "llm-d-decode" in cache[0]


async def test_a_healthy_cluster_finds_nothing_wrong_and_writes_nothing(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"}', "the queue depth series")
    await shows(
        prometheus, f'sum(rate(llm_d_request_duration_seconds_count{{namespace="{NS}"}}[10s])) > 0', "request rates"
    )

    async def nothing(handle: WorkflowHandle) -> None:
        state = await settled(handle)
        assert state.nothing_found and "p95 latency" in state.nothing_found, state
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="flapping rule"), result_type=str
        )

    _report, state, _timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        prometheus,
        task_queue,
        latency_input(),
        nothing,
        history="high_latency_nothing_wrong_found",
    )
    assert state.changes == [] and writes(simulator, dry_runs=True) == [] and state.failure is None


async def test_prometheus_down_fails_the_step_and_escalates(
    temporal_dev, task_queue, simulator, kube_api, slack_client
):
    async def failed(handle: WorkflowHandle) -> None:
        await settled(handle)
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="prom back"), result_type=str
        )

    _report, state, _timeline = await run_incident(
        temporal_dev.client,
        kube_api,
        slack_client,
        "http://127.0.0.1:9",
        task_queue,
        latency_input(dependency_retry_seconds=6),  # a few attempts, not the default three minutes
        failed,
    )
    assert state.failure and "Prometheus at http://127.0.0.1:9 is not answering" in state.failure, state.failure
    assert state.escalation_level >= 1


@pytest.mark.scenario("high-latency:queue-depth")
async def test_shadow_mode_scales_nothing_and_reports_the_would_have_scale(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"} > 10', "decode queue depth over 10")
    inp = latency_input(verification_timeout_seconds=3).model_copy(update={"mode": "shadow"})

    async def resolve(handle: WorkflowHandle) -> None:
        await settled(handle)
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="shadow over"), result_type=str
        )

    report, state, _timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, prometheus, task_queue, inp, resolve
    )
    assert [(e.resource, e.name, e.dry_run) for e in playbook_writes(simulator)] == [
        ("deployments", "llm-d-decode", True)
    ]
    assert (
        replicas(kube_api, "llm-d-decode")[0] == 2 and "high-latency:queue-depth" in simulator.behaviour.active_faults()
    )
    [change] = state.changes
    assert change.dry_run and (change.before, change.after) == (2, 4)
    assert "**Shadow mode**" in report


@pytest.mark.scenario("high-latency:queue-depth")
async def test_a_scale_up_that_does_not_drain_the_queue_escalates_with_the_runbooks_criteria(
    temporal_dev,
    task_queue,
    simulator,
    kube_api,
    prometheus,
    slack_client,
):
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"} > 10', "decode queue depth over 10")
    # 2 → 3 decode replicas: still 100% loaded, the queue stays over 10
    inp = latency_input(verification_timeout_seconds=6).model_copy(update={"decode_scale_factor": 1.2})

    async def escalated(handle: WorkflowHandle) -> None:
        state = await settled(handle)
        assert state.escalation_level >= 1 and "queue depth" in state.escalations[0].reason, state.escalations
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="more nodes"), result_type=str
        )

    _report, state, _timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, prometheus, task_queue, inp, escalated
    )
    assert "high-latency:queue-depth" in simulator.behaviour.active_faults()
    assert replicas(kube_api, "llm-d-decode")[0] == 3  # the capacity stays: rollback only on request
    assert state.escalations[0].reason.startswith("high latency not recovered after the runbook's solutions")
