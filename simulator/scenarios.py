"""The simulated llm-d cluster's baseline, and the faults that stage each seed procedure.

Every fault stays broken while nothing is done and heals only through the remedy its
procedure prescribes, applied through the Kubernetes API. Exactly which change heals each:

| fault | what breaks | what heals it (API change) |
|---|---|---|
| service-outage (SOP-001) | the llm-d-operator's current pod template crash-loops (panic in reconcile); every LLMDeployment's pods fail readiness, status.phase Failed, health 503 | a new operator pod template (`kubectl rollout restart deployment/llm-d-operator`), THEN a new pod template for each failed model Deployment (`rollout restart deployment/<name>`); a model restarted while the operator is still down stays broken |
| high-memory (SOP-002) | serving pods at 93-97% of their memory limit, the top consumer OOMKilled every 2 simulated minutes, OOMKilling node events, KV-cache evictions | all three SOP-002 steps: every LLMDeployment's spec.serving.batchSize AND maxConcurrency lowered below their values at injection; the pod that used the most memory at injection deleted (directly or by a rollout); every LLMDeployment that had replicas > 2 at injection at replicas <= half of it |
| gpu-unavailable (SOP-003) | the device plugin's current pod template crash-loops (lost its kubelet registration); GPU nodes report nvidia.com/gpu 0; two llama-3-8b pods Pending (Insufficient nvidia.com/gpu) | a new device plugin pod template (`kubectl rollout restart ds/nvidia-device-plugin-daemonset -n kube-system`) |
| gpu-unavailable:driver (SOP-003, driver branch) | the NVIDIA driver is not loaded on gpu-node-3: nvidia-smi fails there, the plugin and GPU pods on it crash-loop | restarting the plugin does NOT heal it (a driver needs a human: reboot); the service recovers once gpu-node-3 is cordoned and drained |
| gpu-hardware-failure (seed 002) | a GPU of gpu-node-2 held by an LLMDeployment's pod gets a double-bit ECC error (XID 48): pods on it crash, nvidia-smi shows it | `kubectl cordon gpu-node-2` + `kubectl drain gpu-node-2 --ignore-daemonsets --delete-emptydir-data`: the node unschedulable and no workload pod left on it (deleting the pods alone lands them back on the same GPU) |
| model-deploy-failure:image-pull (SOP-004) | new LLMDeployment production/mixtral-8x7b with an image tag the registry does not have: ErrImagePull / ImagePullBackOff | spec.image on the LLMDeployment (or the Deployment's container image) set to an image that exists, e.g. `vllm/vllm-openai:v0.6.3`; deleting pods or changing resources does not help |
| model-deploy-failure:oom (SOP-004) | mixtral-8x7b with a 6Gi memory limit; the model needs 12Gi: OOMKilled, CrashLoopBackOff | the SOP-004 resource patch on the LLMDeployment (requests memory 8Gi, limits memory 16Gi, nvidia.com/gpu 1): any memory limit >= 12Gi |
| model-deploy-failure:insufficient-gpu (SOP-004) | mixtral-8x7b asks for 16 GPUs (no node has more than 8): Pending, FailedScheduling "Insufficient nvidia.com/gpu" | the SOP-004 resource patch (nvidia.com/gpu 1): any request that fits a node's free GPUs |
| model-deploy-failure:pvc-pending (SOP-004) | mixtral-8x7b mounts PVC mixtral-8x7b-model-cache of storage class "fast-nvme", which does not exist: PVC Pending, pod FailedScheduling "unbound immediate PersistentVolumeClaims" | the PVC recreated (its spec is immutable) with storageClassName "standard" or "gp3", or none; the Pending pod then schedules by itself |
| model-not-loading:<cause>, kserve-gpu-pending, canary-rollback (seed 004) | see simulator/scenarios_kserve.py | |
| high-latency (001 runbook) | demand on production/llm-d-decode at 2.5x: queue depth > 10, p95 latency > 3 s | llm-d-decode scaled up until its Ready replicas carry the load (>= 4 Ready of the 2 at baseline) |
| model-rollback (seed 002) | see simulator/scenarios_models.py | |
| high-error-rate (seed 004) | the mlops-serving/mistral-7b-predictor pods running at injection answer ~45% of requests with 5xx | those pods replaced: `kubectl rollout restart deployment/mistral-7b-predictor` (or deleting them) |
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from simulator import kube, metrics
from simulator.gpu import GpuHealth
from simulator.kubelet import Fate, Mode
from simulator.store import Store, resource_for

LLMDEPLOYMENT_LABEL = "llm-d.io/llmdeployment"  # on every pod of an LLMDeployment's model server

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

GPU_NODES = ("gpu-node-1", "gpu-node-2", "gpu-node-3")
CPU_NODES = ("cpu-node-1",)
GPUS_PER_NODE = 8
OPERATOR = ("llm-d-system", "llm-d-operator")
DEVICE_PLUGIN = ("kube-system", "nvidia-device-plugin-daemonset")
DECODE = ("production", "llm-d-decode")
PREDICTOR = ("mlops-serving", "mistral-7b-predictor")
FAILING_MODEL = ("production", "mixtral-8x7b")
MISSING_IMAGE = "vllm/vllm-openai:v0.6.3-cu124-fp8"
DENIED_STORAGE = "s3://llm-mlops-models/mistral-7b/v2"
# Host memory a model's server process needs (weights staging, tokenizer, CUDA context).
MODEL_HOST_MEMORY_GIB = {"mistralai/Mixtral-8x7B-Instruct-v0.1": 12.0}
_AGE = 3 * 86400  # baseline objects were created three days ago
# What a reset to the baseline (ClusterBehaviour.reset) leaves in place: kinds no scenario creates or
# breaks, and that a test or `kubectl apply -k deploy/` may have set up (access control).
KEPT_ON_RESET = frozenset(
    {"namespaces", "serviceaccounts", "secrets", "roles", "rolebindings", "clusterroles", "clusterrolebindings"}
)


def kept_on_reset(store: Store, obj: dict) -> bool:
    """True for a baseline object a reset kept: it is still in `store` and must not be created again."""
    rtype = resource_for(obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    return rtype.plural in KEPT_ON_RESET and store.get(rtype.plural, meta.get("namespace"), meta["name"]) is not None


# ---- baseline ---------------------------------------------------------------------------


def _namespace(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name},
            "creationTimestamp": kube.iso_ago(_AGE * 10),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _node(name: str, index: int, gpu: bool) -> dict:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node-type": "gpu" if gpu else "cpu",
        "node.kubernetes.io/instance-type": "p4de.24xlarge" if gpu else "m6i.8xlarge",
    }
    if gpu:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu": "true",
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                "nvidia.com/gpu.count": str(GPUS_PER_NODE),
            }
        )
    cpu, memory_ki = ("96", 1207959552) if gpu else ("32", 131858360)
    capacity = {"cpu": cpu, "memory": f"{memory_ki}Ki", "pods": "110", "ephemeral-storage": "1966788Mi"}
    allocatable = {
        "cpu": str(int(cpu) - 1),
        "memory": f"{memory_ki - 4194304}Ki",
        "pods": "110",
        "ephemeral-storage": "1812626Mi",
    }
    if gpu:
        capacity[kube.GPU] = allocatable[kube.GPU] = str(GPUS_PER_NODE)
    stamp = kube.iso_ago(_AGE)
    conditions = [
        {
            "type": t,
            "status": "False",
            "reason": r,
            "message": m,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        for t, r, m in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        )
    ] + [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": kube.iso_ago(_AGE * 10)},
        "spec": {"providerID": f"aws:///us-east-1a/i-0{index:016x}"},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.{1 + index}.10"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": f"b{index:07d}-0000-4000-8000-000000000000",
                "containerRuntimeVersion": "containerd://1.7.11",
                "kernelVersion": "5.15.0-1051-aws",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.29.3",
                "machineID": f"{index:032x}",
                "operatingSystem": "linux",
                "osImage": "Ubuntu 22.04.4 LTS",
                "systemUUID": f"ec2{index:05d}-0000-0000-0000-000000000000",
            },
        },
    }


def _resources(cpu: str, memory: str, memory_limit: str, gpus: int = 0) -> dict:
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory_limit}
    if gpus:
        requests[kube.GPU] = limits[kube.GPU] = str(gpus)
    return {"requests": requests, "limits": limits}


def _deployment(
    ns: str, name: str, replicas: int, container: dict, labels: dict | None = None, node_selector: dict | None = None
) -> dict:
    pod_labels = {"app": name, **(labels or {})}
    spec: dict = {"containers": [container]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": pod_labels, "creationTimestamp": kube.iso_ago(_AGE)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }


def _service(ns: str, name: str, port: int, health_url: str | None, part_of: str) -> dict:
    meta: dict = {
        "name": name,
        "namespace": ns,
        "labels": {"app": name, "app.kubernetes.io/part-of": part_of},
        "creationTimestamp": kube.iso_ago(_AGE),
    }
    if health_url:
        meta["annotations"] = {"llm-d.io/health-url": health_url}
        if part_of == "llm-d":  # seed 001's POST /v1/warmup, served by the simulator
            meta["annotations"]["llm-d.io/warmup-url"] = health_url.replace("/simulated/health/", "/simulated/warmup/")
        # seed 001's validation request (POST /v1/chat/completions), served by the simulator
        meta["annotations"]["llm-d.io/inference-url"] = (
            health_url.replace("/simulated/health/", "/simulated/v1/") + "/chat/completions"
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "selector": {"app": name},
            "type": "ClusterIP",
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
        },
    }


def llm_deployment(
    ns: str, name: str, model: str | dict, replicas: int, batch: int, concurrency: int, resources: dict, **extra: object
) -> dict:
    """An LLMDeployment object; `model` is the model's name, or its spec (name, version, storage) as a mapping."""
    return {
        "apiVersion": "inference.llm-d.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "model": model,
            "replicas": replicas,
            "serving": {"batchSize": batch, "maxConcurrency": concurrency},
            "resources": resources,
            **extra,
        },
    }


