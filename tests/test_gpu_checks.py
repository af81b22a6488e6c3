"""GPU checks against the simulated cluster: inventory, device plugin, nvidia-smi probe, pending pods.

Activities run in Temporal's ActivityEnvironment (real activity context: heartbeats, info) with a
real `kubernetes` client talking to the simulator over HTTP.
"""

from __future__ import annotations

import re

import pytest
from kubernetes import client as k8s
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube.gpu_probes import KubeGpuProbes, pod_name
from activities.kube.gpus import KubeGpus
from activities.kube.gpus_models import (
    DevicePluginQuery,
    GpuInventoryQuery,
    GpuPendingPodsQuery,
    GpuTestPodRequest,
    NodeGpuProbeRequest,
)
from simulator.server import SimulatedCluster
from tests.helpers.audit import target

GPU_NODES = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
PROBE_NAMESPACE = "kube-system"


@pytest.fixture
def gpus(kube_api: k8s.ApiClient) -> KubeGpus:
    return KubeGpus(kube_api)


@pytest.fixture
def probes(kube_api: k8s.ApiClient) -> KubeGpuProbes:
    return KubeGpuProbes(kube_api)


def run(activity, arg):  # noqa: ANN001, ANN201 - thin helper over ActivityEnvironment
    return ActivityEnvironment().run(activity, arg)


def probe_pods(kube_api: k8s.ApiClient) -> list[str]:
    pods = (
        k8s.CoreV1Api(kube_api)
        .list_pod_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=llm-runbooks")
        .items
    )
    return [p.metadata.name for p in pods]


def pod_requests(simulator: SimulatedCluster, name: str) -> list[tuple[str, int]]:
    """(verb, HTTP code) of every write request to pod `name`, refused ones too."""
    return [(e.verb, e.code) for e in simulator.audit() if e.resource == "pods" and target(e) == name]


def probe(probes: KubeGpuProbes, node: str, incident: str = "inc-gpu-1") -> object:
    req = NodeGpuProbeRequest(incident_id=incident, node=node, timeout_seconds=30, poll_seconds=0.1)
    return run(probes.probe_node_gpus, req)


# ---- baseline -------------------------------------------------------------------------------


def test_inventory_shows_every_gpu_node_and_who_holds_gpus(gpus: KubeGpus, kube_api: k8s.ApiClient) -> None:
    inventory = run(gpus.gpu_inventory, GpuInventoryQuery())
    assert sorted(n.node for n in inventory.nodes) == GPU_NODES
    assert all((n.capacity, n.allocatable) == (8, 8) for n in inventory.nodes)
    assert inventory.total_capacity == 24 and inventory.nodes_with_problems == []
    # the GPUs held per node are exactly what the model pods scheduled there ask for
    pods = k8s.CoreV1Api(kube_api).list_pod_for_all_namespaces().items
    for node in inventory.nodes:
        on_node = [p for p in pods if p.spec.node_name == node.node and p.status.phase in ("Running", "Pending")]
        expected = sum(
            int((c.resources.limits or {}).get("nvidia.com/gpu", 0))
            for p in on_node
            for c in p.spec.containers
            if c.resources
        )
        assert node.in_use == expected == sum(p.gpus for p in node.pods)
    assert inventory.total_in_use > 0


def test_inventory_selector_is_configurable(gpus: KubeGpus) -> None:
    for selector in ("nvidia.com/gpu=true", "node-type=gpu"):
        inventory = run(gpus.gpu_inventory, GpuInventoryQuery(node_selector=selector))
        assert sorted(n.node for n in inventory.nodes) == GPU_NODES
    assert run(gpus.gpu_inventory, GpuInventoryQuery(node_selector="node-type=tpu")).nodes == []


def test_device_plugin_is_healthy_in_baseline(gpus: KubeGpus) -> None:
    health = run(gpus.device_plugin_health, DevicePluginQuery())
    assert health.found and health.healthy, health.problems
    assert (health.desired, health.ready, health.updated) == (3, 3, 3)
    assert sorted(p.node for p in health.pods) == GPU_NODES


def test_missing_device_plugin_is_a_diagnosis(gpus: KubeGpus) -> None:
    health = run(gpus.device_plugin_health, DevicePluginQuery(daemonset="gpu-plugin-that-is-not-there"))
    assert not health.found and not health.healthy
    assert "not found" in health.problems[0]


