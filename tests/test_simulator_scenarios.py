"""Every staged fault stays broken while nothing is done and heals when its procedure's remedy
is applied through the official Kubernetes client (see simulator/scenarios.py for the table)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes import client

from tests.helpers.waiting import wait_for
from simulator.kube import parse_quantity
from simulator.scenarios import SCENARIOS, make_fault
from simulator.server import SimulatedCluster

LLMD = ("inference.llm-d.io", "v1alpha1", "llmdeployments")
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
SOP_004_RESOURCES = {
    "spec": {
        "resources": {
            "requests": {"memory": "8Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
        }
    }
}
NOTHING_DONE = 1.5  # real seconds = 45 simulated seconds at the fixture's time scale


def restart(kube_api: client.ApiClient, namespace: str, name: str) -> None:
    """What `kubectl rollout restart` sends."""
    stamp = datetime.now(timezone.utc).isoformat()
    client.AppsV1Api(kube_api).patch_namespaced_deployment(
        name,
        namespace,
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
    )


def phases(kube_api: client.ApiClient) -> dict[str, str]:
    items = client.CustomObjectsApi(kube_api).list_cluster_custom_object(*LLMD)["items"]
    return {
        f'{i["metadata"]["namespace"]}/{i["metadata"]["name"]}': (i.get("status") or {}).get("phase") for i in items
    }


def llmd(kube_api: client.ApiClient, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(kube_api).get_namespaced_custom_object(*LLMD[:2], namespace, LLMD[2], name)


def patch_llmd(kube_api: client.ApiClient, namespace: str, name: str, body: dict) -> None:
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(*LLMD[:2], namespace, LLMD[2], name, body)


def all_ready(kube_api: client.ApiClient) -> bool:
    return all(phase == "Ready" for phase in phases(kube_api).values())


def healed(simulator: SimulatedCluster) -> bool:
    return simulator.behaviour.active_faults() == []


def health(simulator: SimulatedCluster, namespace: str, service: str) -> int:
    return httpx.get(f"{simulator.url}/simulated/health/{namespace}/{service}").status_code


def gpu_capacity(kube_api: client.ApiClient, node: str) -> int:
    return int(client.CoreV1Api(kube_api).read_node(node).status.capacity.get("nvidia.com/gpu", "0"))


def metric(simulator: SimulatedCluster, name: str, **labels: str) -> list[float]:
    text = httpx.get(f"{simulator.url}/metrics").text
    values = []
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values


def run_probe(kube_api: client.ApiClient, node: str, name: str = "gpu-probe") -> tuple[str, str]:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "smi",
                        "image": "nvidia/cuda:12.2.0-base-ubuntu22.04",
                        "command": [
                            "nvidia-smi",
                            "--query-gpu=index,uuid,temperature.gpu,power.draw,ecc.errors.uncorrected.volatile.total",
                            "--format=csv,noheader,nounits",
                        ],
                    }
                ],
            },
        },
    )
    phase = wait_for(
        lambda: (
            core.read_namespaced_pod(name, "default").status.phase in ("Succeeded", "Failed")
            and core.read_namespaced_pod(name, "default").status.phase
        ),
        what="the probe to finish",
    )
    return str(phase), core.read_namespaced_pod_log(name, "default")


def test_scenario_names_are_listed_and_an_unknown_one_is_refused():
    assert SCENARIOS[0] == "baseline" and "service-outage" in SCENARIOS
    assert len([s for s in SCENARIOS if s.startswith("model-deploy-failure:")]) == 4
    with pytest.raises(ValueError, match="known: baseline, service-outage"):
        make_fault("disk-full")


def test_baseline_is_healthy(simulator, kube_api):
    assert all_ready(kube_api) and healed(simulator)
    assert health(simulator, "production", "llama-3-8b") == 200
    phase, log = run_probe(kube_api, "gpu-node-1")
    rows = [line.split(", ") for line in log.splitlines()]
    assert phase == "Succeeded" and len(rows) == 8
    assert all(len(r) == 5 and r[4] == "0" and r[1].startswith("GPU-") for r in rows)


def test_an_unknown_fault_injected_into_a_running_cluster_changes_nothing(simulator, kube_api):
    with pytest.raises(ValueError, match="unknown scenario 'disk-full'"):
        simulator.inject("disk-full")
    assert all_ready(kube_api) and healed(simulator)


def test_a_fault_injected_into_a_running_cluster_takes_effect_once(simulator, kube_api):
    simulator.inject("service-outage")
    with pytest.raises(ValueError, match="already injected"):
        simulator.inject("service-outage")

    wait_for(lambda: set(phases(kube_api).values()) == {"Failed"}, what="the models to fail")
    core = client.CoreV1Api(kube_api)
    wait_for(
        lambda: any(
            s.restart_count
            for p in core.list_namespaced_pod("llm-d-system", label_selector="app=llm-d-operator").items
            for s in p.status.container_statuses
        ),
        what="the operator to crash",
    )
    assert simulator.behaviour.active_faults() == ["service-outage"]


@pytest.mark.scenario("service-outage")
def test_service_outage_heals_by_restarting_the_operator_then_the_models(simulator, kube_api):
    models = phases(kube_api)
    assert set(models.values()) == {"Failed"}
    assert health(simulator, "production", "llama-3-8b") == 503
    # a model restarted before the operator comes back up broken
    restart(kube_api, "production", "mistral-7b")
    time.sleep(NOTHING_DONE)
    assert set(phases(kube_api).values()) == {"Failed"} and not healed(simulator)

    restart(kube_api, "llm-d-system", "llm-d-operator")
    core = client.CoreV1Api(kube_api)
    wait_for(
        lambda: any(
            c.ready
            for p in core.list_namespaced_pod("llm-d-system", label_selector="app=llm-d-operator").items
            for c in p.status.container_statuses or []
        ),
        what="the operator to be Ready",
    )
    time.sleep(0.5)
    assert "Failed" in phases(kube_api).values(), "the models still need their own restart"
    for key, phase in phases(kube_api).items():
        if phase != "Ready":
            restart(kube_api, *key.split("/"))

    wait_for(lambda: all_ready(kube_api), what="every LLMDeployment Ready")
    wait_for(lambda: healed(simulator), what="the fault to clear")
    assert health(simulator, "production", "llama-3-8b") == 200


def _top_memory_pod(kube_api: client.ApiClient) -> tuple[str, str, float]:
    pods = client.CustomObjectsApi(kube_api).list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")
    usage = [
        (
            p["metadata"]["namespace"],
            p["metadata"]["name"],
            sum(parse_quantity(c["usage"]["memory"]) for c in p["containers"]),
        )
        for p in pods["items"]
    ]
    return max(usage, key=lambda u: u[2])


@pytest.mark.scenario("high-memory")
def test_high_memory_heals_by_smaller_batches_restart_and_fewer_replicas(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    ns, top, used = _top_memory_pod(kube_api)
    limit = parse_quantity(core.read_namespaced_pod(top, ns).spec.containers[0].resources.limits["memory"])
    assert used / limit > 0.9
    warnings = core.list_event_for_all_namespaces(field_selector="type=Warning").items
    assert any(e.reason == "OOMKilling" and "memory" in e.message.lower() for e in warnings)
    assert min(metric(simulator, "llm_d_memory_utilization", namespace="production")) > 90
    # lowering batch sizes alone is not enough
    for key in phases(kube_api):
        patch_llmd(kube_api, *key.split("/"), {"spec": {"serving": {"batchSize": 1, "maxConcurrency": 2}}})
    time.sleep(NOTHING_DONE)
    assert not healed(simulator)

    # smaller batches rolled every model, so the top consumer is re-read, as SOP-002 does
    ns_now, top_now, _used = _top_memory_pod(kube_api)
    core.delete_namespaced_pod(top_now, ns_now)
    for key in phases(kube_api):
        replicas = llmd(kube_api, *key.split("/"))["spec"]["replicas"]
        if replicas > 2:
            patch_llmd(kube_api, *key.split("/"), {"spec": {"replicas": replicas // 2}})

    wait_for(lambda: healed(simulator), what="the fault to clear")
    wait_for(lambda: all_ready(kube_api), what="every LLMDeployment Ready")
    assert llmd(kube_api, "production", "llama-3-8b")["spec"]["replicas"] == 2
    _ns, _pod, used_after = _top_memory_pod(kube_api)
    assert used_after < used * 0.8
    assert max(metric(simulator, "llm_d_memory_utilization", namespace="production")) < 80


@pytest.mark.scenario("gpu-unavailable")
def test_gpu_unavailable_heals_by_restarting_the_device_plugin(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    assert [gpu_capacity(kube_api, n) for n in ("gpu-node-1", "gpu-node-2", "gpu-node-3")] == [0, 0, 0]
    pending = core.list_namespaced_pod(
        "production", label_selector="app=llama-3-8b", field_selector="status.phase=Pending"
    ).items
    assert len(pending) == 2
    events = core.list_namespaced_event("production", field_selector=f"involvedObject.name={pending[0].metadata.name}")
    assert any("Insufficient nvidia.com/gpu" in e.message for e in events.items)
    plugin = core.list_namespaced_pod("kube-system", label_selector="name=nvidia-device-plugin-ds").items
    assert all(p.status.container_statuses[0].restart_count >= 1 for p in plugin)
    # deleting the plugin pods brings back the same broken template
    for pod in plugin:
        core.delete_namespaced_pod(pod.metadata.name, "kube-system")
    time.sleep(NOTHING_DONE)
    assert gpu_capacity(kube_api, "gpu-node-1") == 0 and not healed(simulator)

    stamp = datetime.now(timezone.utc).isoformat()
    client.AppsV1Api(kube_api).patch_namespaced_daemon_set(
        "nvidia-device-plugin-daemonset",
        "kube-system",
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
    )

    wait_for(lambda: healed(simulator), what="the fault to clear")
    assert [gpu_capacity(kube_api, n) for n in ("gpu-node-1", "gpu-node-2", "gpu-node-3")] == [8, 8, 8]
    wait_for(lambda: all_ready(kube_api), what="llama-3-8b to schedule")


@pytest.mark.scenario("gpu-unavailable:driver")
def test_a_missing_driver_is_not_healed_by_restarting_the_device_plugin(simulator, kube_api):
    phase, log = run_probe(kube_api, "gpu-node-3")
    assert phase == "Failed" and log.startswith("NVIDIA-SMI has failed because it couldn't communicate")
    stamp = datetime.now(timezone.utc).isoformat()
    client.AppsV1Api(kube_api).patch_namespaced_daemon_set(
        "nvidia-device-plugin-daemonset",
        "kube-system",
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
    )
    time.sleep(NOTHING_DONE * 2)
    assert gpu_capacity(kube_api, "gpu-node-3") == 0 and gpu_capacity(kube_api, "gpu-node-1") == 8
    assert not healed(simulator)


def _evict_all(kube_api: client.ApiClient, node: str) -> None:
    core = client.CoreV1Api(kube_api)
    for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
        if pod.metadata.owner_references and pod.metadata.owner_references[0].kind == "DaemonSet":
            continue
        core.create_namespaced_pod_eviction(
            pod.metadata.name,
            pod.metadata.namespace,
            {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace},
            },
        )


@pytest.mark.scenario("gpu-hardware-failure")
def test_gpu_hardware_failure_heals_by_cordon_and_drain(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    phase, log = run_probe(kube_api, "gpu-node-2")
    faulty = [row.split(", ") for row in log.splitlines() if not row.endswith(", 0")]
    assert phase == "Succeeded" and len(faulty) == 1
    assert faulty[0][2] == "ERR!" and faulty[0][3] == "[N/A]" and int(faulty[0][4]) > 0
    assert max(metric(simulator, "DCGM_FI_DEV_XID_ERRORS", Hostname="gpu-node-2")) == 48
    assert not all_ready(kube_api)
    # deleting the crashing pods lands their replacements back on the same GPU
    for pod in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-node-2").items:
        if (
            any(s.restart_count for s in pod.status.container_statuses or [])
            and pod.metadata.namespace != "kube-system"
        ):
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
    time.sleep(NOTHING_DONE)
    assert not healed(simulator) and not all_ready(kube_api)

    core.patch_node("gpu-node-2", {"spec": {"unschedulable": True}})
    _evict_all(kube_api, "gpu-node-2")

    wait_for(lambda: healed(simulator), what="the fault to clear")
    wait_for(lambda: all_ready(kube_api), what="the models to be Ready on healthy nodes")


@pytest.mark.scenario("model-deploy-failure:image-pull")
def test_image_pull_failure_needs_a_good_image(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod("production", label_selector="app=mixtral-8x7b").items[0]
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    events = core.list_namespaced_event("production", field_selector=f"involvedObject.name={pod.metadata.name}")
    assert any(e.message.startswith("Failed to pull image") for e in events.items)
    patch_llmd(kube_api, "production", "mixtral-8x7b", SOP_004_RESOURCES)
    time.sleep(NOTHING_DONE)
    assert phases(kube_api)["production/mixtral-8x7b"] == "Failed" and not healed(simulator)

    patch_llmd(kube_api, "production", "mixtral-8x7b", {"spec": {"image": "vllm/vllm-openai:v0.6.3"}})

    wait_for(lambda: healed(simulator), what="mixtral-8x7b Ready")


@pytest.mark.scenario("model-deploy-failure:oom")
def test_oom_deploy_failure_heals_by_the_sop_resource_patch(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod("production", label_selector="app=mixtral-8x7b").items[0]
    status = pod.status.container_statuses[0]
    assert status.last_state.terminated.reason == "OOMKilled" and status.restart_count >= 1
    time.sleep(NOTHING_DONE)
    assert phases(kube_api)["production/mixtral-8x7b"] == "Failed"

    patch_llmd(kube_api, "production", "mixtral-8x7b", SOP_004_RESOURCES)

    wait_for(lambda: healed(simulator), what="mixtral-8x7b Ready")
    deploy = client.AppsV1Api(kube_api).read_namespaced_deployment("mixtral-8x7b", "production")
    assert deploy.spec.template.spec.containers[0].resources.limits["memory"] == "16Gi"


@pytest.mark.scenario("model-deploy-failure:insufficient-gpu")
def test_insufficient_gpu_heals_by_the_sop_resource_patch(simulator, kube_api):
    time.sleep(NOTHING_DONE)
    assert phases(kube_api)["production/mixtral-8x7b"] in ("Pending", "Failed") and not healed(simulator)

    patch_llmd(kube_api, "production", "mixtral-8x7b", SOP_004_RESOURCES)

    wait_for(lambda: healed(simulator), what="mixtral-8x7b Ready")


@pytest.mark.scenario("model-deploy-failure:pvc-pending")
def test_pending_claim_heals_when_recreated_with_a_real_storage_class(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    claim = core.read_namespaced_persistent_volume_claim("mixtral-8x7b-model-cache", "production")
    assert claim.status.phase == "Pending"
    pod = core.list_namespaced_pod("production", label_selector="app=mixtral-8x7b").items[0]
    events = core.list_namespaced_event("production", field_selector=f"involvedObject.name={pod.metadata.name}")
    assert any("unbound immediate PersistentVolumeClaims" in e.message for e in events.items)
    core.delete_namespaced_pod(pod.metadata.name, "production")
    time.sleep(NOTHING_DONE)
    assert not healed(simulator)

    core.delete_namespaced_persistent_volume_claim("mixtral-8x7b-model-cache", "production")
    core.create_namespaced_persistent_volume_claim(
        "production",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "mixtral-8x7b-model-cache"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "200Gi"}},
            },
        },
    )

    wait_for(lambda: healed(simulator), what="mixtral-8x7b Ready")
    assert (
        core.read_namespaced_persistent_volume_claim("mixtral-8x7b-model-cache", "production").status.phase == "Bound"
    )


@pytest.mark.scenario("model-not-loading")
def test_model_not_loading_is_not_healed_by_restarts(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod("mlops-serving", label_selector="app=mistral-7b-v2-predictor").items[0]
    log = core.read_namespaced_pod_log(pod.metadata.name, "mlops-serving", container="storage-initializer")
    assert "AccessDenied" in log and "s3://llm-mlops-models/mistral-7b/v2" in log

    restart(kube_api, "mlops-serving", "mistral-7b-v2-predictor")
    time.sleep(NOTHING_DONE)
    for pod in core.list_namespaced_pod("mlops-serving", label_selector="app=mistral-7b-v2-predictor").items:
        core.delete_namespaced_pod(pod.metadata.name, "mlops-serving")
    time.sleep(NOTHING_DONE)
    isvc = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        *ISVC[:2], "mlops-serving", ISVC[2], "mistral-7b-v2"
    )
    ready = next(c for c in isvc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and not healed(simulator)

    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        *ISVC[:2],
        "mlops-serving",
        ISVC[2],
        "mistral-7b-v2",
        {"spec": {"predictor": {"model": {"storageUri": "s3://llm-mlops-models/mistral-7b/v1"}}}},
    )
    wait_for(lambda: healed(simulator), what="the InferenceService Ready once it reads a permitted location")


@pytest.mark.scenario("high-latency")
def test_high_latency_heals_by_scaling_decode(simulator, kube_api):
    assert max(metric(simulator, "llm_d_queue_depth", service="llm-d-decode")) > 10
    time.sleep(NOTHING_DONE)
    assert not healed(simulator)

    client.AppsV1Api(kube_api).patch_namespaced_deployment_scale(
        "llm-d-decode", "production", {"spec": {"replicas": 6}}
    )

    wait_for(lambda: healed(simulator), what="the decode queue to drain")
    assert max(metric(simulator, "llm_d_queue_depth", service="llm-d-decode")) < 10


@pytest.mark.scenario("high-error-rate")
def test_high_error_rate_heals_by_restarting_the_predictor(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod("mlops-serving", label_selector="app=mistral-7b-predictor").items[0]
    assert " 500 Internal Server Error" in core.read_namespaced_pod_log(pod.metadata.name, "mlops-serving")
    time.sleep(NOTHING_DONE)
    errors = metric(simulator, "llm_d_requests_total", service="mistral-7b-predictor", status="500")
    ok = metric(simulator, "llm_d_requests_total", service="mistral-7b-predictor", status="200")
    assert sum(errors) / (sum(errors) + sum(ok)) > 0.2 and not healed(simulator)

    restart(kube_api, "mlops-serving", "mistral-7b-predictor")

    wait_for(lambda: healed(simulator), what="the erroring pods to be replaced")
    assert health(simulator, "mlops-serving", "mistral-7b-predictor") == 200
