"""SOP-003 end to end: the real Temporal dev server, the worker in-process, the simulated cluster in
its `gpu-unavailable`, `gpu-unavailable:driver` and `gpu-hardware-failure` faults, and the Slack Web API
stand-in.

Set RUNBOOKS_SAVE_HISTORIES=1 to (re)write tests/histories/gpu_unavailable_*.json from this run, the
histories tests/test_replay.py replays against the current workflow code.
"""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube.daemonsets import KubeDaemonSets
from activities.kube.daemonsets_models import DaemonSetRestart, DaemonSetRolloutWait
from activities.kube.models import RESTARTED_AT
from activities.kube.nodes import KubeNodes
from activities.kube.nodes_models import (
    CORDONED_BY_ANNOTATION,
    NodeCordon,
    NodeEvictionRound,
    NodeUncordon,
    PodsGoneWait,
)
from simulator.gpu import GpuHealth
from simulator.server import SimulatedCluster
from tests.helpers.audit import writes
from tests.helpers.fixtures_simulator import TEST_TIME_SCALE
from tests.helpers.gpu_unavailable import (
    CHANNEL,
    FAULTY_NODE,
    approve_cordon,
    evictions,
    gpu_input,
    start,
    workload_pods_on,
)
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import state_of, timeline_of
from standins.slack import SlackStandIn
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.playbooks.gpu_nodes.models import cordon_gate
from workflows.incident.state import IncidentState
from workflows.incident.models import (
    SIGNAL_ROLLBACK,
    UPDATE_HUMAN_ACTION,
    HumanAction,
    RollbackRequest,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

GPU_NODES = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
PLUGIN_NS, PLUGIN = "kube-system", "nvidia-device-plugin-daemonset"
SOP_STEPS = [
    "1. Verify problem scope",
    "2. Check driver status",
    "3. Restart device plugin",
    "4. Verify GPU visibility",
]


def plugin_restarts(simulator) -> int:
    return sum(
        1
        for e in writes(simulator)
        if e.resource == "daemonsets" and e.verb == "patch" and RESTARTED_AT in json.dumps(e.body)
    )


def node_patches(simulator) -> list[tuple[str, object]]:
    """(node, spec.unschedulable written) for every node patch."""
    return [
        (e.name, (e.body.get("spec") or {}).get("unschedulable"))
        for e in writes(simulator)
        if e.resource == "nodes" and e.verb == "patch"
    ]


def our_pods_balanced(simulator) -> bool:
    """Every probe / test pod the playbook created was deleted again, each exactly once."""
    created = Counter(
        e.body["metadata"]["name"] for e in writes(simulator) if e.resource == "pods" and e.verb == "create"
    )
    deleted = Counter(e.name for e in writes(simulator) if e.resource == "pods" and e.verb == "delete")
    return bool(created) and created == deleted and set(created.values()) == {1}


def gpu_capacity(kube_api: k8s.ApiClient) -> dict[str, str]:
    nodes = k8s.CoreV1Api(kube_api).list_node(label_selector="nvidia.com/gpu.present=true").items
    return {n.metadata.name: n.status.capacity.get("nvidia.com/gpu") for n in nodes}


def llmd_phases(kube_api: k8s.ApiClient) -> dict[str, str]:
    items = k8s.CustomObjectsApi(kube_api).list_cluster_custom_object(
        "inference.llm-d.io", "v1alpha1", "llmdeployments"
    )["items"]
    return {f'{d["metadata"]["namespace"]}/{d["metadata"]["name"]}': d["status"]["phase"] for d in items}


def node(kube_api: k8s.ApiClient, name: str) -> k8s.V1Node:
    return k8s.CoreV1Api(kube_api).read_node(name)


def staged_faulty_gpu(simulator) -> str:
    return next(g.uuid for g in simulator.behaviour.gpus[FAULTY_NODE].gpus if g.health is not GpuHealth.OK)


@pytest.mark.scenario("gpu-unavailable")
async def test_sop_003_restores_gpus_by_restarting_the_device_plugin(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    assert gpu_capacity(kube_api) == dict.fromkeys(GPU_NODES, "0")

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, gpu_input(), task_queue)
            report = await handle.result()
            timeline = await timeline_of(handle)
            state = await state_of(handle)
            await save_history(handle, "gpu_unavailable_plugin_restart_heals")

    # healed by the one remedy: GPUs advertised again on every node, exactly one plugin restart, nothing else
    assert simulator.behaviour.active_faults() == []
    assert gpu_capacity(kube_api) == dict.fromkeys(GPU_NODES, "8")
    assert plugin_restarts(simulator) == 1
    assert node_patches(simulator) == [] and evictions(simulator) == Counter()
    assert our_pods_balanced(simulator), "every probe and test pod removed"
    assert {e.resource for e in writes(simulator)} == {"daemonsets", "pods"}

    assert [e.title for e in timeline if e.kind == "step"] == [*SOP_STEPS, "Verification"]
    assert state.status == "resolved" and state.resolved_by == "automation"
    assert state.approvals == [] and state.escalation_level == 0
    assert "GPU test pod passed" in state.resolution and "every LLMDeployment Ready" in state.resolution
    assert all(phase == "Ready" for phase in llmd_phases(kube_api).values())

    # the report carries the restart with the value it replaced (none) and the stamp it set
    ds = k8s.AppsV1Api(kube_api).read_namespaced_daemon_set(PLUGIN, PLUGIN_NS)
    stamp = ds.spec.template.metadata.annotations[RESTARTED_AT]
    (change,) = state.changes
    assert (change.kind, change.name, change.before, change.after, change.applied) == (
        "DaemonSet",
        PLUGIN,
        None,
        stamp,
        True,
    )
    # ... and the finding of this run that justified it, on the change and in the report's "Because"
    assert "0/24 GPUs allocatable" in change.finding and "no nvidia.com/gpu capacity" in change.finding
    assert change.finding in report
    assert (
        f"| restart daemonset | DaemonSet {PLUGIN_NS}/{PLUGIN} | spec.template.metadata.annotations"
        f"[{RESTARTED_AT}] |  | {stamp} | applied |" in report
    )
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("GPU capacity" in t and "capacity 0" in t for t in texts)
    assert any("Driver check" in t and "8 GPUs healthy" in t for t in texts)
    assert any("Resolved" in t for t in texts)


# (scenario, the node it breaks, what nvidia-smi says about it, rollout timeout: a node without a driver
# never runs the plugin, so its rollout waits out the SOP's timeout, shortened here)
FAULTY_NODES = [
    pytest.param("gpu-hardware-failure", "gpu-node-2", "uncorrected ECC", 20, id="ecc-error"),
    pytest.param("gpu-unavailable:driver", "gpu-node-3", "NVIDIA driver not loaded", 2, id="driver-not-loaded"),
]


@pytest.mark.parametrize(("scenario", "faulty", "diagnosis", "rollout_timeout"), FAULTY_NODES)
async def test_failing_gpu_node_is_cordoned_and_drained_after_approval_and_escalated(
    temporal_dev,
    task_queue: str,
    tmp_path,
    scenario: str,
    faulty: str,
    diagnosis: str,
    rollout_timeout: float,
    slack_standin: SlackStandIn,
    slack_client,
):
    client: Client = temporal_dev.client
    simulator = SimulatedCluster(
        scenario=scenario, time_scale=TEST_TIME_SCALE, kubeconfig_path=tmp_path / "kubeconfig"
    ).start()
    kube_api = kube_config.new_client_from_config(config_file=str(simulator.kubeconfig_path))
    try:
        async with httpx.AsyncClient() as http:
            async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
                handle = await start(client, gpu_input(plugin_rollout_timeout_seconds=rollout_timeout), task_queue)
                asked = await approve_cordon(handle, faulty)
                on_node = workload_pods_on(kube_api, faulty)
                report = await handle.result()
                timeline = await timeline_of(handle)
                state = await state_of(handle)
                name = scenario.replace(":", "_").replace("-", "_")
                await save_history(handle, f"gpu_unavailable_cordon_drain_{name}")

        # the plugin restart could not help (one restart when GPUs were missing, none when every GPU was still
        # advertised: nothing justified it); nvidia-smi named the fault; a human approved
        (gate,) = asked.pending_gates
        assert diagnosis in gate.question
        if scenario == "gpu-hardware-failure":
            assert staged_faulty_gpu(simulator) in gate.question
        assert asked.escalation_level == 1 and diagnosis in asked.escalations[0].reason
        assert plugin_restarts(simulator) == (0 if scenario == "gpu-hardware-failure" else 1)
        assert [(g.gate, g.approved) for g in state.approvals] == [(cordon_gate(faulty), True)]
        assert state.approvals[0].kind == "cordon-drain" and state.approvals[0].target == faulty
        assert state.changes and all(c.finding for c in state.changes), [c for c in state.changes if not c.finding]
        assert all(diagnosis in c.finding for c in state.changes if c.kind == "Node" or "evict" in c.action)

        # healed: the node cordoned and drained, each of its workload pods evicted exactly once, models back
        assert simulator.behaviour.active_faults() == []
        live = node(kube_api, faulty)
        assert live.spec.unschedulable is True and CORDONED_BY_ANNOTATION in live.metadata.annotations
        assert workload_pods_on(kube_api, faulty) == set()
        assert on_node and evictions(simulator) == Counter(dict.fromkeys(on_node, 1))
        assert node_patches(simulator) == [(faulty, True)]
        assert our_pods_balanced(simulator)
        assert all(phase == "Ready" for phase in llmd_phases(kube_api).values())

        assert [e.title for e in timeline if e.kind == "step"] == [
            *SOP_STEPS,
            "Node still failing: cordon and drain",
            "Verification",
        ]
        assert state.status == "resolved" and state.resolved_by == "automation"
        assert "every LLMDeployment Ready" in state.resolution
        assert f"{faulty} cordoned and drained, awaiting repair" in state.resolution

        # the report: the cordon with the value it replaced, every eviction, the escalation with the diagnosis
        assert f"| cordon node | Node {faulty} | spec.unschedulable |  | True | applied |" in report
        for ns, name in on_node:
            assert f"| evict pod (drain) | Pod {ns}/{name} | spec.nodeName | {faulty} |  | applied |" in report
        assert diagnosis in report.split("## Escalations")[1]
        texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
        assert any(
            f"Human only — {faulty}" in t
            and "requires approval from the incident commander" in t
            and "never reboots" in t
            for t in texts
        )
    finally:
        kube_api.close()
        simulator.stop()


@pytest.mark.scenario("gpu-hardware-failure")
async def test_failed_verification_uncordons_the_node_and_escalates(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client
):
    client: Client = temporal_dev.client
    original = node(kube_api, FAULTY_NODE).spec.unschedulable

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            # a GPU test asking more GPUs than any node has never passes: verification fails
            handle = await start(
                client, gpu_input(test_gpus=9, visibility_timeout_seconds=1, verification_timeout_seconds=2), task_queue
            )
            await approve_cordon(handle, FAULTY_NODE)

            async def rolled_back() -> IncidentState | None:
                state = await state_of(handle)
                return state if state.escalation_level >= 2 else None

            state = await wait_for_async(rolled_back, "the rollback and its escalation")
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="by hand"))
            report = await handle.result()
            await save_history(handle, "gpu_unavailable_failed_verification_rollback")

    # back to the recorded original, through the client; the cordon undone once, the evictions stay
    live = node(kube_api, FAULTY_NODE)
    assert live.spec.unschedulable == original is None
    assert CORDONED_BY_ANNOTATION not in (live.metadata.annotations or {})
    assert node_patches(simulator) == [(FAULTY_NODE, True), (FAULTY_NODE, None)]
    # every GPU was still advertised and the plugin healthy: nothing justified a plugin restart
    assert set(evictions(simulator).values()) == {1} and plugin_restarts(simulator) == 0
    assert all(c.finding for c in state.changes), [c for c in state.changes if not c.finding]
    undo = next(c for c in state.changes if c.action == "rollback: uncordon node")
    assert undo.finding.startswith("rollback verification failed")
    assert (undo.name, undo.before, undo.after) == (FAULTY_NODE, True, None)
    assert "SOP-003 did not restore GPU availability" in state.escalations[-1].reason
    assert "GPU test pod not run" in state.escalations[-1].reason
    assert f"| rollback: uncordon node | Node {FAULTY_NODE} | spec.unschedulable | True |  | applied |" in report


