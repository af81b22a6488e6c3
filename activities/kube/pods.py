"""Pods: `kubectl get pods`, `kubectl logs`, `kubectl top pods`, their memory events and limits,
readiness, and `kubectl delete pod` as the playbooks need it.

Sync (the client blocks), run on the worker's thread pool. Writes return `ClusterChange`s with the
value they replaced and are safe to retry: each deletion is pinned to the uid that was read, so a
retry never deletes the replacement its controller started.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import label_selector, on_call_errors, pod_evidence, pod_summary, server_dry_run
from activities.kube.models import PodRef, PodSummary
from activities.kube.pods_models import (
    ContainerMemoryLimit,
    FailedPodsDeletion,
    LogQuery,
    MemoryEvent,
    MemoryEventsQuery,
    MemoryLimitsQuery,
    PodDeletion,
    PodLog,
    PodMemory,
    PodMemoryLimits,
    PodQuery,
    PodsReadiness,
    ReadinessQuery,
    TopPodsQuery,
)
from activities.models import ClusterChange, writes_kept_on_failure

METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "v1beta1"
_MEMORY_WORDS = ("memory", "oom")


class KubePods:
    """What an SRE does with `kubectl get pods`, `logs`, `top pods`, `get events` and `delete pod`."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    # ---- reads -------------------------------------------------------------------------------

    @activity.defn
    def list_pods(self, query: PodQuery) -> list[PodSummary]:
        """`kubectl get pods [-n NS | -A] [-l SELECTOR]`."""
        where = query.namespace or "all namespaces"
        with on_call_errors(f"list pods in {where}"):
            if query.namespace:
                pods = self.core.list_namespaced_pod(query.namespace, label_selector=query.label_selector)
            else:
                pods = self.core.list_pod_for_all_namespaces(label_selector=query.label_selector)
        return [pod_summary(pod) for pod in pods.items]

    @activity.defn
    def pod_logs(self, query: LogQuery) -> PodLog:
        """`kubectl logs -n NS deployment/NAME --tail=N` (or of one pod)."""
        pod = query.pod or self._pod_of_deployment(query.namespace, query.deployment or "")
        with on_call_errors(f"read the logs of pod {query.namespace}/{pod}"):
            text = self.core.read_namespaced_pod_log(
                pod, query.namespace, container=query.container, tail_lines=query.tail_lines
            )
        return PodLog(namespace=query.namespace, pod=pod, text=text or "")

    def _pod_of_deployment(self, namespace: str, name: str) -> str:
        """The pod whose log explains the deployment best: a sick one first, else the newest."""
        with on_call_errors(f"find the pods of deployment {namespace}/{name}"):
            deployment = self.apps.read_namespaced_deployment(name, namespace)
            selector = label_selector(deployment.spec.selector)
            pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        if not pods:
            raise ApplicationError(
                f"Deployment {namespace}/{name} has no pods to read logs from",
                type="NoPods",
                non_retryable=True,
            )
        pods.sort(
            key=lambda p: p.metadata.creation_timestamp.timestamp() if p.metadata.creation_timestamp else 0,
            reverse=True,
        )
        sick = [p for p in pods if pod_summary(p).unhealthy]
        return (sick or pods)[0].metadata.name

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
                    return self.custom.list_namespaced_custom_object(
                        METRICS_GROUP, METRICS_VERSION, query.namespace, "pods"
                    )
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

    @activity.defn
    def pods_readiness(self, query: ReadinessQuery) -> PodsReadiness:
        """How many of the deployment's pods (label app=NAME) are Ready now, and why the others are not."""
        with on_call_errors(f"read the pods of {query.namespace}/{query.app}"):
            pods = self.core.list_namespaced_pod(query.namespace, label_selector=f"app={query.app}").items
        evidence = [pod_evidence(p) for p in pods if not p.metadata.deletion_timestamp]
        return PodsReadiness(
            namespace=query.namespace,
            app=query.app,
            wanted=query.replicas,
            ready=sum(1 for p in evidence if p.ready),
            not_ready=[p.line for p in evidence if not p.ready],
        )

    # ---- writes ------------------------------------------------------------------------------

    @activity.defn
    def delete_pod(self, req: PodDeletion) -> ClusterChange:
        """`kubectl delete pod NAME -n NS`: its controller starts a fresh one. Gone already: applied=False."""
        what = f"delete pod {req.namespace}/{req.name}"
        change = ClusterChange(
            action=req.why,
            kind="Pod",
            namespace=req.namespace,
            name=req.name,
            field="(object)",
            before={"uid": req.uid},
            after=None,
            applied=False,
            dry_run=req.dry_run,
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

    @activity.defn
    def delete_failed_pods(self, req: FailedPodsDeletion) -> list[ClusterChange]:
        """Delete the failed pods the diagnosis named; one already gone (or now Running) is left be."""
        changes: list[ClusterChange] = []
        with writes_kept_on_failure(changes, f"delete the failed pods of {req.namespace}/{req.app}"):
            for ref in req.pods:
                self._delete_failed_pod(req, ref, changes)
        return changes

    def _delete_failed_pod(self, req: FailedPodsDeletion, ref: PodRef, changes: list[ClusterChange]) -> None:
        """One named pod: deleted if it is still the failed one (same uid, not Running), else left be."""
        pod = self._read_pod(ref.namespace, ref.name)
        change = ClusterChange(
            action="delete failed pod",
            kind="Pod",
            namespace=ref.namespace,
            name=ref.name,
            field="(object)",
            after=None,
            dry_run=req.dry_run,
        )
        if pod is None or pod.metadata.uid != ref.uid or (pod.status and pod.status.phase == "Running"):
            change.before = None if pod is None or pod.metadata.uid != ref.uid else "Running"
            change.applied = False
        else:
            change.before = pod_evidence(pod).line
            self._delete_pinned(ref, req.dry_run)
        changes.append(change)

    def _read_pod(self, ns: str, name: str) -> k8s.V1Pod | None:
        try:
            return self.core.read_namespaced_pod(name, ns)
        except ApiException as err:
            if err.status == 404:
                return None
            with on_call_errors(f"read pod {ns}/{name}"):
                raise

    def _delete_pinned(self, ref: PodRef, dry_run: bool) -> None:
        options = k8s.V1DeleteOptions(
            preconditions=k8s.V1Preconditions(uid=ref.uid), dry_run=["All"] if dry_run else None
        )
        try:
            self.core.delete_namespaced_pod(ref.name, ref.namespace, body=options)
        except ApiException as err:
            if err.status not in (404, 409):  # gone, or replaced by a pod of the same name: not ours
                with on_call_errors(f"delete pod {ref.namespace}/{ref.name}"):
                    raise


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
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        memory_bytes=sum(containers.values()),
        containers=containers,
    )


def _about_memory(event: k8s.CoreV1Event) -> bool:
    text = f"{event.reason or ''} {event.message or ''}".lower()
    return any(word in text for word in _MEMORY_WORDS)


def _memory_event(event: k8s.CoreV1Event) -> MemoryEvent:
    involved = event.involved_object
    last = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return MemoryEvent(
        namespace=event.metadata.namespace or involved.namespace or "",
        kind=involved.kind or "",
        name=involved.name or "",
        reason=event.reason or "",
        message=event.message or "",
        count=event.count or 1,
        last_seen=last,
    )


def _container_limit(container: k8s.V1Container) -> ContainerMemoryLimit:
    resources = container.resources or k8s.V1ResourceRequirements()
    limit = (resources.limits or {}).get("memory")
    return ContainerMemoryLimit(
        container=container.name,
        limit=limit,
        limit_bytes=_bytes(limit),
        request_bytes=_bytes((resources.requests or {}).get("memory")),
    )
