"""Memory activities for SOP-002: `kubectl top`, memory events, limits, and the relief writes.

Like KubeActivities these are sync (the client blocks) and run on the worker's thread pool.
Writes return a `ClusterChange` with the value they replaced and are safe to retry.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube_api import (
    FIELD_MANAGER,
    LLMD_GROUP,
    LLMD_PLURAL,
    LLMD_VERSION,
    MERGE_PATCH,
    on_call_errors,
    server_dry_run,
)
from activities.memory_models import (
    REPLACED_ANNOTATION,
    ContainerMemoryLimit,
    LLMDeploymentChange,
    MemoryEvent,
    MemoryEventsQuery,
    MemoryLimitsQuery,
    PodDeletion,
    PodMemory,
    PodMemoryLimits,
    PodRef,
    TopPodsQuery,
)
from activities.models import ClusterChange

METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "v1beta1"
_MEMORY_WORDS = ("memory", "oom")


class MemoryActivities:
    """What an SRE does with `kubectl top`, `get events`, `patch llmdeployment` and `delete pod`."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    # ---- reads -------------------------------------------------------------------------------

    @activity.defn
    def top_memory_pods(self, query: TopPodsQuery) -> list[PodMemory]:
        """`kubectl top pods -A --sort-by=memory | head -N`, from the metrics API."""
        where = query.namespace or "all namespaces"
        with on_call_errors(f"read pod metrics (metrics.k8s.io) in {where}"):
            try:
                found = self._pod_metrics(query)
            except ApiException as err:
                if err.status == 404:
                    raise ApplicationError(
                        "The metrics API (metrics.k8s.io/v1beta1) is not served: is metrics-server "
                        "installed and running? `kubectl top pods` needs it too.",
                        type="MetricsUnavailable",
                        non_retryable=True,
                    ) from err
                raise
        pods = [_pod_memory(item) for item in found.get("items", [])]
        pods.sort(key=lambda p: (-p.memory_bytes, p.namespace, p.name))
        return pods[: query.limit]

    def _pod_metrics(self, query: TopPodsQuery) -> dict:
        """The metrics list; while the API answers 503 (metrics-server starting), poll for up to
        `metrics_wait_seconds`, heartbeating, rather than fail after a few quick retries."""
        deadline = time.monotonic() + query.metrics_wait_seconds
        while True:
            try:
                if query.namespace:
                    return self.custom.list_namespaced_custom_object(METRICS_GROUP, METRICS_VERSION, query.namespace, "pods")
                return self.custom.list_cluster_custom_object(METRICS_GROUP, METRICS_VERSION, "pods")
            except ApiException as err:
                if err.status != 503 or time.monotonic() >= deadline:
                    raise
                if activity.in_activity():
                    activity.heartbeat(f"metrics API unavailable (503), waiting: {err.reason}")
                time.sleep(min(query.metrics_poll_seconds, max(0.0, deadline - time.monotonic())))

    @activity.defn
    def memory_events(self, query: MemoryEventsQuery) -> list[MemoryEvent]:
        """Warning events about memory (or only OOM kills), newest first."""
        where = query.namespace or "all namespaces"
        with on_call_errors(f"list warning events in {where}"):
            if query.namespace:
                events = self.core.list_namespaced_event(query.namespace, field_selector="type=Warning")
            else:
                events = self.core.list_event_for_all_namespaces(field_selector="type=Warning")
        found = [_memory_event(e) for e in events.items if _about_memory(e)]
        if query.oom_only:
            found = [e for e in found if e.oom]
        if query.since is not None:
            found = [e for e in found if e.last_seen is not None and e.last_seen >= query.since]
        found.sort(key=lambda e: e.last_seen.timestamp() if e.last_seen else 0.0, reverse=True)
        return found

    @activity.defn
    def pod_memory_limits(self, query: MemoryLimitsQuery) -> list[PodMemoryLimits]:
        """Each pod's memory limits and requests per container, and the controller that owns it."""
        return [self._limits_of(ref) for ref in query.pods]

    def _limits_of(self, ref: PodRef) -> PodMemoryLimits:
        with on_call_errors(f"read pod {ref.namespace}/{ref.name}"):
            try:
                pod = self.core.read_namespaced_pod(ref.name, ref.namespace)
            except ApiException as err:
                if err.status == 404:  # replaced since `kubectl top` listed it
                    return PodMemoryLimits(namespace=ref.namespace, name=ref.name, found=False)
                raise
        controller = next((o for o in pod.metadata.owner_references or [] if o.controller), None)
        return PodMemoryLimits(
            namespace=ref.namespace,
            name=ref.name,
            uid=pod.metadata.uid,
            owner=f"{controller.kind}/{controller.name}" if controller else None,
            containers=[_container_limit(c) for c in pod.spec.containers],
        )

    # ---- writes ------------------------------------------------------------------------------

    @activity.defn
    def change_llm_deployment(self, req: LLMDeploymentChange) -> ClusterChange:
        """`kubectl patch llmdeployment NAME --type=merge -p '{"spec": {FIELD: VALUE}}'`, remembering the original."""
        what = f"patch LLMDeployment {req.namespace}/{req.name} spec.{req.field}"
        with on_call_errors(what):
            current = self.custom.get_namespaced_custom_object(
                LLMD_GROUP, LLMD_VERSION, req.namespace, LLMD_PLURAL, req.name
            )
        meta = current.get("metadata") or {}
        remembered = _remembered(meta)
        entry = remembered.get(req.field)
        before = _replaced((current.get("spec") or {}).get(req.field), req.value)
        change = ClusterChange(
            action=req.action, kind="LLMDeployment", namespace=req.namespace, name=req.name,
            field=f"spec.{req.field}", before=before, after=req.value, dry_run=req.dry_run,
        )
        if not req.rollback and entry and entry.get("by") == req.change_key:
            # Our own earlier attempt got through: report the original it recorded, write nothing.
            change.before, change.applied = entry.get("before"), False
            return change
        change.applied = before != req.value
        if req.rollback:
            remembered.pop(req.field, None)
        elif change.applied:
            remembered[req.field] = {"by": req.change_key, "before": before}
        if not change.applied and remembered == _remembered(meta):
            return change
        body: dict[str, Any] = {
            # resourceVersion makes the write conditional: a concurrent edit gets a 409 and a retry re-reads.
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {REPLACED_ANNOTATION: json.dumps(remembered, sort_keys=True) if remembered else None},
            },
        }
        if change.applied:
            body["spec"] = {req.field: req.value}
        with on_call_errors(what):
            self.custom.patch_namespaced_custom_object(
                LLMD_GROUP, LLMD_VERSION, req.namespace, LLMD_PLURAL, req.name, body,
                _content_type=MERGE_PATCH, field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def delete_pod(self, req: PodDeletion) -> ClusterChange:
        """`kubectl delete pod NAME -n NS`: its controller starts a fresh one. Gone already: applied=False."""
        what = f"delete pod {req.namespace}/{req.name}"
        change = ClusterChange(
            action=req.why, kind="Pod", namespace=req.namespace, name=req.name, field="(object)",
            before={"uid": req.uid}, after=None, applied=False, dry_run=req.dry_run,
        )
        with on_call_errors(what):
            try:
                pod = self.core.read_namespaced_pod(req.name, req.namespace)
            except ApiException as err:
                if err.status == 404:
                    return change
                raise
        if (req.uid and pod.metadata.uid != req.uid) or pod.metadata.deletion_timestamp:
            return change  # a namesake, or already on its way out: not ours to delete again
        phase = pod.status.phase if pod.status else None
        change.before = {"uid": pod.metadata.uid, "node": pod.spec.node_name, "phase": phase}
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=pod.metadata.uid))
        with on_call_errors(what):
            try:
                self.core.delete_namespaced_pod(
                    req.name, req.namespace, body=options, dry_run=server_dry_run(req.dry_run)
                )
            except ApiException as err:
                if err.status in (404, 409):  # gone or replaced between our read and the delete
                    return change
                raise
        change.applied = True
        return change


