"""SOP-002 end to end: the real Temporal dev server, the worker in-process, the simulated
cluster in its `high-memory` fault and the Slack Web API stand-in."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes import client as k8s
from kubernetes.utils import parse_quantity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities.kube.llmdeployments import KubeLLMDeployments
from activities.kube.llmdeployments_models import REPLACED_ANNOTATION, LLMDeploymentChange
from activities.kube.models import PodRef
from activities.kube.pods import KubePods
from activities.kube.pods_models import MemoryEventsQuery, MemoryLimitsQuery, PodDeletion, TopPodsQuery
from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import state_of, timeline_of
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.playbooks.high_memory.models import GATE_HALVE_REPLICAS, HighMemoryInput, MemoryTimings
from workflows.playbooks.high_memory.playbook import HighMemory
from workflows.incident.state import IncidentState
from workflows.incident.models import (
    Alert,
    Decision,
    HumanAction,
    RollbackRequest,
    SIGNAL_ROLLBACK,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CHANNEL = "#incidents-test"
SOP_STEPS = [
    "1. Identify high memory pods",
    "2. Check memory limits",
    "3. Apply immediate relief",
    "4. Scale if necessary",
    "Verification",
]
# The simulator runs 30x faster than life: an OOM kill every 2 simulated minutes is one every 4 s.
FAST = MemoryTimings(
    relief_settle_seconds=1,
    verification_timeout_seconds=30,
    verification_poll_seconds=0.5,
    oom_quiet_minutes=0.15,
    kube_call_timeout_seconds=10,
    approval_timeout_minutes=1,
)
LLMD = ("inference.llm-d.io", "v1alpha1", "llmdeployments")


def memory_input(**timings) -> HighMemoryInput:
    alert = Alert(
        alertname="LLMDMemoryPressure",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"severity": "critical", "service": "llm-d"},
        annotations={"summary": "Memory pressure detected"},
    )
    return HighMemoryInput(
        alert=alert,
        runbook="high-memory",
        incident_commander="alice",
        slack_channel=CHANNEL,
        timings=FAST.model_copy(update=timings),
    )


def llm_specs(kube_api: k8s.ApiClient) -> dict[tuple[str, str], dict]:
    """Each LLMDeployment's serving, replicas and our annotation, read back through the client."""
    items = k8s.CustomObjectsApi(kube_api).list_cluster_custom_object(*LLMD)["items"]
    return {
        (d["metadata"]["namespace"], d["metadata"]["name"]): {
            "serving": d["spec"].get("serving"),
            "replicas": d["spec"].get("replicas"),
            "remembered": (d["metadata"].get("annotations") or {}).get(REPLACED_ANNOTATION),
        }
        for d in items
    }


def top_pod(kube_api: k8s.ApiClient) -> tuple[str, str]:
    """`kubectl top pods -A --sort-by=memory | head -1`, read independently of the activities."""
    items = k8s.CustomObjectsApi(kube_api).list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")["items"]
    usage = {
        (i["metadata"]["namespace"], i["metadata"]["name"]): sum(
            parse_quantity(c["usage"]["memory"]) for c in i["containers"]
        )
        for i in items
    }
    return max(usage, key=usage.__getitem__)


def llmd_patches(simulator) -> Counter:
    """(namespace, name, spec field) -> how many patches set it."""
    counts: Counter = Counter()
    for e in writes(simulator):
        if e.resource == "llmdeployments" and e.verb == "patch":
            body = e.body if isinstance(e.body, dict) else json.loads(e.body)
            for field in body.get("spec") or {}:
                counts[(e.namespace, e.name, field)] += 1
    return counts


def pod_deletes(simulator) -> list[tuple[str, str]]:
    return [(e.namespace, e.name) for e in writes(simulator) if e.resource == "pods" and e.verb == "delete"]


async def start(client: Client, inp: HighMemoryInput, task_queue: str) -> WorkflowHandle:
    return await client.start_workflow(
        HighMemory.run, inp, id=f"high-memory-{inp.alert.fingerprint}", task_queue=task_queue
    )