def inference_service(ns: str, name: str, storage_uri: str, gpus: int = 1) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "model": {
                    "modelFormat": {"name": "vLLM"},
                    "storageUri": storage_uri,
                    "resources": _resources("4", "16Gi", "24Gi", gpus),
                },
            }
        },
    }


def _vllm(name: str, model: str, role: str, gpus: int = 1) -> dict:
    return {
        "name": "vllm",
        "image": "ghcr.io/llm-d/llm-d:v0.2.0",
        "args": ["--model", model, "--port", "8000", "--kv-transfer-role", role],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "resources": _resources("4", "16Gi", "32Gi", gpus),
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
    }


LITELLM_CONFIG = """model_list:
  - model_name: llama-3-8b
    litellm_params: {model: openai/meta-llama/Meta-Llama-3-8B-Instruct, api_base: "http://llama-3-8b.production.svc.cluster.local/v1"}
  - model_name: mistral-7b
    litellm_params: {model: openai/mistral-7b, api_base: "http://mistral-7b-predictor.mlops-serving.svc.cluster.local/v1"}
  - model_name: codellama-13b
    litellm_params: {model: openai/codellama/CodeLlama-13b-Instruct-hf, api_base: "http://codellama-13b.mlops-serving.svc.cluster.local/v1"}
"""


