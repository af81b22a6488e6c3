"""LLMDHighErrorRate and seed 002's model rollback end to end: the real Temporal dev server, the worker
in process, the simulated cluster with production/llama-3-1-8b bumped from model v1.2.0 to a failing
v1.3.0, a real Prometheus scraping it, the Slack stand-in.

- the model version change found (revision, both versions), nothing written before the approval,
  spec.model.version back to v1.2.0 once in the audit log, the error rate down, the incident resolved;
- a rollback on request patches the recorded v1.3.0 back exactly;
- a healthy cluster: nothing wrong found, no write;
- the pure part: which ReplicaSets make a model version change in the window.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from kubernetes import client as k8s

from activities.kube.deployments_models import Revision, RolloutHistory
from activities.kube.llmdeployments_models import MODEL_VERSION_LABEL, LLMDeploymentSummary
from simulator.scenarios import SCENARIOS  # noqa: F401 - registers the model-rollback fault first
from simulator.scenarios_models import BAD_VERSION, GOOD_VERSION, MODEL
from tests.helpers.audit import playbook_writes
from tests.helpers.fixtures_prometheus import needs_prometheus, query
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import gate_asked, settled, state_of, step_done, timeline_of
from standins.slack import SlackStandIn
from tests.helpers.waiting import wait_for_async
from settings.routes import default_routes
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.playbooks.llmd_error_rate.models import ErrorRateTimings, LLMDErrorRateInput
from workflows.playbooks.llmd_error_rate.playbook import LLMDHighErrorRate
from workflows.playbooks.model_rollback import model_change
from workflows.incident.models import (
    SIGNAL_ROLLBACK,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    Alert,
    Decision,
    HumanAction,
    RollbackRequest,
)

pytestmark = [pytest.mark.integration]

CHANNEL = "#incidents-error-rate"
NS, NAME = MODEL
GATE = f"model-rollback:{NS}/{NAME}"
# Prometheus scrapes every second; the rule's 5m window shortened so the test sees the fault at once.
FAST = ErrorRateTimings(
    rate_window_seconds=10,
    rollout_timeout_seconds=30,
    rollout_poll_seconds=0.3,
    verification_timeout_seconds=60,
    verification_poll_seconds=1,
    kube_call_timeout_seconds=10,
    approval_timeout_minutes=2,
)
RULE = 'sum(rate(llm_d_requests_total{status=~"5.."}[10s])) / sum(rate(llm_d_requests_total[10s])) * 100 > 5'


def error_rate_input() -> LLMDErrorRateInput:
    alert = Alert(
        alertname="LLMDHighErrorRate",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": "LLMDHighErrorRate", "severity": "critical", "service": "llm-d", "team": "sre"},
        annotations={"summary": "High error rate detected"},
    )
    return LLMDErrorRateInput(
        alert=alert, runbook="llmd-high-error-rate", incident_commander="alice", slack_channel=CHANNEL, timings=FAST
    )


def model_version(kube_api: k8s.ApiClient) -> str:
    llmd = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", NS, "llmdeployments", NAME
    )
    return llmd["spec"]["model"]["version"]


def llmd_patches(simulator) -> list:
    return [
        e for e in playbook_writes(simulator) if e.resource == "llmdeployments" and e.verb == "patch" and e.code < 300
    ]


async def failing_shows(prometheus: str) -> None:
    async def holds() -> bool:
        return bool(await asyncio.to_thread(query, prometheus, RULE))

    await wait_for_async(holds, "the LLMDHighErrorRate condition in Prometheus", 40)


def test_routing_llmd_high_error_rate_is_this_playbooks_at_the_seeds_severity():
    route = default_routes()["LLMDHighErrorRate"]
    assert (route.runbook, route.severity) == ("llmd-high-error-rate", "P1")


def test_a_model_version_change_is_the_newest_revision_serving_another_version():
    t0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)

    def rev(n: int, version: str, minutes: float) -> Revision:
        return Revision(revision=n, created=t0 + timedelta(minutes=minutes), labels={MODEL_VERSION_LABEL: version})

    summary = LLMDeploymentSummary(
        namespace=NS, name=NAME, phase="Ready", model_version="v1.3.0", previous_versions=["v1.1.3"]
    )
    history = RolloutHistory(
        namespace=NS, name=NAME, current=3, revisions=[rev(1, "v1.2.0", 0), rev(2, "v1.3.0", 30), rev(3, "v1.3.0", 40)]
    )
    change = model_change(history, summary, since=t0 + timedelta(minutes=10))
    assert change is not None and (change.before, change.now, change.revision) == ("v1.2.0", "v1.3.0", 2)
    assert change.target == "v1.1.3", "the declared last good version wins"
    assert "v1.2.0 → v1.3.0" in str(change)
    assert model_change(history, summary, since=t0 + timedelta(minutes=35)) is None, "a restart is no version change"
    plain = summary.model_copy(update={"previous_versions": []})
    assert model_change(history, plain, since=t0).target == "v1.2.0"
    only_one = history.model_copy(update={"revisions": [rev(1, "v1.3.0", 0)], "current": 1})
    assert model_change(only_one, summary, since=t0) is None


@needs_prometheus
@pytest.mark.timeout(150)
@pytest.mark.scenario("model-rollback")
async def test_model_change_rolled_back_after_approval_then_restored_on_request(
    temporal_dev,
    task_queue: str,
    simulator,
    prometheus,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    client = temporal_dev.client
    assert model_version(kube_api) == BAD_VERSION
    await failing_shows(prometheus)
    inp = error_rate_input()
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                LLMDHighErrorRate.run, inp, id=f"llmd-error-rate-{inp.alert.fingerprint}", task_queue=task_queue
            )
            asked = await gate_asked(handle, GATE, 60)
            assert llmd_patches(simulator) == [], "nothing written before the approval"
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))
            report = await asyncio.wait_for(handle.result(), 100)
            state = await state_of(handle)
            timeline = await timeline_of(handle)
    await save_history(handle, "llmd_error_rate_model_rollback")

    (gate,) = asked.pending_gates
    assert GOOD_VERSION in gate.question and BAD_VERSION in gate.question and "UTC" in gate.question
    assert '"version":"v1.2.0"' in gate.question
    assert [e.title for e in timeline if e.kind == "step"] == [
        "1. Verify the error rate",
        "2. Check recent changes",
        f"Model rollback: {NS}/{NAME}",
        "Verification",
    ]
    assert state.status == "resolved" and state.resolved_by == "automation", state.resolution
    assert model_version(kube_api) == GOOD_VERSION
    (patch,) = llmd_patches(simulator)
    assert patch.name == NAME and patch.body == {"spec": {"model": {"version": GOOD_VERSION}}}
    (change,) = state.changes
    assert change.before == {"model": {"version": BAD_VERSION}} and change.after == {"model": {"version": GOOD_VERSION}}
    assert f"{NS}/{NAME}" in change.finding and "5xx" in change.finding and BAD_VERSION in change.finding
    assert simulator.behaviour.active_faults() == []
    assert str(change.after) in report or GOOD_VERSION in report
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("llm-d error rate" in t and f"{NS}/{NAME}" in t for t in texts)


@needs_prometheus
@pytest.mark.timeout(150)
@pytest.mark.scenario("model-rollback")
async def test_rollback_on_request_restores_the_recorded_model_version(
    temporal_dev,
    task_queue: str,
    simulator,
    prometheus,
    kube_api: k8s.ApiClient,
    slack_client,
):
    client = temporal_dev.client
    await failing_shows(prometheus)
    inp = error_rate_input()
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                LLMDHighErrorRate.run, inp, id=f"llmd-error-rate-{inp.alert.fingerprint}", task_queue=task_queue
            )
            await gate_asked(handle, GATE, 60)
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))
            await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="bob", reason="v1.3.0 is wanted back"))
            # the state read after the step ended (read before, it could miss the step's last change)
            state = await step_done(handle, "Rollback", 60)
            timeline = await timeline_of(handle)
    await save_history(handle, "llmd_error_rate_rollback")

    assert model_version(kube_api) == BAD_VERSION, "the recorded version is back"
    first, second = llmd_patches(simulator)
    assert first.body == {"spec": {"model": {"version": GOOD_VERSION}}}
    assert second.body == {"spec": {"model": {"version": BAD_VERSION}}}
    restore = state.changes[-1]
    assert restore.before == {"model": {"version": GOOD_VERSION}} and restore.after == {
        "model": {"version": BAD_VERSION}
    }
    assert "requested by bob" in (restore.finding or "")
    assert state.status != "resolved" or state.resolved_by != "automation"
    assert next(e for e in timeline if e.title == "Rollback").outcome == "1 recorded model version(s) restored"


@needs_prometheus
@pytest.mark.timeout(120)
async def test_a_healthy_cluster_is_nothing_wrong_and_no_write(
    temporal_dev,
    task_queue: str,
    simulator,
    prometheus,
    kube_api: k8s.ApiClient,
    slack_client,
):
    client = temporal_dev.client

    async def scraped() -> bool:
        return bool(await asyncio.to_thread(query, prometheus, "sum(rate(llm_d_requests_total[10s])) > 0"))

    await wait_for_async(scraped, "llm-d request rates in Prometheus", 40)
    inp = error_rate_input()
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                LLMDHighErrorRate.run, inp, id=f"llmd-error-rate-{inp.alert.fingerprint}", task_queue=task_queue
            )

            async def nothing_found() -> IncidentState | None:
                state = await state_of(handle)
                return state if state.nothing_found and state.awaiting_human else None

            state = await wait_for_async(nothing_found, "nothing wrong found", 60)
            assert state.status == "open" and state.failure is None and state.approvals == []
            await handle.execute_update(
                UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="false alarm")
            )
            report = await asyncio.wait_for(handle.result(), 30)
    await save_history(handle, "llmd_high_error_rate_nothing_wrong_found")
    assert playbook_writes(simulator) == [] and state.changes == []
    assert "5xx" in (state.nothing_found or "") and "false alarm" in report


@needs_prometheus
@pytest.mark.timeout(150)
@pytest.mark.scenario("model-rollback")
async def test_high_latency_offers_the_model_rollback_when_a_model_change_is_in_its_window(
    temporal_dev,
    task_queue: str,
    simulator,
    prometheus,
    kube_api: k8s.ApiClient,
    slack_client,
):
    from workflows.playbooks.high_latency.playbook import HighLatency
    from workflows.playbooks.high_latency.models import HighLatencyInput, LatencyTimings

    client = temporal_dev.client
    await failing_shows(prometheus)
    alert = Alert(
        alertname="LLMDHighLatency",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": "LLMDHighLatency", "severity": "warning", "service": "llm-d"},
    )
    # an SLO every p95 breaks: latency is "high", and none of seed 001's four causes shows
    inp = HighLatencyInput(
        alert=alert,
        runbook="high-latency",
        incident_commander="alice",
        slack_channel=CHANNEL,
        latency_slo_seconds=0.001,
        timings=LatencyTimings(
            rate_window_seconds=10,
            verify_window_seconds=20,
            verify_step_seconds=2,
            verification_timeout_seconds=3,
            verification_poll_seconds=1,
            kube_call_timeout_seconds=10,
            approval_timeout_minutes=2,
        ),
    )
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                HighLatency.run, inp, id=f"high-latency-{alert.fingerprint}", task_queue=task_queue
            )
            asked = await gate_asked(handle, GATE, 60)
            assert llmd_patches(simulator) == [], "nothing written before the approval"
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))

            state = await settled(handle, 60)
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="done"))
            await asyncio.wait_for(handle.result(), 30)
            timeline = await timeline_of(handle)
    await save_history(handle, "high_latency_model_rollback")

    (gate,) = asked.pending_gates
    assert "latencyP95 > 1000 ms" in gate.question and f"{GOOD_VERSION} → {BAD_VERSION}" in gate.question
    assert model_version(kube_api) == GOOD_VERSION
    (patch,) = llmd_patches(simulator)
    assert patch.body == {"spec": {"model": {"version": GOOD_VERSION}}}
    assert any(e.title == f"Model rollback: {NS}/{NAME}" for e in timeline if e.kind == "step")
    assert any(e.title == "model version change in the window" for e in timeline)
    assert state.failure is None


@needs_prometheus
@pytest.mark.timeout(150)
@pytest.mark.scenario("model-rollback")
async def test_shadow_mode_rolls_back_nothing_and_reports_the_would_have_patch(
    temporal_dev,
    task_queue: str,
    simulator,
    prometheus,
    kube_api: k8s.ApiClient,
    slack_client,
):
    client = temporal_dev.client
    await failing_shows(prometheus)
    inp = error_rate_input().model_copy(update={"mode": "shadow"})
    async with httpx.AsyncClient() as http:
        async with build_worker(
            client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL, prometheus_url=prometheus
        ):
            handle = await client.start_workflow(
                LLMDHighErrorRate.run, inp, id=f"llmd-error-rate-{inp.alert.fingerprint}", task_queue=task_queue
            )
            await gate_asked(handle, GATE, 60)
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))

            state = await settled(handle, 60)
            await handle.execute_update(
                UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="shadow over")
            )
            report = await asyncio.wait_for(handle.result(), 30)

    assert model_version(kube_api) == BAD_VERSION and "model-rollback" in simulator.behaviour.active_faults()
    writes = [e for e in playbook_writes(simulator) if e.code < 300]
    assert writes and all(e.dry_run for e in writes)
    (change,) = state.changes
    assert change.dry_run and change.after == {"model": {"version": GOOD_VERSION}}
    assert "**Shadow mode**" in report and state.failure is None