async def decide_halving(handle: WorkflowHandle, approved: bool) -> None:
    async def gate_pending() -> bool:
        return any(g.gate == GATE_HALVE_REPLICAS for g in (await state_of(handle)).pending_gates)

    await wait_for_async(gate_pending, "the halve-replicas approval request")
    await handle.execute_update(
        UPDATE_DECIDE,
        Decision(
            gate=GATE_HALVE_REPLICAS, approved=approved, by="alice", comment="ok" if approved else "capacity needed"
        ),
    )


async def resolve_by_hand(handle: WorkflowHandle) -> str:
    await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="handled by hand"))
    return await handle.result()


def assert_restored(kube_api: k8s.ApiClient, originals: dict) -> None:
    now = llm_specs(kube_api)
    assert {k: (v["serving"], v["replicas"]) for k, v in now.items()} == {
        k: (v["serving"], v["replicas"]) for k, v in originals.items()
    }
    assert all(v["remembered"] is None for v in now.values()), "rollback leaves no trace of the incident's originals"


@pytest.mark.scenario("high-memory")
async def test_sop_002_relieves_memory_pressure(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    originals = llm_specs(kube_api)
    top = top_pod(kube_api)
    assert "high-memory" in simulator.behaviour.active_faults()
    big = {k for k, v in originals.items() if v["replicas"] > 2}
    assert big, "the scenario has an LLMDeployment with more than two replicas to halve"

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, memory_input(), task_queue)
            await decide_halving(handle, approved=True)
            report = await handle.result()
            timeline = await timeline_of(handle)
            state = await state_of(handle)
    await save_history(handle, "high_memory_relieved")

    # the cluster healed: the fault's remedy is exactly SOP-002's three steps
    assert simulator.behaviour.active_faults() == []
    now = llm_specs(kube_api)
    assert all(v["serving"] == {"batchSize": 1, "maxConcurrency": 2} for v in now.values())
    assert {k: now[k]["replicas"] for k in big} == {k: originals[k]["replicas"] // 2 for k in big}
    assert all(now[k]["replicas"] == originals[k]["replicas"] for k in now if k not in big)

    # each change once: a serving patch per LLMDeployment, a replica patch per big one, at most one restart
    expected = Counter({(ns, name, "serving"): 1 for ns, name in originals})
    expected.update({(ns, name, "replicas"): 1 for ns, name in big})
    assert llmd_patches(simulator) == expected
    deletes = pod_deletes(simulator)
    restart = next(c for c in state.changes if c.kind == "Pod")
    assert (restart.namespace, restart.name) == top
    assert deletes == ([top] if restart.applied else [])
    assert {e.resource for e in writes(simulator)} <= {"llmdeployments", "pods"}

    # every write names what this run found: the pressure, the highest consumer above its limit, memory after relief
    assert state.changes and all(c.finding for c in state.changes), [c for c in state.changes if not c.finding]
    assert f"{top[0]}/{top[1]}" in restart.finding and "at or above 90% of its limit" in restart.finding
    assert all("at or above 90% of the memory limit" in c.finding for c in state.changes if c.field == "spec.serving")
    assert all(
        c.finding.startswith("memory still high after the relief") for c in state.changes if c.field == "spec.replicas"
    )

    # the SOP's steps in order, resolved by the verification, the gate decided by alice
    assert [e.title for e in timeline if e.kind == "step"] == SOP_STEPS
    assert state.status == "resolved" and state.resolved_by == "automation"
    assert [(g.gate, g.approved) for g in state.approvals] == [(GATE_HALVE_REPLICAS, True)]

    # the report carries every change with the value it replaced and the one it set
    for (ns, name), spec in originals.items():
        serving = spec["serving"]
        assert (
            f"LLMDeployment {ns}/{name} | spec.serving | {{'batchSize': {serving['batchSize']}, "
            f"'maxConcurrency': {serving['maxConcurrency']}}} | {{'batchSize': 1, 'maxConcurrency': 2}}" in report
        )
    for ns, name in big:
        assert (
            f"LLMDeployment {ns}/{name} | spec.replicas | {originals[(ns, name)]['replicas']} | "
            f"{originals[(ns, name)]['replicas'] // 2}" in report
        )
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("Top memory consumers" in t and top[1] in t for t in texts)
    assert any("Memory warning events" in t and "OOMKilling" in t for t in texts)
    assert any("Resolved" in t for t in texts)


@pytest.mark.scenario("high-memory")
async def test_relief_without_scaling_fails_verification_rolls_back_and_escalates(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    originals = llm_specs(kube_api)

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, memory_input(verification_timeout_seconds=4), task_queue)
            await decide_halving(handle, approved=False)

            async def rolled_back() -> IncidentState | None:
                state = await state_of(handle)
                return state if state.escalation_level >= 1 else None

            state = await wait_for_async(rolled_back, "rollback and escalation")
            report = await resolve_by_hand(handle)

    # still broken (the SOP's scaling was refused), back to exactly what the incident found
    assert "high-memory" in simulator.behaviour.active_faults()
    assert_restored(kube_api, originals)
    # no repeated restarts: one pod restart at most, the diagnosis goes to the next level
    assert len(pod_deletes(simulator)) <= 1
    assert "relief did not bring memory down" in state.escalations[0].reason
    assert state.escalations[0].notify == "Senior SRE"
    rollbacks = [c for c in state.changes if c.action == "rollback: restore original"]
    assert {(c.namespace, c.name, c.field) for c in rollbacks} == {(ns, n, "spec.serving") for ns, n in originals}
    assert all(
        c.after == {"batchSize": 1, "maxConcurrency": 2} for c in state.changes if c.action == "reduce batch size"
    )
    assert "rollback: restore original" in report and "Not resolved" not in report
    assert any("Rollback" in m["text"] for m in slack_standin.messages(CHANNEL))


@pytest.mark.scenario("high-memory")
async def test_rollback_on_request_restores_batch_sizes_concurrency_and_replicas(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client
):
    client: Client = temporal_dev.client
    originals = llm_specs(kube_api)
    big = {k for k, v in originals.items() if v["replicas"] > 2}

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            # a long OOM window keeps verification open while the rollback is asked for
            handle = await start(client, memory_input(oom_quiet_minutes=5, verification_timeout_seconds=60), task_queue)
            await decide_halving(handle, approved=True)

            async def halved() -> bool:
                specs = llm_specs(kube_api)
                return all(specs[k]["replicas"] == originals[k]["replicas"] // 2 for k in big)

            await wait_for_async(halved, "the replicas to be halved")
            await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="capacity first"))

            async def restored() -> IncidentState | None:
                state = await state_of(handle)
                return state if any(e.title == "Rollback" and e.ended_at for e in await timeline_of(handle)) else None

            state = await wait_for_async(restored, "the requested rollback")
            report = await resolve_by_hand(handle)
    await save_history(handle, "high_memory_rollback_on_request")

    assert_restored(kube_api, originals)
    counts = llmd_patches(simulator)
    # each field changed once by the relief and once by the rollback, never more
    assert all(counts[(ns, name, "serving")] == 2 for ns, name in originals)
    assert all(counts[(ns, name, "replicas")] == 2 for ns, name in big)
    assert state.escalation_level == 0, "a requested rollback is not a failure to escalate"
    for ns, name in big:
        assert (
            f"LLMDeployment {ns}/{name} | spec.replicas | {originals[(ns, name)]['replicas'] // 2} | "
            f"{originals[(ns, name)]['replicas']}" in report
        )
    assert "requested by carol: capacity first" in report


