"""Pods that run nvidia-smi: SOP-003's driver check on one node and its GPU test pod.

They are short-lived pods this module creates and always deletes; their names derive from the
incident, so a retried activity finds (and finishes, and removes) its own pod instead of leaking
another. activities/nvidia_smi.py reads what they print.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import on_call_errors, unschedulable_message
from activities.kube.gpus_models import (
    GPU_COUNT_LABEL,
    GpuTestPodRequest,
    GpuTestPodResult,
    NodeGpuProbe,
    NodeGpuProbeRequest,
)
from activities.kube.models import GPU
from activities.nvidia_smi import (
    PROBE_FIELDS,
    GpuProbeReport,
    NvidiaSmiParseError,
    parse_query_gpu,
    query_gpu_command,
)

INCIDENT_ANNOTATION = "llm-runbooks.io/incident-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "llm-runbooks"}
_DONE = ("Succeeded", "Failed")
# The pod's own deadline only matters when the worker died mid-wait: it falls after ours.
_DEADLINE_MARGIN_S = 30
# Waiting reasons that mean the probe container will never start by itself.
_CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


@dataclass
class _PodRun:
    pod: k8s.V1Pod
    completed: bool
    log: str = ""
    problem: str | None = None


class KubeGpuProbes:
    """nvidia-smi in a pod, on one node or wherever the scheduler puts a GPU request."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        probe_image: str = "nvidia/cuda:12.4.1-base-ubuntu22.04",
        probe_namespace: str = "kube-system",
        probe_runtime_class: str | None = None,
    ) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.probe_image = probe_image
        self.probe_namespace = probe_namespace
        # GPU-operator clusters on containerd often need runtimeClassName "nvidia" to inject nvidia-smi.
        self.probe_runtime_class = probe_runtime_class

    @activity.defn
    def probe_node_gpus(self, req: NodeGpuProbeRequest) -> NodeGpuProbe:
        """SOP-003 step 2: run nvidia-smi on the node in a short-lived pod and judge each GPU."""
        with on_call_errors(f"read node {req.node}"):
            node = self.core.read_node(req.node)
        expected = _expected_gpus(node, req.expected_gpus)
        name = pod_name("gpu-probe", req.incident_id, req.node, req.purpose)
        try:
            run = self._run_to_completion(self._probe_pod(name, req), req.timeout_seconds, req.poll_seconds)
        finally:
            self._delete_pod(name)
        result = NodeGpuProbe(
            node=req.node,
            pod_name=name,
            completed=run.completed,
            exit_code=_exit_code(run.pod),
            output=run.log,
            problem=run.problem,
        )
        if run.completed:
            result.report = self._parse(run.log, req.node, expected, req.max_temp_c, result.exit_code)
        return result

    @activity.defn
    def gpu_test_pod(self, req: GpuTestPodRequest) -> GpuTestPodResult:
        """SOP-003 step 4: does a pod asking for a GPU get scheduled, and does nvidia-smi work in it?"""
        name = pod_name("gpu-test", req.incident_id, req.node or "", req.purpose)
        try:
            run = self._run_to_completion(self._test_pod(name, req), req.timeout_seconds, req.poll_seconds)
        finally:
            self._delete_pod(name)
        node = run.pod.spec.node_name
        phase = run.pod.status.phase if run.pod.status else "Unknown"
        result = GpuTestPodResult(
            pod_name=name,
            scheduled=bool(node),
            node=node,
            phase=phase,
            succeeded=run.completed and phase == "Succeeded",
            scheduling_message=unschedulable_message(run.pod),
            output=run.log,
            problem=run.problem,
        )
        if run.completed:
            result.report = self._parse(run.log, node or "?", req.gpus, req.max_temp_c, _exit_code(run.pod))
        return result

    def _parse(
        self, log: str, node: str, expected: int | None, max_temp_c: float, exit_code: int | None
    ) -> GpuProbeReport:
        """The rows nvidia-smi printed, judged; a non-zero exit with readable rows is a note (it exits
        14 for a corrupted infoROM and still lists every GPU). Unreadable only when no row reads."""
        try:
            report = parse_query_gpu(log, PROBE_FIELDS, expected_gpus=expected, max_temp_c=max_temp_c)
            if exit_code:
                report.notes.append(f"nvidia-smi exited {exit_code}")
            return report
        except NvidiaSmiParseError as err:
            raise ApplicationError(
                f"nvidia-smi on node {node} printed something that is not GPU data ({err}); "
                f"check the probe image {self.probe_image}. Output: {log[:500]!r}",
                type="NvidiaSmiUnreadable",
                non_retryable=True,
            ) from err

    def _probe_pod(self, name: str, req: NodeGpuProbeRequest) -> k8s.V1Pod:
        # No GPU request: the probe must see every GPU even when the device plugin is down or the
        # GPUs are all allocated; NVIDIA_VISIBLE_DEVICES=all asks the NVIDIA runtime for all of them.
        spec = k8s.V1PodSpec(
            node_name=req.node,
            restart_policy="Never",
            active_deadline_seconds=math.ceil(req.timeout_seconds) + _DEADLINE_MARGIN_S,
            termination_grace_period_seconds=0,
            runtime_class_name=self.probe_runtime_class,
            tolerations=[
                k8s.V1Toleration(key=GPU, operator="Exists"),
                k8s.V1Toleration(key="node.kubernetes.io/unschedulable", operator="Exists"),
            ],
            containers=[
                k8s.V1Container(
                    name="nvidia-smi",
                    image=self.probe_image,
                    command=query_gpu_command(),
                    env=[
                        k8s.V1EnvVar(name="NVIDIA_VISIBLE_DEVICES", value="all"),
                        k8s.V1EnvVar(name="NVIDIA_DRIVER_CAPABILITIES", value="utility"),
                    ],
                )
            ],
        )
        return self._pod(name, "gpu-probe", req.incident_id, spec)

    def _test_pod(self, name: str, req: GpuTestPodRequest) -> k8s.V1Pod:
        gpus = str(req.gpus)
        spec = k8s.V1PodSpec(
            restart_policy="Never",
            active_deadline_seconds=math.ceil(req.timeout_seconds) + _DEADLINE_MARGIN_S,
            termination_grace_period_seconds=0,
            runtime_class_name=self.probe_runtime_class,
            node_selector={"kubernetes.io/hostname": req.node} if req.node else None,
            tolerations=[k8s.V1Toleration(key=GPU, operator="Exists")],
            containers=[
                k8s.V1Container(
                    name="gpu-test",
                    image=self.probe_image,
                    command=query_gpu_command(),
                    resources=k8s.V1ResourceRequirements(limits={GPU: gpus}, requests={GPU: gpus}),
                )
            ],
        )
        return self._pod(name, "gpu-test", req.incident_id, spec)

    def _pod(self, name: str, component: str, incident_id: str, spec: k8s.V1PodSpec) -> k8s.V1Pod:
        return k8s.V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=k8s.V1ObjectMeta(
                name=name,
                namespace=self.probe_namespace,
                labels={**MANAGED_BY, "app.kubernetes.io/component": component},
                annotations={INCIDENT_ANNOTATION: incident_id},
            ),
            spec=spec,
        )

    def _run_to_completion(self, body: k8s.V1Pod, timeout: float, poll: float) -> _PodRun:
        """Create the pod (or adopt the one a previous attempt left) and wait until it ends."""
        name = body.metadata.name
        deadline = time.monotonic() + timeout
        pod = self._create_or_adopt(body, deadline, poll)
        while pod.status is None or pod.status.phase not in _DONE:
            stuck = _cannot_start(pod)
            if stuck:
                raise ApplicationError(
                    f"Pod {self.probe_namespace}/{name} cannot start: {stuck}. Check the probe image "
                    f"{self.probe_image} and that nodes can pull it.",
                    type="GpuProbeCannotStart",
                    non_retryable=True,
                )
            if time.monotonic() >= deadline:
                problem = f"pod {name} did not finish within {timeout:g}s ({_describe(pod)})"
                return _PodRun(pod, completed=False, problem=problem)
            activity.heartbeat(f"{name}: {_describe(pod)}")
            time.sleep(poll)
            pod = self._read_pod(name)
        with on_call_errors(f"read the log of pod {self.probe_namespace}/{name}"):
            log = self.core.read_namespaced_pod_log(name, self.probe_namespace)
        return _PodRun(pod, completed=True, log=log or "")

    def _create_or_adopt(self, body: k8s.V1Pod, deadline: float, poll: float) -> k8s.V1Pod:
        name = body.metadata.name
        while True:
            try:
                with on_call_errors(f"create pod {self.probe_namespace}/{name}"):
                    return self.core.create_namespaced_pod(self.probe_namespace, body)
            except ApiException as err:
                if err.status != 409:
                    raise
            try:
                existing = self._read_pod(name)
            except ApplicationError as err:
                if err.type != "KubernetesNotFound":
                    raise
                continue  # gone between our create and our read: create it again
            if existing.metadata.deletion_timestamp is None:
                return existing  # a previous attempt's pod: finish it rather than start another
            if time.monotonic() >= deadline:
                raise ApplicationError(
                    f"Pod {self.probe_namespace}/{name} from an earlier attempt is still terminating",
                    type="GpuProbeStuck",
                )
            time.sleep(poll)

    def _read_pod(self, name: str) -> k8s.V1Pod:
        with on_call_errors(f"read pod {self.probe_namespace}/{name}"):
            return self.core.read_namespaced_pod(name, self.probe_namespace)

    def _delete_pod(self, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, self.probe_namespace, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise


# ---- helpers ---------------------------------------------------------------------------------


def pod_name(prefix: str, incident_id: str, node: str, purpose: str) -> str:
    """A DNS-1123 pod name, stable for one incident, node and purpose, readable in `kubectl get pods`."""
    digest = hashlib.sha256(f"{incident_id}\n{node}\n{purpose}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-")[:40].strip("-")
    return "-".join(part for part in (prefix, slug, digest) if part)


def _expected_gpus(node: k8s.V1Node, given: int | None) -> int | None:
    """The GPU count to hold nvidia-smi to: given, else GPU feature discovery's label, else capacity."""
    if given is not None:
        return given
    count = (node.metadata.labels or {}).get(GPU_COUNT_LABEL, "")
    if count.isdigit():
        return int(count)
    capacity = int(((node.status.capacity if node.status else None) or {}).get(GPU, "0"))
    # Zero capacity says the device plugin is down, not that the node has no GPUs.
    return capacity or None


def _cannot_start(pod: k8s.V1Pod) -> str | None:
    for s in (pod.status.container_statuses if pod.status else None) or []:
        waiting = s.state.waiting if s.state else None
        if waiting and waiting.reason in _CANNOT_START:
            return f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
    return None


def _describe(pod: k8s.V1Pod) -> str:
    phase = (pod.status.phase if pod.status else None) or "Unknown"
    detail = unschedulable_message(pod) or next(
        (
            s.state.waiting.reason
            for s in (pod.status.container_statuses if pod.status else None) or []
            if s.state and s.state.waiting
        ),
        None,
    )
    return f"{phase}: {detail}" if detail else phase


def _exit_code(pod: k8s.V1Pod) -> int | None:
    for s in (pod.status.container_statuses if pod.status else None) or []:
        if s.state and s.state.terminated:
            return s.state.terminated.exit_code
    return None