# ---- helpers ----------------------------------------------------------------------------------


def _bytes(quantity: Any) -> int | None:
    if quantity in (None, ""):
        return None
    try:
        return int(parse_quantity(quantity))
    except ValueError:
        return None


def _pod_memory(item: dict[str, Any]) -> PodMemory:
    meta = item.get("metadata") or {}
    containers = {
        c.get("name", ""): _bytes((c.get("usage") or {}).get("memory")) or 0 for c in item.get("containers") or []
    }
    return PodMemory(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""),
        memory_bytes=sum(containers.values()), containers=containers,
    )


def _about_memory(event: k8s.CoreV1Event) -> bool:
    text = f"{event.reason or ''} {event.message or ''}".lower()
    return any(word in text for word in _MEMORY_WORDS)


def _memory_event(event: k8s.CoreV1Event) -> MemoryEvent:
    involved = event.involved_object
    last = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return MemoryEvent(
        namespace=event.metadata.namespace or involved.namespace or "",
        kind=involved.kind or "", name=involved.name or "",
        reason=event.reason or "", message=event.message or "",
        count=event.count or 1, last_seen=last,
    )


def _container_limit(container: k8s.V1Container) -> ContainerMemoryLimit:
    resources = container.resources or k8s.V1ResourceRequirements()
    limit = (resources.limits or {}).get("memory")
    return ContainerMemoryLimit(
        container=container.name, limit=limit, limit_bytes=_bytes(limit),
        request_bytes=_bytes((resources.requests or {}).get("memory")),
    )


def _remembered(meta: dict[str, Any]) -> dict[str, Any]:
    raw = (meta.get("annotations") or {}).get(REPLACED_ANNOTATION)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}  # someone edited it by hand: start afresh rather than fail the relief
    return value if isinstance(value, dict) else {}


def _replaced(current: Any, value: Any) -> Any:
    """What a merge patch of `value` onto `current` replaces (recursively, for dicts)."""
    if isinstance(value, dict):
        old = current if isinstance(current, dict) else {}
        return {key: _replaced(old.get(key), sub) for key, sub in value.items()}
    return current