def baseline_objects(health_url: Callable[[str, str], str]) -> list[dict]:
    """The healthy cluster: nodes, the device plugin, the operator, the models, the gateway.
    Controllers turn the top-level objects into ReplicaSets, pods and statuses."""
    objects = [
        _namespace(n) for n in ("default", "kube-system", "llm-d-system", "production", "mlops-serving", "litellm")
    ]
    objects += [_node(name, i + 1, gpu=True) for i, name in enumerate(GPU_NODES)]
    objects += [_node(name, len(GPU_NODES) + i + 1, gpu=False) for i, name in enumerate(CPU_NODES)]
    plugin_labels = {"name": "nvidia-device-plugin-ds"}
    objects.append(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {
                "name": DEVICE_PLUGIN[1],
                "namespace": DEVICE_PLUGIN[0],
                "labels": plugin_labels,
                "creationTimestamp": kube.iso_ago(_AGE),
            },
            "spec": {
                "selector": {"matchLabels": plugin_labels},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": plugin_labels},
                    "spec": {
                        "priorityClassName": "system-node-critical",
                        "nodeSelector": {"nvidia.com/gpu.present": "true"},
                        "tolerations": [{"key": kube.GPU, "operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [
                            {
                                "name": "nvidia-device-plugin-ctr",
                                "image": "nvcr.io/nvidia/k8s-device-plugin:v0.14.5",
                                "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [
                                    {"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}
                                ],
                            }
                        ],
                        "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}],
                    },
                },
            },
        }
    )
    operator = _deployment(
        *OPERATOR,
        1,
        {
            "name": "llm-d-operator",
            "image": "llm-d/operator:v0.5.0",
            "args": ["--leader-elect"],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8081}},
        },
    )
    objects.append(operator)
    objects += [
        llm_deployment(
            "production",
            "llama-3-8b",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            4,
            32,
            64,
            _resources("4", "16Gi", "32Gi", 1),
        ),
        llm_deployment(
            "production",
            "mistral-7b",
            "mistralai/Mistral-7B-Instruct-v0.2",
            2,
            16,
            32,
            _resources("4", "16Gi", "32Gi", 1),
        ),
        llm_deployment(
            "mlops-serving",
            "codellama-13b",
            "codellama/CodeLlama-13b-Instruct-hf",
            1,
            8,
            16,
            _resources("8", "32Gi", "48Gi", 2),
        ),
        inference_service("mlops-serving", "mistral-7b", "s3://llm-mlops-models/mistral-7b/v1"),
    ]
    for role in ("decode", "prefill"):
        name = f"llm-d-{role}"
        objects.append(
            _deployment(
                "production",
                name,
                2,
                _vllm(name, "meta-llama/Llama-3.1-70B-Instruct", role),
                {"llm-d.io/role": role, "app.kubernetes.io/part-of": "llm-d"},
                {"nvidia.com/gpu.present": "true"},
            )
        )
        objects.append(_service("production", name, 8000, health_url("production", name), "llm-d"))
    objects += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "litellm-config", "namespace": "litellm", "creationTimestamp": kube.iso_ago(_AGE)},
            "data": {"config.yaml": LITELLM_CONFIG},
        },
        _deployment(
            "litellm",
            "litellm",
            2,
            {
                "name": "litellm",
                "image": "ghcr.io/berriai/litellm:main-v1.40.0",
                "args": ["--config", "/app/config.yaml", "--port", "4000"],
                "ports": [{"name": "http", "containerPort": 4000, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            },
        ),
        _service("litellm", "litellm", 4000, health_url("litellm", "litellm"), "litellm"),
    ]
    return objects


# ---- faults -----------------------------------------------------------------------------


class Fault:
    """A failure staged in the cluster. Subclasses override what they change."""

    name = ""

    def inject(self, sim: ClusterBehaviour) -> None:
        """Break the cluster (called under the store lock)."""

    def tick(self, sim: ClusterBehaviour) -> None:
        """Keep the failure going (periodic OOM kills, ...)."""

    def fate(self, sim: ClusterBehaviour, pod: dict) -> Fate | None:
        return None

    def healed(self, sim: ClusterBehaviour) -> bool:
        raise NotImplementedError

    def demand(self, namespace: str, service: str) -> float:
        """Multiplier on a service's request rate."""
        return 1.0

    def error_fraction(self, pod: dict) -> float | None:
        return None

    def shape(self, load: metrics.ServiceLoad) -> None:
        """Change a service's latency, cache hit ratio or model load time (reset every tick)."""

    def warm_up(self, namespace: str, service: str) -> None:
        """A model service's warm-up endpoint was called."""

    def memory_pressure(self, pod: dict) -> bool:
        return False

    def symptoms(self, pod: dict) -> list[str]:
        """Log lines the fault adds to a running container."""
        return []


def _hash(pod: dict, label: str = "pod-template-hash") -> str:
    return (pod["metadata"].get("labels") or {}).get(label, "")


def _template_hash(sim: ClusterBehaviour, ns: str, name: str) -> str:
    deploy = sim.store.get("deployments", ns, name)
    return kube.template_hash(deploy["spec"]["template"]) if deploy else ""


class ServiceOutage(Fault):
    name = "service-outage"

    def __init__(self) -> None:
        self.operator_hashes: set[str] = set()
        self.model_hashes: dict[tuple[str, str], set[str]] = {}

    def inject(self, sim: ClusterBehaviour) -> None:
        self.operator_hashes.add(_template_hash(sim, *OPERATOR))
        now = sim.now_iso()
        for llmd in sim.store.list("llmdeployments"):
            key = (llmd["metadata"]["namespace"], llmd["metadata"]["name"])
            self.model_hashes.setdefault(key, set()).add(_template_hash(sim, *key))
            status = dict(llmd.get("status") or {})
            status["phase"] = "Failed"
            status["readyReplicas"] = 0
            status["conditions"] = kube.set_condition(
                list(status.get("conditions") or []),
                "Ready",
                "False",
                "ReconcileError",
                "llm-d-operator: failed to reconcile inference pool: context deadline exceeded",
                now,
            )
            sim.write_status(llmd, status)

    def tick(self, sim: ClusterBehaviour) -> None:
        # a model restarted while the operator is still down comes up without its routing
        # config and fails the same way
        if not sim.operator_healthy():
            for key, hashes in self.model_hashes.items():
                hashes.add(_template_hash(sim, *key))

    def fate(self, sim: ClusterBehaviour, pod: dict) -> Fate | None:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if meta["namespace"] == OPERATOR[0] and labels.get("app") == OPERATOR[1] and _hash(pod) in self.operator_hashes:
            return Fate(Mode.CRASH, "Error", 2, log=_operator_panic(sim))
        model = labels.get(LLMDEPLOYMENT_LABEL)
        if model and _hash(pod) in self.model_hashes.get((meta["namespace"], model), set()):
            return Fate(
                Mode.NOT_READY,
                message="Readiness probe failed: HTTP probe failed with statuscode: 503",
                log=(
                    "ERROR 01-01 00:00:00 routing.py:88] failed to fetch routing config from "
                    "llm-d-operator.llm-d-system.svc:8443: connection refused",
                    "WARNING 01-01 00:00:00 api_server.py:211] /health: engine not registered with "
                    "the inference gateway; returning 503",
                ),
            )
        return None

    def healed(self, sim: ClusterBehaviour) -> bool:
        return sim.operator_healthy() and all(
            (llmd.get("status") or {}).get("phase") == "Ready" for llmd in sim.store.list("llmdeployments")
        )


def _operator_panic(sim: ClusterBehaviour) -> tuple[str, ...]:
    ts = sim.now_iso()
    names = [f'{d["metadata"]["namespace"]}/{d["metadata"]["name"]}' for d in sim.store.list("llmdeployments")]
    errors = tuple(
        f'{ts}\tERROR\tReconciler error\t{{"controller": "llmdeployment", "LLMDeployment": '
        f'{{"name": "{n.split("/")[1]}", "namespace": "{n.split("/")[0]}"}}, "error": "failed to reconcile '
        f'inference pool: Internal error occurred: failed calling webhook \\"vllmconfig.llm-d.io\\": '
        f'context deadline exceeded"}}'
        for n in names
    )
    return errors + (
        "panic: runtime error: invalid memory address or nil pointer dereference",
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x28 pc=0x1b8e4d2]",
        "",
        "goroutine 417 [running]:",
        "github.com/llm-d/llm-d-operator/internal/controller.(*LLMDeploymentReconciler).reconcileRouting(0xc000a1e2d0, {0x2214f40, 0xc0011c4f30}, 0xc000d3a000)",
        "\t/workspace/internal/controller/llmdeployment_controller.go:312 +0x4d2",
        "sigs.k8s.io/controller-runtime/pkg/internal/controller.(*Controller).reconcileHandler(0xc0003be8c0, {0x2214f78, 0xc00047c5a0}, {0x1c3a0e0, 0xc000a8e120})",
        "\t/go/pkg/mod/sigs.k8s.io/controller-runtime@v0.17.2/pkg/internal/controller/controller.go:316 +0x3c5",
    )