def test_probe_reads_every_gpu_and_leaves_no_pod(
    probes: KubeGpuProbes, simulator: SimulatedCluster, kube_api: k8s.ApiClient
) -> None:
    result = probe(probes, "gpu-node-1")
    assert result.completed and result.healthy, result.reasons
    assert result.report.expected_gpus == 8
    assert [g.index for g in result.report.gpus] == list(range(8))
    assert all(g.name == "NVIDIA A100-SXM4-80GB" for g in result.report.gpus)
    assert result.pod_name == pod_name("gpu-probe", "inc-gpu-1", "gpu-node-1", "driver-check")
    assert probe_pods(kube_api) == []
    assert pod_requests(simulator, result.pod_name) == [("create", 201), ("delete", 200)]


def test_retried_probe_adopts_the_pod_of_the_crashed_attempt(
    probes: KubeGpuProbes, simulator: SimulatedCluster, kube_api: k8s.ApiClient
) -> None:
    """A worker that died mid-probe left its pod; the retry finishes that pod instead of making another."""
    req = NodeGpuProbeRequest(incident_id="inc-retry", node="gpu-node-2", timeout_seconds=30, poll_seconds=0.1)
    name = pod_name("gpu-probe", req.incident_id, req.node, req.purpose)
    k8s.CoreV1Api(kube_api).create_namespaced_pod(PROBE_NAMESPACE, probes._probe_pod(name, req))

    result = run(probes.probe_node_gpus, req)

    assert result.pod_name == name and result.healthy, result.reasons
    # the crashed attempt's create, the retry's create refused as a duplicate, one delete
    assert pod_requests(simulator, name) == [("create", 201), ("create", 409), ("delete", 200)]
    assert probe_pods(kube_api) == []


def test_probe_of_an_unknown_node_fails_without_creating_anything(
    probes: KubeGpuProbes, simulator: SimulatedCluster
) -> None:
    with pytest.raises(ApplicationError) as caught:
        probe(probes, "gpu-node-9")
    assert caught.value.non_retryable and "gpu-node-9" in str(caught.value)
    assert [e for e in simulator.audit() if e.resource == "pods"] == []


def test_bad_request_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError):
        NodeGpuProbeRequest(incident_id="", node="gpu-node-1")
    with pytest.raises(ValueError):
        GpuTestPodRequest(incident_id="inc", gpus=0)


def test_gpu_test_pod_schedules_runs_and_is_removed(
    probes: KubeGpuProbes, simulator: SimulatedCluster, kube_api: k8s.ApiClient
) -> None:
    result = run(probes.gpu_test_pod, GpuTestPodRequest(incident_id="inc-gpu-1", timeout_seconds=30, poll_seconds=0.1))
    assert result.scheduled and result.succeeded, (result.problem, result.scheduling_message)
    assert result.node in GPU_NODES
    assert result.report is not None and len(result.report.gpus) == 1 and result.report.healthy
    assert probe_pods(kube_api) == []
    assert pod_requests(simulator, result.pod_name) == [("create", 201), ("delete", 200)]


def test_probe_that_does_not_finish_in_time_says_so_and_cleans_up(
    probes: KubeGpuProbes, kube_api: k8s.ApiClient
) -> None:
    result = run(
        probes.probe_node_gpus,
        NodeGpuProbeRequest(incident_id="inc-slow", node="gpu-node-1", timeout_seconds=0.2, poll_seconds=0.05),
    )
    assert not result.completed and not result.healthy and result.report is None
    assert re.match(rf"pod {result.pod_name} did not finish within 0\.2s \((Pending|Running)", result.problem)
    assert result.reasons == [result.problem]
    assert probe_pods(kube_api) == []


def test_unpullable_probe_image_stops_at_once_and_cleans_up(
    kube_api: k8s.ApiClient, simulator: SimulatedCluster
) -> None:
    image = "nvidia/cuda:0.0-does-not-exist"
    simulator.behaviour.missing_images.add(image)
    probes = KubeGpuProbes(kube_api, probe_image=image)
    with pytest.raises(ApplicationError) as caught:
        probe(probes, "gpu-node-1")
    assert caught.value.non_retryable
    assert any(f"cannot start: {why}" in str(caught.value) for why in ("ErrImagePull", "ImagePullBackOff"))
    assert image in str(caught.value)
    assert probe_pods(kube_api) == []


def test_no_pods_wait_for_gpus_in_baseline(gpus: KubeGpus) -> None:
    assert run(gpus.gpu_pending_pods, GpuPendingPodsQuery()).pods == []


# ---- faults ---------------------------------------------------------------------------------