def retried_on_conflict(activity, req, attempts: int = 5):
    """As Temporal retries the activity: the operator's own status writes can race the conditional patch
    (409, "the object has been modified"); a retry re-reads and writes (or finds it written)."""
    for attempt in range(attempts):
        try:
            return activity(req)
        except ApiException as err:
            if err.status != 409 or attempt == attempts - 1:
                raise


@pytest.mark.scenario("high-memory")
def test_memory_activities_read_like_kubectl_and_write_once(simulator, kube_api: k8s.ApiClient):
    """The activities straight against the simulator: a retried write keeps the original, rollback forgets it."""
    memory, llmds = KubePods(kube_api), KubeLLMDeployments(kube_api)
    top = memory.top_memory_pods(TopPodsQuery(limit=5))
    assert len(top) == 5 and [p.memory_bytes for p in top] == sorted((p.memory_bytes for p in top), reverse=True)
    assert (top[0].namespace, top[0].name) == top_pod(kube_api)
    events = memory.memory_events(MemoryEventsQuery(oom_only=True))
    assert events and all(e.oom for e in events) and any(e.reason == "OOMKilling" for e in events)
    limits = memory.pod_memory_limits(
        MemoryLimitsQuery(
            pods=[
                PodRef(namespace=top[0].namespace, name=top[0].name),
                PodRef(namespace="production", name="no-such-pod"),
            ]
        )
    )
    assert limits[0].limit_bytes and limits[0].owner and limits[0].owner.startswith("ReplicaSet/")
    assert top[0].memory_bytes / limits[0].limit_bytes > 0.9 and limits[1].found is False

    relief = LLMDeploymentChange(
        namespace="production",
        name="mistral-7b",
        field="serving",
        value={"batchSize": 1, "maxConcurrency": 2},
        change_key="inc-1/relief",
    )
    change = lambda req: retried_on_conflict(llmds.change_llm_deployment, req)  # noqa: E731
    first, retry = change(relief), change(relief)
    assert (first.applied, first.before) == (True, {"batchSize": 16, "maxConcurrency": 32})
    assert (retry.applied, retry.before) == (False, first.before), "a retry still knows the original"
    restore = relief.model_copy(update={"value": first.before, "rollback": True, "change_key": "inc-1/rollback"})
    assert change(restore).applied and not change(restore).applied
    spec = llm_specs(kube_api)[("production", "mistral-7b")]
    assert spec["serving"] == {"batchSize": 16, "maxConcurrency": 32} and spec["remembered"] is None
    assert llmd_patches(simulator) == Counter({("production", "mistral-7b", "serving"): 2})

    wrong = PodDeletion(namespace=top[0].namespace, name=top[0].name, uid="not-its-uid")
    assert memory.delete_pod(wrong).applied is False
    right = wrong.model_copy(update={"uid": limits[0].uid})
    assert memory.delete_pod(right).applied and not memory.delete_pod(right).applied
    assert pod_deletes(simulator) == [(top[0].namespace, top[0].name)]

    with pytest.raises(ApplicationError) as missing:
        llmds.change_llm_deployment(relief.model_copy(update={"name": "no-such-model"}))
    assert missing.value.non_retryable and "no-such-model" in str(missing.value)


@pytest.mark.scenario("high-memory")
def test_top_pods_waits_out_a_metrics_server_that_is_starting(simulator, kube_api: k8s.ApiClient):
    """metrics.k8s.io answers 503 for minutes while metrics-server starts: the read polls through it
    (bounded), instead of failing after a few glitch-sized retries; past its bound the 503 surfaces."""
    memory = KubePods(kube_api)
    simulator.api.metrics_unavailable_for(1.5)
    top = memory.top_memory_pods(TopPodsQuery(limit=3, metrics_wait_seconds=30, metrics_poll_seconds=0.2))
    assert len(top) == 3
    simulator.api.metrics_unavailable_for(30)
    with pytest.raises(ApiException) as down:
        memory.top_memory_pods(TopPodsQuery(limit=3, metrics_wait_seconds=0.5, metrics_poll_seconds=0.2))
    assert down.value.status == 503  # retryable: the activity's retry policy takes it from here