class HighMemory(Fault):
    name = "high-memory"
    OOM_EVERY = 120.0

    def __init__(self) -> None:
        self.before: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.top_pod = ""
        self.next_kill = 0.0
        self.active = True

    def inject(self, sim: ClusterBehaviour) -> None:
        for llmd in sim.store.list("llmdeployments"):
            serving = llmd["spec"].get("serving") or {}
            self.before[(llmd["metadata"]["namespace"], llmd["metadata"]["name"])] = (
                serving.get("batchSize", 32),
                serving.get("maxConcurrency", 64),
                llmd["spec"].get("replicas", 1),
            )
        top = sim.top_memory_pod()
        self.top_pod = top["metadata"]["uid"] if top else ""
        self.next_kill = sim.now()

    def tick(self, sim: ClusterBehaviour) -> None:
        if sim.now() < self.next_kill or self.healed(sim):
            return
        self.next_kill = sim.now() + self.OOM_EVERY
        top = sim.top_memory_pod()
        if top is not None:
            sim.oom_kill(top)

    def memory_pressure(self, pod: dict) -> bool:
        return self.active and (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") in (
            "llm-d",
            "kserve",
        )

    def symptoms(self, pod: dict) -> list[str]:
        if not self.memory_pressure(pod):
            return []
        return [
            "WARNING 01-01 00:00:00 scheduler.py:1089] Sequence group cmpl-9f1c2e is preempted by "
            "PreemptionMode.RECOMPUTE mode because there is not enough KV cache space. This can affect "
            "the end-to-end performance. Increase gpu_memory_utilization or tensor_parallel_size to "
            "provide more KV cache memory.",
            "ERROR 01-01 00:00:00 engine.py:157] torch.OutOfMemoryError: CUDA out of memory. Tried to "
            "allocate 2.00 GiB. GPU 0 has a total capacity of 79.14 GiB of which 1.12 GiB is free. "
            "Process 1 has 78.01 GiB memory in use.",
        ]

    def healed(self, sim: ClusterBehaviour) -> bool:
        if not self.active:
            return True
        for key, (batch, concurrency, replicas) in self.before.items():
            llmd = sim.store.get("llmdeployments", *key)
            if llmd is None:
                continue
            serving = llmd["spec"].get("serving") or {}
            if serving.get("batchSize", batch) >= batch or serving.get("maxConcurrency", concurrency) >= concurrency:
                return False
            if replicas > 2 and llmd["spec"].get("replicas", 1) > replicas // 2:
                return False
        if self.top_pod and sim.pod_by_uid(self.top_pod) is not None:
            return False
        self.active = False
        return True