@pytest.mark.scenario("gpu-hardware-failure")
async def test_rollback_on_request_uncordons_without_escalating(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client
):
    client: Client = temporal_dev.client

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            # verification keeps waiting (its GPU test can never pass) while the rollback is asked for
            handle = await start(
                client,
                gpu_input(test_gpus=9, visibility_timeout_seconds=1, verification_timeout_seconds=60),
                task_queue,
            )
            await approve_cordon(handle, FAULTY_NODE)

            async def cordoned() -> bool:
                return bool(node(kube_api, FAULTY_NODE).spec.unschedulable)

            await wait_for_async(cordoned, "the cordon")
            await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="node is fine"))

            async def rolled_back() -> bool:
                return any(e.title == "Rollback" and e.ended_at for e in await timeline_of(handle))

            await wait_for_async(rolled_back, "the requested rollback")
            state = await state_of(handle)
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="by hand"))
            report = await handle.result()

    assert node(kube_api, FAULTY_NODE).spec.unschedulable is None
    assert node_patches(simulator) == [(FAULTY_NODE, True), (FAULTY_NODE, None)]
    assert state.escalation_level == 1, "only the diagnosis escalated; a requested rollback is not a failure"
    assert "requested by carol: node is fine" in report


@pytest.mark.scenario("baseline")
def test_remediation_writes_are_retry_safe_and_record_originals(simulator, kube_api: k8s.ApiClient):
    """The activities straight against the simulator: a retry writes nothing twice and keeps the original."""
    daemonsets, fix, env = KubeDaemonSets(kube_api), KubeNodes(kube_api), ActivityEnvironment()

    restart = DaemonSetRestart(restarted_at="2026-01-01T00:00:00Z", restarted_by="inc-1/restart")
    first, retry = env.run(daemonsets.restart_daemonset, restart), env.run(daemonsets.restart_daemonset, restart)
    assert (first.applied, retry.applied, first.before, retry.after) == (True, False, None, "2026-01-01T00:00:00Z")
    rollout = env.run(daemonsets.wait_for_daemonset_rollout, DaemonSetRolloutWait(timeout_seconds=20, poll_seconds=0.1))
    assert rollout.complete and rollout.updated == rollout.desired == 3, rollout.message

    cordon = NodeCordon(node=FAULTY_NODE, change_key="inc-1/cordon/gpu-node-2", reason="test")
    first, retry = env.run(fix.cordon_node, cordon), env.run(fix.cordon_node, cordon)
    assert (first.applied, first.before, first.after) == (True, None, True)
    assert (retry.applied, retry.before) == (False, None), "a retry still knows the original"
    other = env.run(fix.cordon_node, cordon.model_copy(update={"change_key": "someone-else"}))
    assert (other.applied, other.before) == (False, True), "not ours: nothing of ours to undo"

    on_node = workload_pods_on(kube_api, FAULTY_NODE)
    # kubectl drain's two steps: evict what drain evicts, then wait until those pods are gone
    evicted = env.run(fix.evict_node_pods, NodeEvictionRound(node=FAULTY_NODE))
    assert not evicted.blocked and not evicted.left and evicted.daemonset_pods
    assert {(c.namespace, c.name) for c in evicted.evicted} == on_node
    gone = env.run(
        fix.wait_for_pods_gone,
        PodsGoneWait(node=FAULTY_NODE, pods=evicted.evicted_pods, timeout_seconds=10, poll_seconds=0.1),
    )
    assert gone.left == [] and workload_pods_on(kube_api, FAULTY_NODE) == set()
    assert env.run(fix.evict_node_pods, NodeEvictionRound(node=FAULTY_NODE)).evicted == []
    assert evictions(simulator) == Counter(dict.fromkeys(on_node, 1))

    undo = NodeUncordon(node=FAULTY_NODE, original=first.before)
    done, again = env.run(fix.uncordon_node, undo), env.run(fix.uncordon_node, undo)
    assert (done.applied, done.before, done.after, again.applied) == (True, True, None, False)
    assert node(kube_api, FAULTY_NODE).spec.unschedulable is None
    assert node_patches(simulator) == [(FAULTY_NODE, True), (FAULTY_NODE, None)]

    # errors retrying cannot fix stop at once, with words an on-call engineer acts on
    k8s.CoreV1Api(kube_api).patch_node("gpu-node-3", {"spec": {"unschedulable": True}})
    for call, arg, words in [
        (fix.uncordon_node, NodeUncordon(node="gpu-node-3"), "not by this incident"),
        (fix.evict_node_pods, NodeEvictionRound(node="gpu-node-1"), "not cordoned"),
        (fix.cordon_node, NodeCordon(node="gpu-node-9", change_key="k"), "gpu-node-9"),
    ]:
        with pytest.raises(ApplicationError) as caught:
            env.run(call, arg)
        assert caught.value.non_retryable and words in str(caught.value)
