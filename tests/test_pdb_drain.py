"""Draining a GPU node whose LLM pods a PodDisruptionBudget protects.

The simulator answers an eviction 429 while a budget allows no disruption, as the API server
does. The drain goes as kubectl's: the other pods are evicted meanwhile, the refused ones retried
until the drain timeout, each eviction on the incident's record as it happens; a budget that
never clears hands the incident over to a human, naming the pods left and the budgets.
Real dev server, the worker in-process, the simulated cluster (30x), the Slack stand-in.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.testing import ActivityEnvironment

from activities.kube.nodes import KubeNodes
from activities.kube.nodes_models import NodeCordon, NodeEvictionRound
from simulator.server import SimulatedCluster
from standins.slack import SlackStandIn
from tests.helpers.gpu_unavailable import (
    CHANNEL,
    FAULTY_NODE,
    approve_cordon,
    evictions,
    gpu_input,
    start,
    workload_pods_on,
)
from tests.helpers.incident_queries import state_of, timeline_of, until
from tests.helpers.waiting import wait_for
from worker.worker import build_worker
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def budget(kube_api: k8s.ApiClient, namespace: str, name: str, app: str, min_available: int) -> None:
    k8s.PolicyV1Api(kube_api).create_namespaced_pod_disruption_budget(
        namespace,
        k8s.V1PodDisruptionBudget(
            metadata=k8s.V1ObjectMeta(name=name),
            spec=k8s.V1PodDisruptionBudgetSpec(
                min_available=min_available, selector=k8s.V1LabelSelector(match_labels={"app": app})
            ),
        ),
    )


def relax_after(
    simulator: SimulatedCluster, kube_api: k8s.ApiClient, seconds: float, namespace: str, name: str, min_available: int
) -> threading.Thread:
    """Lower the budget once `seconds` of simulated time have passed (a replacement became Ready)."""
    due = simulator.behaviour.now() + seconds

    def relax() -> None:
        while simulator.behaviour.now() < due:
            time.sleep(0.05)
        k8s.PolicyV1Api(kube_api).patch_namespaced_pod_disruption_budget(
            name, namespace, {"spec": {"minAvailable": min_available}}
        )

    thread = threading.Thread(target=relax, daemon=True)
    thread.start()
    return thread


@pytest.mark.scenario("gpu-hardware-failure")
def test_eviction_blocked_by_a_budget_is_429_and_the_round_evicts_the_others(simulator, kube_api):
    core = k8s.CoreV1Api(kube_api)
    budget(kube_api, "production", "llama-3-8b", "llama-3-8b", 4)  # all 4 replicas must stay
    llama = next(
        p
        for p in core.list_namespaced_pod("production", label_selector="app=llama-3-8b").items
        if p.spec.node_name == FAULTY_NODE
    )
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(
            llama.metadata.name,
            "production",
            k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=llama.metadata.name, namespace="production")),
        )
    assert refused.value.status == 429
    # one llama pod crash-loops on the ECC GPU: 3 or 4 healthy of the 4 the budget wants, as it comes and goes
    assert re.search(
        r"The disruption budget llama-3-8b needs 4 healthy pods and has [34] currently", refused.value.body
    ), refused.value.body

    def status():  # the disruption controller's, as `kubectl get pdb` shows it
        pdb = k8s.PolicyV1Api(kube_api).read_namespaced_pod_disruption_budget("llama-3-8b", "production")
        return pdb.status and (pdb.status.current_healthy, pdb.status.desired_healthy, pdb.status.disruptions_allowed)

    wait_for(lambda: status() and status()[1:] == (4, 0), what="the budget's status")

    fix, env = KubeNodes(kube_api), ActivityEnvironment()
    env.run(fix.cordon_node, NodeCordon(node=FAULTY_NODE, change_key="inc-pdb/cordon", reason="test"))
    on_node = workload_pods_on(kube_api, FAULTY_NODE)
    step = env.run(fix.evict_node_pods, NodeEvictionRound(node=FAULTY_NODE))
    blocked = {(b.namespace, b.name) for b in step.blocked}
    assert blocked and blocked == {p for p in on_node if p[1].startswith("llama-3-8b-")}
    assert {b.budgets[0] for b in step.blocked} == {"production/llama-3-8b"}
    assert {(c.namespace, c.name) for c in step.evicted} == on_node - blocked, "the others went meanwhile"
    assert workload_pods_on(kube_api, FAULTY_NODE) == blocked


@pytest.mark.scenario("gpu-hardware-failure")
async def test_drain_waits_out_a_budget_that_clears_after_60s_and_records_every_eviction(
    temporal_dev, task_queue, simulator, kube_api, slack_client
):
    client = temporal_dev.client
    budget(kube_api, "production", "llama-3-8b", "llama-3-8b", 4)
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, gpu_input(drain_timeout_seconds=30, eviction_retry_seconds=0.3), task_queue)
            await approve_cordon(handle, FAULTY_NODE)
            on_node = workload_pods_on(kube_api, FAULTY_NODE)
            relax_after(simulator, kube_api, 60, "production", "llama-3-8b", 3)  # then one at a time
            report = await handle.result()
            state, timeline = await state_of(handle), await timeline_of(handle)

    assert state.status == "resolved", state.resolution
    assert workload_pods_on(kube_api, FAULTY_NODE) == set()
    assert evictions(simulator) == dict.fromkeys(on_node, 1), "each pod evicted once"
    recorded = [(c.namespace, c.name) for c in state.changes if c.action == "evict pod (drain)"]
    assert sorted(recorded) == sorted(on_node), "every eviction on the record, once"
    for ns, name in on_node:
        assert f"| evict pod (drain) | Pod {ns}/{name} |" in report
    # the budget's 429s were retried, not failed: the other pods went first
    order = [(e.namespace, e.name) for e in simulator.audit() if e.verb == "evict" and e.code < 300]
    refused = [e for e in simulator.audit() if e.verb == "evict" and e.code == 429]
    assert refused and order[-1][1].startswith("llama-3-8b-") and not order[0][1].startswith("llama-3-8b-")
    notes = [n for e in timeline for n in e.details]
    assert any("refused by a PodDisruptionBudget" in n for n in notes)


@pytest.mark.scenario("gpu-hardware-failure")
async def test_drain_against_a_budget_that_never_clears_hands_over_naming_pods_and_budgets(
    temporal_dev, task_queue, simulator, kube_api, slack_standin: SlackStandIn, slack_client
):
    client = temporal_dev.client
    budget(kube_api, "production", "llama-3-8b", "llama-3-8b", 4)
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, gpu_input(drain_timeout_seconds=3, eviction_retry_seconds=0.3), task_queue)
            await approve_cordon(handle, FAULTY_NODE)
            on_node = workload_pods_on(kube_api, FAULTY_NODE)
            blocked = {p for p in on_node if p[1].startswith("llama-3-8b-")}

            state = await until(handle, lambda s: s.status == "handed-over", "the hand-over of the blocked drain", 30)
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="by hand"))
            await handle.result()

    assert workload_pods_on(kube_api, FAULTY_NODE) == blocked, "the others were evicted meanwhile"
    assert k8s.CoreV1Api(kube_api).read_node(FAULTY_NODE).spec.unschedulable is True, "left cordoned for the human"
    recorded = {(c.namespace, c.name) for c in state.changes if c.action == "evict pod (drain)"}
    assert recorded == on_node - blocked, "the evictions done are on the record"
    # the hand-over's page (a later one may follow: the GPU still fails the verification)
    reason = next(e.reason for e in state.escalations if "drain of" in e.reason)
    assert "production/llama-3-8b" in reason and all(f"{ns}/{name}" in reason for ns, name in blocked)
    told = [m["text"] for m in slack_standin.messages(CHANNEL) if "Handed over" in m["text"]]
    assert told and "Blocking budgets: production/llama-3-8b" in told[0]
    assert all(name in told[0] for _, name in blocked)


@pytest.mark.scenario("gpu-hardware-failure")
def test_a_pod_under_two_budgets_is_refused_500_for_good_and_the_round_evicts_the_others(simulator, kube_api):
    budget(kube_api, "production", "llama-3-8b", "llama-3-8b", 1)
    budget(kube_api, "production", "llama-3-8b-too", "llama-3-8b", 1)  # a second budget over the same pods
    fix, env = KubeNodes(kube_api), ActivityEnvironment()
    env.run(fix.cordon_node, NodeCordon(node=FAULTY_NODE, change_key="inc-two-pdb/cordon", reason="test"))
    on_node = workload_pods_on(kube_api, FAULTY_NODE)
    step = env.run(fix.evict_node_pods, NodeEvictionRound(node=FAULTY_NODE))

    covered = {p for p in on_node if p[1].startswith("llama-3-8b-")}
    assert covered and {(r.namespace, r.name) for r in step.refused} == covered and step.blocked == []
    for refused in step.refused:  # the API server's NewInternalError, in its words, no raw headers
        assert (refused.code, refused.reason) == (500, "InternalError") and refused.several_budgets
        assert refused.message.startswith("Internal error occurred: This pod has more than one PodDisruptionBudget")
        assert "HTTP response headers" not in str(refused)
    assert {(c.namespace, c.name) for c in step.evicted} == on_node - covered, "the others went all the same"
    refusals = [e for e in simulator.audit() if e.verb == "evict" and e.code == 500]
    assert len(refusals) == len(covered), "each tried once: a 500 is not retried like a 429"


@pytest.mark.scenario("gpu-hardware-failure")
async def test_drain_of_a_pod_under_two_budgets_hands_over_at_once_keeping_the_evictions_on_record(
    temporal_dev, task_queue, simulator, kube_api, slack_standin: SlackStandIn, slack_client
):
    client = temporal_dev.client
    budget(kube_api, "production", "llama-3-8b", "llama-3-8b", 1)
    budget(kube_api, "production", "llama-3-8b-too", "llama-3-8b", 1)
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            # a drain timeout the test never reaches: the 500s must end the drain at once, not wait it out
            handle = await start(client, gpu_input(drain_timeout_seconds=600, eviction_retry_seconds=0.3), task_queue)
            await approve_cordon(handle, FAULTY_NODE)
            on_node = workload_pods_on(kube_api, FAULTY_NODE)
            covered = {p for p in on_node if p[1].startswith("llama-3-8b-")}

            state = await until(
                handle, lambda s: s.status == "handed-over", "the hand-over of the drain the API server refused", 60
            )
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="by hand"))
            await handle.result()

    assert state.failure is None, "handed over, not failed"
    assert workload_pods_on(kube_api, FAULTY_NODE) == covered
    recorded = {(c.namespace, c.name) for c in state.changes if c.action == "evict pod (drain)"}
    assert recorded == on_node - covered, "the evictions made are on the record"
    refusals = [e for e in simulator.audit() if e.verb == "evict" and e.code == 500]
    assert len(refusals) == len(covered), "not retried five times"
    told = [m["text"] for m in slack_standin.messages(CHANNEL) if "Handed over" in m["text"]]
    assert told and "more than one PodDisruptionBudget" in told[0] and "kubectl get pdb -n production" in told[0]
    assert all(name in told[0] for _, name in covered)