class GpuUnavailable(Fault):
    name = "gpu-unavailable"

    def __init__(self) -> None:
        self.hashes: set[str] = set()

    def inject(self, sim: ClusterBehaviour) -> None:
        ds = sim.store.require("daemonsets", *DEVICE_PLUGIN)
        self.hashes.add(kube.template_hash(ds["spec"]["template"]))
        # the kubelet restart that lost the plugin's registration also restarted two model pods
        llama = sim.store.list("pods", "production", label_selector="app=llama-3-8b")
        for pod in llama[:2]:
            sim.delete_pod(pod)

    def fate(self, sim: ClusterBehaviour, pod: dict) -> Fate | None:
        if (pod["metadata"].get("labels") or {}).get("name") == "nvidia-device-plugin-ds" and _hash(
            pod, "controller-revision-hash"
        ) in self.hashes:
            return Fate(
                Mode.CRASH,
                "Error",
                1,
                log=(
                    "E0101 00:00:00.000000       1 main.go:132] Could not register device plugin: rpc error: "
                    "code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial "
                    "unix /var/lib/kubelet/device-plugins/kubelet.sock: connect: connection refused\"",
                    "E0101 00:00:00.000000       1 main.go:173] Failed to start plugin: failed to register "
                    "plugin for 'nvidia.com/gpu' with kubelet",
                    "F0101 00:00:00.000000       1 main.go:189] error starting plugins: error starting plugin "
                    "'nvidia.com/gpu': unable to register with kubelet",
                ),
            )
        return None

    def healed(self, sim: ClusterBehaviour) -> bool:
        plugin_pods = sim.store.list("pods", DEVICE_PLUGIN[0], label_selector="name=nvidia-device-plugin-ds")
        if any(_hash(p, "controller-revision-hash") in self.hashes for p in plugin_pods):
            return False
        return all(sim.node_gpu_capacity(n) > 0 for n in GPU_NODES)


