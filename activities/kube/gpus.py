"""The nvidia.com/gpu resource through the Kubernetes API: which GPU nodes advertise how many GPUs and
who holds them, the NVIDIA device plugin that advertises them, pods waiting for GPUs, and the
cluster's GPU allocation. Reads only; sync (the client blocks), run on the worker's thread pool.
"""

from __future__ import annotations

import time

from kubernetes import client as k8s
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import gpus_requested, on_call_errors, pod_summary, unschedulable_message
from activities.kube.gpus_models import (
    GPU_COUNT_LABEL,
    DevicePluginHealth,
    DevicePluginPod,
    DevicePluginQuery,
    GpuAllocation,
    GpuAllocationQuery,
    GpuInventory,
    GpuInventoryQuery,
    GpuNodeAllocation,
    GpuNodeInventory,
    GpuPendingPod,
    GpuPendingPods,
    GpuPendingPodsQuery,
    GpuPod,
)
from activities.kube.models import GPU


class KubeGpus:
    """Who has GPUs, who holds them and who waits for them, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient, *, gpu_node_selector: str = "nvidia.com/gpu.present=true") -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.gpu_node_selector = gpu_node_selector

    @activity.defn
    def gpu_inventory(self, query: GpuInventoryQuery) -> GpuInventory:
        """Per GPU node: capacity vs allocatable nvidia.com/gpu, cordon state, and who holds the GPUs."""
        selector = query.node_selector or self.gpu_node_selector
        with on_call_errors(f"list GPU nodes ({selector}) and their pods"):
            nodes = self.core.list_node(label_selector=selector).items
            pods = self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed"
            ).items
        holders: dict[str, list[GpuPod]] = {}
        for pod in pods:
            if gpus_requested(pod) and pod.spec.node_name:
                holders.setdefault(pod.spec.node_name, []).append(_gpu_pod(pod))
        return GpuInventory(
            node_selector=selector, nodes=[_node_inventory(n, holders.get(n.metadata.name, [])) for n in nodes]
        )

    @activity.defn
    def device_plugin_health(self, query: DevicePluginQuery) -> DevicePluginHealth:
        """`kubectl get ds` and `kubectl get pods -l ...` for the NVIDIA device plugin."""
        where = f"{query.namespace}/{query.daemonset}"
        try:
            with on_call_errors(f"read DaemonSet {where}"):
                ds = self.apps.read_namespaced_daemon_set(query.daemonset, query.namespace)
        except ApplicationError as err:
            if err.type != "KubernetesNotFound":
                raise
            return DevicePluginHealth(namespace=query.namespace, daemonset=query.daemonset, found=False)
        with on_call_errors(f"list the device plugin pods ({query.pod_selector}) in {query.namespace}"):
            pods = self.core.list_namespaced_pod(query.namespace, label_selector=query.pod_selector).items
        # a DaemonSet its controller has not reported on yet has no status: every count 0, so not healthy
        status = ds.status
        return DevicePluginHealth(
            namespace=query.namespace,
            daemonset=query.daemonset,
            found=True,
            desired=(status.desired_number_scheduled if status else 0) or 0,
            current=(status.current_number_scheduled if status else 0) or 0,
            ready=(status.number_ready if status else 0) or 0,
            updated=(status.updated_number_scheduled if status else 0) or 0,
            available=(status.number_available if status else 0) or 0,
            pods=[_plugin_pod(p) for p in sorted(pods, key=lambda p: p.spec.node_name or "")],
        )

    @activity.defn
    def gpu_pending_pods(self, query: GpuPendingPodsQuery) -> GpuPendingPods:
        """Pods the scheduler cannot place for want of nvidia.com/gpu ("Insufficient nvidia.com/gpu")."""
        where = query.namespace or "all namespaces"
        pending, failed = "status.phase=Pending", "reason=FailedScheduling"
        with on_call_errors(f"list pending pods and scheduling events in {where}"):
            if query.namespace:
                pods = self.core.list_namespaced_pod(query.namespace, field_selector=pending).items
                events = self.core.list_namespaced_event(query.namespace, field_selector=failed).items
            else:
                pods = self.core.list_pod_for_all_namespaces(field_selector=pending).items
                events = self.core.list_event_for_all_namespaces(field_selector=failed).items
        latest = _latest_scheduling_events(events)
        found = [_pending_for_gpu(p, latest.get((p.metadata.namespace, p.metadata.name))) for p in pods]
        return GpuPendingPods(pods=[p for p in found if p])

    @activity.defn
    def gpu_allocation(self, q: GpuAllocationQuery) -> GpuAllocation:
        """GPU nodes (allocatable, requested, taints, cordoned) and every pod that requests GPUs."""
        with on_call_errors("read GPU nodes and pods"):
            nodes = self.core.list_node(label_selector=q.node_selector).items
            pods = self.core.list_pod_for_all_namespaces().items
        live = [
            p
            for p in pods
            if ((p.status.phase if p.status else None) or "") not in ("Succeeded", "Failed") and gpus_requested(p)
        ]
        now = time.time()
        sets: dict[str, list[k8s.V1ReplicaSet]] = {}
        result = GpuAllocation(pods=[_gpu_pod(p, owner=self._owner(p, sets), now=now) for p in live])
        for n in nodes:
            name = n.metadata.name
            result.nodes.append(
                GpuNodeAllocation(
                    name=name,
                    allocatable=int(((n.status.allocatable if n.status else None) or {}).get(GPU, 0) or 0),
                    requested=sum(p.gpus for p in result.pods if p.node == name),
                    unschedulable=bool(n.spec and n.spec.unschedulable),
                    taints=[f"{t.key}={t.value or ''}:{t.effect}" for t in (n.spec.taints if n.spec else None) or []],
                    ready=next(
                        (c.status for c in ((n.status.conditions if n.status else None) or []) if c.type == "Ready"),
                        "Unknown",
                    ),
                )
            )
        return result

    def _owner(self, pod: k8s.V1Pod, sets: dict[str, list[k8s.V1ReplicaSet]]) -> str | None:
        ref = next(iter(pod.metadata.owner_references or []), None)
        if ref is None:
            return None
        if ref.kind == "ReplicaSet":
            # listed (a rule the worker has), not read one by one: no `get replicasets` to grant
            ns = pod.metadata.namespace
            if ns not in sets:
                with on_call_errors(f"list the ReplicaSets of {ns}"):
                    sets[ns] = self.apps.list_namespaced_replica_set(ns).items
            rs = next((s for s in sets[ns] if s.metadata.name == ref.name), None)
            parent = next(iter(rs.metadata.owner_references or []), None) if rs is not None else None
            if parent is not None:
                return f"{parent.kind}/{parent.name}"
        return f"{ref.kind}/{ref.name}"


# ---- helpers ---------------------------------------------------------------------------------


def _gpu_pod(pod: k8s.V1Pod, *, owner: str | None = None, now: float | None = None) -> GpuPod:
    created = pod.metadata.creation_timestamp
    return GpuPod(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        gpus=gpus_requested(pod),
        node=pod.spec.node_name,
        phase=(pod.status.phase if pod.status else None) or "Unknown",
        ready=pod_summary(pod).ready,
        owner=owner,
        age_seconds=now - created.timestamp() if now is not None and created else None,
    )


def _node_inventory(node: k8s.V1Node, pods: list[GpuPod]) -> GpuNodeInventory:
    status = node.status
    conditions = {c.type: c.status for c in (status.conditions or [])} if status else {}
    labels = node.metadata.labels or {}
    count = labels.get(GPU_COUNT_LABEL, "")
    return GpuNodeInventory(
        node=node.metadata.name,
        ready=conditions.get("Ready") == "True",
        unschedulable=bool(node.spec and node.spec.unschedulable),
        capacity=int(((status.capacity if status else None) or {}).get(GPU, "0")),
        allocatable=int(((status.allocatable if status else None) or {}).get(GPU, "0")),
        in_use=sum(p.gpus for p in pods),
        pods=sorted(pods, key=lambda p: (p.namespace, p.name)),
        taints=[f"{t.key}={t.value or ''}:{t.effect}" for t in (node.spec.taints or [])] if node.spec else [],
        expected_gpus=int(count) if count.isdigit() else None,
    )


def _plugin_pod(pod: k8s.V1Pod) -> DevicePluginPod:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    reason = message = None
    for s in statuses:
        state = s.state
        if state and state.waiting and state.waiting.reason != "ContainerCreating":
            reason, message = state.waiting.reason, state.waiting.message
        elif state and state.terminated:
            reason, message = state.terminated.reason or "Error", state.terminated.message
        if reason:
            break
    return DevicePluginPod(
        name=pod.metadata.name,
        node=pod.spec.node_name,
        phase=(pod.status.phase if pod.status else None) or "Unknown",
        ready=bool(statuses) and all(s.ready for s in statuses),
        restarts=sum(s.restart_count or 0 for s in statuses),
        reason=reason,
        message=message,
    )


def _latest_scheduling_events(events: list[k8s.CoreV1Event]) -> dict[tuple[str, str], k8s.CoreV1Event]:
    latest: dict[tuple[str, str], k8s.CoreV1Event] = {}
    for event in events:
        obj = event.involved_object
        if obj.kind != "Pod":
            continue
        key = (obj.namespace or event.metadata.namespace, obj.name)
        if key not in latest or _event_time(event) >= _event_time(latest[key]):
            latest[key] = event
    return latest


def _event_time(event: k8s.CoreV1Event) -> str:
    stamp = event.last_timestamp or event.event_time or event.first_timestamp
    return stamp.isoformat() if stamp else ""


def _pending_for_gpu(pod: k8s.V1Pod, event: k8s.CoreV1Event | None) -> GpuPendingPod | None:
    """The pod, if the scheduler said (in its condition or its latest event) it lacks GPUs."""
    said = [m for m in (unschedulable_message(pod), event.message if event else None) if m and GPU in m]
    if not said:
        return None
    since = (event.first_timestamp or event.event_time) if event else None
    since = since or next(
        (
            c.last_transition_time
            for c in (pod.status.conditions if pod.status else None) or []
            if c.type == "PodScheduled"
        ),
        None,
    )
    return GpuPendingPod(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        gpus=gpus_requested(pod),
        message=said[0],
        since=since.isoformat() if since else None,
    )