@pytest.mark.scenario("gpu-unavailable")
def test_gpu_unavailable_shows_in_inventory_and_plugin_while_the_gpus_answer(
    probes: KubeGpuProbes, gpus: KubeGpus, kube_api: k8s.ApiClient
) -> None:
    """The device plugin lost its kubelet registration: no GPUs advertised, yet the GPUs are fine."""
    inventory = run(gpus.gpu_inventory, GpuInventoryQuery())
    assert [n.capacity for n in inventory.nodes] == [0, 0, 0]
    assert all(any("no nvidia.com/gpu capacity" in p for p in n.problems) for n in inventory.nodes)

    plugin = run(gpus.device_plugin_health, DevicePluginQuery())
    assert not plugin.healthy
    assert any(p.reason == "CrashLoopBackOff" for p in plugin.pods), plugin.pods

    # capacity 0 is not the GPU count: the probe holds nvidia-smi to GPU feature discovery's label
    result = probe(probes, "gpu-node-1")
    assert result.healthy, result.reasons
    assert len(result.report.gpus) == result.report.expected_gpus == 8
    assert probe_pods(kube_api) == []


@pytest.mark.scenario("gpu-unavailable")
def test_gpu_test_pod_cannot_schedule_while_no_gpu_is_advertised(
    probes: KubeGpuProbes, kube_api: k8s.ApiClient
) -> None:
    result = run(probes.gpu_test_pod, GpuTestPodRequest(incident_id="inc-gpu-2", timeout_seconds=1, poll_seconds=0.1))
    assert not result.scheduled and not result.succeeded and result.node is None
    assert "Insufficient nvidia.com/gpu" in result.scheduling_message
    assert result.problem.startswith(f"pod {result.pod_name} did not finish within 1s (Pending: ")
    assert probe_pods(kube_api) == []


@pytest.mark.scenario("gpu-unavailable:driver")
def test_probe_reports_the_node_whose_driver_is_not_loaded(probes: KubeGpuProbes, kube_api: k8s.ApiClient) -> None:
    results = {node: probe(probes, node) for node in GPU_NODES}
    assert [n for n, r in results.items() if not r.healthy] == ["gpu-node-3"]
    failed = results["gpu-node-3"]
    assert failed.completed and failed.exit_code == 9
    assert failed.report.gpus == []
    assert failed.report.node_failure.startswith("NVIDIA driver not loaded or not responding: NVIDIA-SMI has failed")
    assert failed.reasons == [failed.report.node_failure]
    assert probe_pods(kube_api) == []


@pytest.mark.scenario("gpu-hardware-failure")
def test_probe_finds_the_faulty_gpu_on_the_right_node(
    probes: KubeGpuProbes, simulator: SimulatedCluster, kube_api: k8s.ApiClient
) -> None:
    results = {node: probe(probes, node) for node in GPU_NODES}
    faulty = {node: r for node, r in results.items() if not r.healthy}
    assert len(faulty) == 1, {n: r.reasons for n, r in results.items()}
    node, result = next(iter(faulty.items()))
    bad = result.report.faulty_gpus
    assert len(bad) == 1 and bad[0].ecc_uncorrected
    assert any("uncorrected ECC" in r for r in bad[0].reasons)
    assert (node, bad[0].uuid) == staged_faulty_gpu(simulator)
    assert probe_pods(kube_api) == []


@pytest.mark.scenario("model-deploy-failure:insufficient-gpu")
def test_pending_pods_name_the_pod_waiting_for_gpus(gpus: KubeGpus, kube_api: k8s.ApiClient) -> None:
    pending = run(gpus.gpu_pending_pods, GpuPendingPodsQuery())
    assert pending.pods, "no pod found waiting for nvidia.com/gpu"
    core = k8s.CoreV1Api(kube_api)
    for pod in pending.pods:
        live = core.read_namespaced_pod(pod.name, pod.namespace)
        assert live.status.phase == "Pending" and pod.gpus > 0
        assert "Insufficient nvidia.com/gpu" in pod.message and pod.since
    assert pending.gpus_wanted == sum(p.gpus for p in pending.pods)
    assert run(gpus.gpu_pending_pods, GpuPendingPodsQuery(namespace="litellm")).pods == []


def staged_faulty_gpu(simulator: SimulatedCluster) -> tuple[str, str]:
    """The node and GPU the scenario broke, from the simulator's own GPU model."""
    from simulator.gpu import GpuHealth

    broken = [
        (node, gpu.uuid)
        for node, gpus in simulator.behaviour.gpus.items()
        for gpu in gpus.gpus
        if gpu.health is not GpuHealth.OK
    ]
    assert len(broken) == 1, broken
    return broken[0]