class GpuDriverNotLoaded(Fault):
    name = "gpu-unavailable:driver"
    NODE = "gpu-node-3"

    def inject(self, sim: ClusterBehaviour) -> None:
        sim.gpus[self.NODE].driver_loaded = False

    def healed(self, sim: ClusterBehaviour) -> bool:
        return sim.node_drained(self.NODE)


class GpuHardwareFailure(Fault):
    name = "gpu-hardware-failure"
    NODE = "gpu-node-2"

    def inject(self, sim: ClusterBehaviour) -> None:
        gpus = sim.gpus[self.NODE].gpus
        models = {
            p["metadata"]["uid"]
            for p in sim.store.list("pods", field_selector=f"spec.nodeName={self.NODE}")
            if (p["metadata"].get("labels") or {}).get(LLMDEPLOYMENT_LABEL)
        }
        held = [g for g in gpus if g.holder in models] or [g for g in gpus if g.holder]  # an LLMDeployment's first
        (held or gpus)[0].health = GpuHealth.DOUBLE_BIT_ECC
        node = sim.store.require("nodes", None, self.NODE)
        sim.event(
            node,
            "Warning",
            "GPUXidError",
            f"NVRM: Xid (PCI:{(held or gpus)[0].pci_bus_id[4:]}): 48, pid=4102, name=python3, "
            "An uncorrectable double bit error (DBE) has been detected on GPU",
            "kernel-monitor",
        )

    def healed(self, sim: ClusterBehaviour) -> bool:
        return sim.node_drained(self.NODE)


