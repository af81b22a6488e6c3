"""The simulated cluster behaves as real kubectl expects: rollouts, drains, top, logs, describe."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from tests.helpers.waiting import wait_for

KUBECTL = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "kubectl")


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=90,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    return run


def _owned_replicasets(apps: client.AppsV1Api, ns: str, name: str) -> list[client.V1ReplicaSet]:
    return [
        rs
        for rs in apps.list_namespaced_replica_set(ns).items
        if rs.metadata.owner_references and rs.metadata.owner_references[0].name == name
    ]


def test_rollout_restart_moves_the_deployment_to_a_new_replicaset(kubectl, kube_api):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    before = {p.metadata.name for p in core.list_namespaced_pod("production", label_selector="app=llama-3-8b").items}
    assert len(before) == 4

    kubectl("rollout", "restart", "deployment/llama-3-8b", "-n", "production")
    status = kubectl("rollout", "status", "deployment/llama-3-8b", "-n", "production", "--timeout=60s")

    assert 'deployment "llama-3-8b" successfully rolled out' in status.stdout
    deploy = apps.read_namespaced_deployment("llama-3-8b", "production")
    assert "kubectl.kubernetes.io/restartedAt" in deploy.spec.template.metadata.annotations
    assert deploy.status.updated_replicas == deploy.status.ready_replicas == 4
    sets = sorted(
        _owned_replicasets(apps, "production", "llama-3-8b"),
        key=lambda rs: int(rs.metadata.annotations["deployment.kubernetes.io/revision"]),
    )
    assert [rs.spec.replicas for rs in sets] == [0, 4]
    pods = core.list_namespaced_pod("production", label_selector="app=llama-3-8b").items
    assert len(pods) == 4 and not before & {p.metadata.name for p in pods}
    new_hash = sets[-1].metadata.labels["pod-template-hash"]
    assert all(p.metadata.labels["pod-template-hash"] == new_hash for p in pods)
    assert all(p.metadata.name.startswith(f"llama-3-8b-{new_hash}-") for p in pods)


def test_rollout_restart_of_the_device_plugin_replaces_one_pod_per_gpu_node(kubectl, kube_api):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    selector = "name=nvidia-device-plugin-ds"
    before = {p.metadata.name for p in core.list_namespaced_pod("kube-system", label_selector=selector).items}

    kubectl("rollout", "restart", "ds", "nvidia-device-plugin-daemonset", "-n", "kube-system")
    status = kubectl("rollout", "status", "ds", "nvidia-device-plugin-daemonset", "-n", "kube-system", "--timeout=60s")

    assert 'daemon set "nvidia-device-plugin-daemonset" successfully rolled out' in status.stdout
    pods = core.list_namespaced_pod("kube-system", label_selector=selector).items
    assert sorted(p.spec.node_name for p in pods) == ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
    assert not before & {p.metadata.name for p in pods}
    ds = apps.read_namespaced_daemon_set("nvidia-device-plugin-daemonset", "kube-system")
    assert ds.status.updated_number_scheduled == ds.status.number_available == 3
    assert len({p.metadata.labels["controller-revision-hash"] for p in pods}) == 1


def test_drain_evicts_a_gpu_node_and_its_pods_come_back_elsewhere(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-node-2").items
    workloads = [p for p in on_node if p.metadata.owner_references[0].kind == "ReplicaSet"]
    assert workloads, "the baseline places model pods on gpu-node-2"

    drained = kubectl("drain", "gpu-node-2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s")

    assert "node/gpu-node-2 drained" in drained.stdout
    assert core.read_node("gpu-node-2").spec.unschedulable is True
    left = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-node-2").items
    assert [p.metadata.owner_references[0].kind for p in left] == ["DaemonSet"]
    custom = client.CustomObjectsApi(kube_api)

    def all_models_ready() -> bool:
        items = custom.list_cluster_custom_object("inference.llm-d.io", "v1alpha1", "llmdeployments")["items"]
        return all(i["status"]["phase"] == "Ready" for i in items)

    wait_for(all_models_ready, what="the drained models to be Ready elsewhere")
    for pod in workloads:
        app = pod.metadata.labels["app"]
        now = core.list_namespaced_pod(pod.metadata.namespace, label_selector=f"app={app}").items
        assert all(p.spec.node_name != "gpu-node-2" for p in now)
        assert pod.metadata.name not in {p.metadata.name for p in now}


def test_a_deleted_deployment_pod_is_recreated(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    victim = core.list_namespaced_pod("production", label_selector="app=mistral-7b").items[0]

    kubectl("delete", "pod", victim.metadata.name, "-n", "production")

    def replaced() -> bool:
        pods = core.list_namespaced_pod("production", label_selector="app=mistral-7b").items
        return (
            len(pods) == 2
            and victim.metadata.name not in {p.metadata.name for p in pods}
            and all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods)
        )

    wait_for(replaced, what="the replacement pod to be Ready")


def test_top_reports_pod_and_node_usage(kubectl):
    pods = kubectl("top", "pods", "-A", "--sort-by=memory").stdout.splitlines()
    nodes = kubectl("top", "nodes").stdout

    assert pods[0].split()[:2] == ["NAMESPACE", "NAME"]
    # the largest memory limit in the baseline is codellama-13b's 48Gi
    assert pods[1].split()[:2][0] == "mlops-serving" and pods[1].split()[1].startswith("codellama-13b-")
    assert any(line.split()[1].startswith("llama-3-8b-") for line in pods[1:])
    assert all(name in nodes for name in ("gpu-node-1", "gpu-node-2", "gpu-node-3", "cpu-node-1"))


@pytest.mark.scenario("service-outage")
def test_operator_logs_and_pod_state_under_service_outage(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod("llm-d-system", label_selector="app=llm-d-operator").items[0]

    logs = kubectl("logs", "-n", "llm-d-system", "deployment/llm-d-operator", "--tail=20").stdout
    described = kubectl("describe", "pod", pod.metadata.name, "-n", "llm-d-system").stdout

    assert "Reconciler error" in logs and "panic: runtime error" in logs
    assert len(logs.splitlines()) <= 20
    status = pod.status.container_statuses[0]
    assert status.restart_count >= 1 and not status.ready
    assert "Back-off restarting failed container" in described
    assert "Last State:     Terminated" in described and "Exit Code:    2" in described
    # between restarts the container waits in CrashLoopBackOff; it is never Ready
    listing = kubectl("get", "pods", "-n", "llm-d-system").stdout.splitlines()[1].split()
    assert listing[1] == "0/1" and listing[2] in ("CrashLoopBackOff", "Running", "Error")


@pytest.mark.scenario("model-deploy-failure:insufficient-gpu")
def test_describe_pending_pod_shows_failed_scheduling(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod("production", label_selector="app=mixtral-8x7b").items[0]

    described = kubectl("describe", "pod", pod.metadata.name, "-n", "production").stdout

    assert pod.status.phase == "Pending"
    assert "FailedScheduling" in described
    assert (
        "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 3 Insufficient nvidia.com/gpu."
    ) in described


def test_logs_of_a_healthy_model_server(kubectl):
    logs = kubectl("logs", "-n", "production", "deployment/llama-3-8b").stdout
    assert "Avg prompt throughput" in logs and "Meta-Llama-3-8B-Instruct" in logs