class ModelDeployFailure(Fault):
    CAUSES = ("image-pull", "oom", "insufficient-gpu", "pvc-pending")

    def __init__(self, cause: str) -> None:
        self.cause = cause
        self.name = f"model-deploy-failure:{cause}"

    def inject(self, sim: ClusterBehaviour) -> None:
        ns, name = FAILING_MODEL
        # A drill staged before (and healed) left its model behind: stage this one afresh.
        sim.store.delete_with_dependents("llmdeployments", ns, name)
        sim.store.delete("persistentvolumeclaims", ns, f"{name}-model-cache")
        resources = _resources("8", "16Gi", "32Gi", 1)
        extra: dict = {}
        if self.cause == "image-pull":
            sim.missing_images.add(MISSING_IMAGE)
            extra["image"] = MISSING_IMAGE
        elif self.cause == "oom":
            resources = _resources("4", "4Gi", "6Gi", 1)
        elif self.cause == "insufficient-gpu":
            resources = _resources("8", "16Gi", "32Gi", 16)
        elif self.cause == "pvc-pending":
            claim = f"{name}-model-cache"
            sim.store.create(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": ns},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "fast-nvme",
                        "resources": {"requests": {"storage": "200Gi"}},
                        "volumeMode": "Filesystem",
                    },
                    "status": {"phase": "Pending"},
                }
            )
            extra["storage"] = {"persistentVolumeClaim": claim}
        sim.store.create(llm_deployment(ns, name, "mistralai/Mixtral-8x7B-Instruct-v0.1", 1, 8, 16, resources, **extra))

    def healed(self, sim: ClusterBehaviour) -> bool:
        llmd = sim.store.get("llmdeployments", *FAILING_MODEL)
        return llmd is not None and (llmd.get("status") or {}).get("phase") == "Ready"


def carries(sim: ClusterBehaviour, service: tuple[str, str], demand: float) -> bool:
    """The service's Ready replicas carry `demand`× its baseline at <= 90% (computed from the fault's
    own demand: right after an injection the traffic has not yet ticked with it)."""
    load = sim.traffic.services.get(service)
    return load is not None and load.ready > 0 and load.base_demand * demand / (load.ready * load.capacity) <= 0.9


class HighLatency(Fault):
    name = "high-latency"
    DEMAND = 2.5

    def demand(self, namespace: str, service: str) -> float:
        return self.DEMAND if (namespace, service) == DECODE else 1.0

    def healed(self, sim: ClusterBehaviour) -> bool:
        return carries(sim, DECODE, self.DEMAND)


class HighErrorRate(Fault):
    name = "high-error-rate"
    FRACTION = 0.45

    def __init__(self) -> None:
        self.poisoned: set[str] = set()

    def inject(self, sim: ClusterBehaviour) -> None:
        ns, name = PREDICTOR
        self.poisoned = {p["metadata"]["uid"] for p in sim.store.list("pods", ns, label_selector=f"app={name}")}

    def error_fraction(self, pod: dict) -> float | None:
        return self.FRACTION if pod["metadata"]["uid"] in self.poisoned else None

    def symptoms(self, pod: dict) -> list[str]:
        if pod["metadata"]["uid"] not in self.poisoned:
            return []
        return [
            "ERROR 01-01 00:00:00 async_llm_engine.py:64] Engine background task failed",
            "RuntimeError: CUDA error: an illegal memory access was encountered",
            'INFO:     10.0.4.17:52344 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
            'INFO:     10.0.4.17:52360 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error',
            'INFO:     10.0.4.21:40112 - "POST /v1/chat/completions HTTP/1.1" 503 Service Unavailable',
        ]

    def healed(self, sim: ClusterBehaviour) -> bool:
        return not any(sim.pod_by_uid(uid) for uid in self.poisoned)


_FAULTS: dict[str, Callable[[], Fault]] = {
    "service-outage": ServiceOutage,
    "high-memory": HighMemory,
    "gpu-unavailable": GpuUnavailable,
    "gpu-unavailable:driver": GpuDriverNotLoaded,
    "gpu-hardware-failure": GpuHardwareFailure,
    **{f"model-deploy-failure:{c}": functools.partial(ModelDeployFailure, c) for c in ModelDeployFailure.CAUSES},
    "high-error-rate": HighErrorRate,
}
from simulator.scenarios_latency import LATENCY_FAULTS  # noqa: E402 - they subclass Fault, defined above

from simulator.scenarios_kserve import KSERVE_FAULTS  # noqa: E402 - seed 004's KServe incidents

_FAULTS.update(LATENCY_FAULTS)
from simulator.scenarios_service import SERVICE_DOWN_FAULTS  # noqa: E402 - as above

_FAULTS.update(SERVICE_DOWN_FAULTS)
_FAULTS.update(KSERVE_FAULTS)
from simulator.scenarios_models import MODEL_FAULTS  # noqa: E402 - seed 002's model rollback

_FAULTS.update(MODEL_FAULTS)
SCENARIOS: list[str] = ["baseline", *_FAULTS]


# The cause staged when a scenario that has only causes is named without one.
DEFAULT_CAUSE: dict[str, str] = {
    "model-deploy-failure": "oom",
    "model-not-loading": "access-denied",
    "high-latency": "queue-depth",
    "service-down": "bad-rollout",
}


def causes(base: str) -> list[str]:
    """The causes of a scenario (`model-deploy-failure` -> oom, image-pull, ...), in catalogue order."""
    return [name.partition(":")[2] for name in _FAULTS if name.startswith(f"{base}:")]


def scenario_name(name: str) -> str:
    """The scenario `name` stages: itself, or a scenario with only causes completed with its default
    cause. ValueError naming the causes (or the known scenarios) for anything else."""
    if name == "baseline" or name in _FAULTS:
        return name
    if name in DEFAULT_CAUSE:
        return f"{name}:{DEFAULT_CAUSE[name]}"
    if known := causes(name):
        raise ValueError(f"{name} needs a cause: {', '.join(f'{name}:{c}' for c in known)}")
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def make_fault(name: str) -> Fault | None:
    """The fault called `name` (None for "baseline"; a scenario with only causes stages its default
    cause); ValueError naming the known ones."""
    name = scenario_name(name)
    if name == "baseline":
        return None
    return _FAULTS[name]()
