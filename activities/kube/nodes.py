"""Nodes: `kubectl get nodes`, a node's events (`kubectl describe node`), and SOP-003's writes:
cordon, drain and uncordon.

Sync (the client blocks), run on the worker's thread pool. Every write returns `ClusterChange`(s)
with the value it replaced and is safe to retry: a retry that finds our value already in place
reports `applied=False` and still carries the original (the cordon records its original on the
node), and a retried drain only evicts the pods still there.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import FIELD_MANAGER, MERGE_PATCH, on_call_errors, server_dry_run, status_message
from activities.kube.api import api_status
from activities.kube.models import GPU, PodRef
from activities.kube.nodes_models import (
    CORDONED_BY_ANNOTATION,
    MIRROR_POD_ANNOTATION,
    BlockedEviction,
    FoundNode,
    NodeCordon,
    NodeEvent,
    NodeEvents,
    NodeEventsQuery,
    NodeEvictionRound,
    NodeEvictionRoundResult,
    NodeHint,
    NodeQuery,
    NodeSummary,
    NodeUncordon,
    PodsGone,
    PodsGoneWait,
    RefusedEviction,
)
from activities.models import ClusterChange, writes_kept_on_failure

_FINISHED = ("Succeeded", "Failed")
UNSCHEDULABLE = "spec.unschedulable"


class KubeNodes:
    """kubectl get nodes / cordon / drain / uncordon, and a node's events, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)

    # ---- reads -------------------------------------------------------------------------------

    @activity.defn
    def list_nodes(self, query: NodeQuery) -> list[NodeSummary]:
        """`kubectl get nodes [-l SELECTOR]`."""
        with on_call_errors("list nodes"):
            nodes = self.core.list_node(label_selector=query.label_selector)
        return [_node_summary(node) for node in nodes.items]

    @activity.defn
    def node_events(self, query: NodeEventsQuery) -> NodeEvents:
        """The node's events, newest first (`kubectl describe node NODE`'s Events). Errors: a missing
        permission (403) fails at once, non-retryable (`KubernetesForbidden`)."""
        selector = f"involvedObject.kind=Node,involvedObject.name={query.node}"
        if query.warnings_only:
            selector += ",type=Warning"
        with on_call_errors(f"list the events of node {query.node}"):
            items = self.core.list_event_for_all_namespaces(field_selector=selector).items
        events = [_node_event(e) for e in items]
        if query.since is not None:
            events = [e for e in events if e.last_seen is None or e.last_seen >= query.since]
        events.sort(key=lambda e: e.last_seen or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
        return NodeEvents(node=query.node, events=events)

    @activity.defn
    def find_node(self, hint: NodeHint) -> FoundNode:
        """The node an alert's labels name (NodeHint), tried in this order: `node`; `Hostname` as a
        node, else as a pod (DCGM exporter's pod: the node it runs on); `instance`'s host as a node's
        address, else as a pod's IP; the `pod` (or `exported_pod`) in its namespace. The first that
        exists in the cluster wins, and `how` says which."""
        labels, tried = hint.labels, []
        with on_call_errors("find the node the alert names"):
            nodes = {n.metadata.name: n for n in self.core.list_node().items}
            if (name := labels.get("node")) is not None:
                if name in nodes:
                    return FoundNode(node=name, how=f"label node={name}")
                tried.append(f"node={name}: no such node")
            if (host := labels.get("Hostname")) is not None:
                if host in nodes:
                    return FoundNode(node=host, how=f"label Hostname={host} (the node's name)")
                pod = self._pod_named(host)
                if pod is not None and pod.spec.node_name:
                    where = f"{pod.metadata.namespace}/{host}"
                    return FoundNode(node=pod.spec.node_name, how=f"label Hostname={host}: pod {where} runs on it")
                tried.append(f"Hostname={host}: no node or pod of that name")
            if (instance := labels.get("instance")) is not None:
                address = _host_of(instance)
                for node in nodes.values():
                    if address in {a.address for a in (node.status.addresses if node.status else None) or []}:
                        return FoundNode(node=node.metadata.name, how=f"label instance={instance}: the node's address")
                pod = self._pod_with_ip(address)
                if pod is not None and pod.spec.node_name:
                    where = f"{pod.metadata.namespace}/{pod.metadata.name}"
                    return FoundNode(node=pod.spec.node_name, how=f"label instance={instance}: pod {where} runs on it")
                tried.append(f"instance={instance}: no node or pod with address {address}")
            for pod_label, ns_label in (("pod", "namespace"), ("exported_pod", "exported_namespace")):
                pod_name, namespace = labels.get(pod_label), labels.get(ns_label)
                if pod_name and namespace:
                    pod = self._pod_named(pod_name, namespace)
                    if pod is not None and pod.spec.node_name:
                        return FoundNode(
                            node=pod.spec.node_name, how=f"label {pod_label}={namespace}/{pod_name}: it runs on it"
                        )
                    tried.append(f"{pod_label}={namespace}/{pod_name}: no such pod on a node")
        return FoundNode(tried=tried or ["the alert has none of the labels node, Hostname, instance, pod"])

    def _pod_named(self, name: str, namespace: str | None = None) -> k8s.V1Pod | None:
        selector = f"metadata.name={name}"
        found = (
            self.core.list_namespaced_pod(namespace, field_selector=selector)
            if namespace
            else self.core.list_pod_for_all_namespaces(field_selector=selector)
        ).items
        return found[0] if found else None

    def _pod_with_ip(self, address: str) -> k8s.V1Pod | None:
        found = self.core.list_pod_for_all_namespaces(field_selector=f"status.podIP={address}").items
        return next((p for p in found if p.status and p.status.phase == "Running"), found[0] if found else None)

    # ---- writes ------------------------------------------------------------------------------

    @activity.defn
    def cordon_node(self, req: NodeCordon) -> ClusterChange:
        """`kubectl cordon NODE`, remembering on the node the spec.unschedulable it replaced."""
        node = self._read_node(req.node, "cordon")
        current = node.spec.unschedulable if node.spec else None
        mark = _cordon_mark(node)
        change = ClusterChange(
            action="cordon node",
            kind="Node",
            name=req.node,
            field=UNSCHEDULABLE,
            before=current,
            after=True,
            dry_run=req.dry_run,
        )
        if current:
            # Ours from an earlier attempt (its original is on the node), or someone else's cordon:
            # then the node was already unschedulable and there is nothing of ours to undo.
            change.before = mark["unschedulable"] if mark and mark.get("by") == req.change_key else True
            change.applied = False
            return change
        stamp = json.dumps({"by": req.change_key, "unschedulable": current, "reason": req.reason})
        body = {"metadata": {"annotations": {CORDONED_BY_ANNOTATION: stamp}}, "spec": {"unschedulable": True}}
        with on_call_errors(f"cordon node {req.node}"):
            self.core.patch_node(
                req.node,
                body,
                _content_type=MERGE_PATCH,
                field_manager=FIELD_MANAGER,
                dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def uncordon_node(self, req: NodeUncordon) -> ClusterChange:
        """`kubectl uncordon NODE` for a node we cordoned: spec.unschedulable back to its original."""
        node = self._read_node(req.node, "uncordon")
        current = node.spec.unschedulable if node.spec else None
        change = ClusterChange(
            action="rollback: uncordon node",
            kind="Node",
            name=req.node,
            field=UNSCHEDULABLE,
            before=current,
            after=req.original,
            dry_run=req.dry_run,
        )
        mark = _cordon_mark(node)
        if mark is None:
            if current:
                raise ApplicationError(
                    f"Node {req.node} is cordoned, but not by this incident (no {CORDONED_BY_ANNOTATION} "
                    f"annotation): someone cordoned it again. Not uncordoning; run `kubectl uncordon "
                    f"{req.node}` by hand if it should take pods.",
                    type="CordonedByOthers",
                    non_retryable=True,
                )
            change.applied = False  # already back: a retry after our uncordon got through
            return change
        body = {"metadata": {"annotations": {CORDONED_BY_ANNOTATION: None}}, "spec": {"unschedulable": req.original}}
        with on_call_errors(f"uncordon node {req.node}"):
            self.core.patch_node(
                req.node,
                body,
                _content_type=MERGE_PATCH,
                field_manager=FIELD_MANAGER,
                dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def evict_node_pods(self, req: NodeEvictionRound) -> NodeEvictionRoundResult:
        """One round of kubectl drain's evictions: every pod drain evicts, each tried once.

        A pod a PodDisruptionBudget protects right now (429) is reported in `blocked` with the
        budget's name and the API server's words, and the others are still evicted. Pods already
        terminating are not evicted again. Raises NodeNotCordoned (non-retryable) for a node
        that is schedulable (its pods would land back on it).
        """
        self._require_cordoned(req.node, req.dry_run)
        result = NodeEvictionRoundResult(node=req.node)
        # An error that stops the round (the worker's RBAC, the API server unreachable) must not lose
        # the evictions already made: they fail the activity as its details.
        with writes_kept_on_failure(result.evicted, f"drain {req.node}"):
            self._evict_round(req, result)
        return result

    def _evict_round(self, req: NodeEvictionRound, result: NodeEvictionRoundResult) -> None:
        for pod in self._pods_on(req.node):
            where = f"{pod.metadata.namespace}/{pod.metadata.name}"
            why_not = _why_not_evicted(pod)
            if why_not == "finished":
                continue  # holds no resources and blocks nothing
            if why_not == "daemonset":
                result.daemonset_pods.append(where)
            elif why_not:
                result.left.append(f"{where}: {why_not}")
            elif pod.metadata.deletion_timestamp is not None:
                result.terminating += 1  # evicted in an earlier round: drain waits for it, once
            else:
                blocked = self._evict(pod, req.dry_run)
                if isinstance(blocked, BlockedEviction):
                    result.blocked.append(blocked)
                elif isinstance(blocked, RefusedEviction):
                    result.refused.append(blocked)
                elif blocked:
                    result.evicted_pods.append(
                        PodRef(namespace=pod.metadata.namespace, name=pod.metadata.name, uid=pod.metadata.uid)
                    )
                    result.evicted.append(
                        ClusterChange(
                            action="evict pod (drain)",
                            kind="Pod",
                            namespace=pod.metadata.namespace,
                            name=pod.metadata.name,
                            field="spec.nodeName",
                            before=req.node,
                            after=None,
                            dry_run=req.dry_run,
                        )
                    )

    @activity.defn
    def wait_for_pods_gone(self, req: PodsGoneWait) -> PodsGone:
        """Like kubectl drain, wait until every evicted pod is deleted (or replaced by another uid);
        the ones still there at the timeout are returned, never raised."""
        deadline = time.monotonic() + req.timeout_seconds
        waiting = {p.uid: p for p in req.pods}
        while waiting:
            for uid, pod in list(waiting.items()):
                if not self._still_there(pod.namespace, pod.name, uid):
                    waiting.pop(uid)
            if not waiting or time.monotonic() >= deadline:
                break
            activity.heartbeat(f"draining {req.node}: {len(waiting)} pods terminating")
            time.sleep(req.poll_seconds)
        return PodsGone(
            left=[f"{p.namespace}/{p.name}: still terminating after {req.timeout_seconds:g}s" for p in waiting.values()]
        )

    # ---- helpers -----------------------------------------------------------------------------

    def _read_node(self, name: str, doing: str) -> k8s.V1Node:
        with on_call_errors(f"read node {name} to {doing} it"):
            return self.core.read_node(name)

    def _pods_on(self, node: str) -> list[k8s.V1Pod]:
        with on_call_errors(f"list the pods on node {node}"):
            return self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items

    def _require_cordoned(self, name: str, dry_run: bool) -> None:
        node = self._read_node(name, "drain")
        if not (node.spec and node.spec.unschedulable) and not dry_run:
            # Draining a schedulable node just lands the pods back on it.
            raise ApplicationError(
                f"Node {name} is not cordoned: cordon it before draining it.",
                type="NodeNotCordoned",
                non_retryable=True,
            )

    def _evict(self, pod: k8s.V1Pod, dry_run: bool) -> bool | BlockedEviction | RefusedEviction:
        """POST pods/NAME/eviction, pinned to this pod's uid, answered as `kubectl drain` answers:
        404: False, it was already gone; 429: a BlockedEviction (a PodDisruptionBudget allows no
        disruption now, or the API server throttles; retried by the next round); 401/403: the worker
        lacks the permission (KubernetesForbidden, raised: no other pod would fare better); any other
        refusal (500 for a pod under two budgets, 409 for a stale uid, 5xx): a RefusedEviction, and
        the other pods are still evicted."""
        name, ns = pod.metadata.name, pod.metadata.namespace
        body = k8s.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=k8s.V1ObjectMeta(name=name, namespace=ns),
            delete_options=k8s.V1DeleteOptions(
                preconditions=k8s.V1Preconditions(uid=pod.metadata.uid), dry_run=["All"] if dry_run else None
            ),
        )
        try:
            self.core.create_namespaced_pod_eviction(name, ns, body)
        except ApiException as err:
            if err.status == 404:
                return False
            if err.status == 429:
                return _blocked(pod, err)
            if err.status in (401, 403):
                with on_call_errors(f"evict pod {ns}/{name}"):
                    raise
            return RefusedEviction(
                namespace=ns,
                name=name,
                code=err.status or 0,
                reason=api_status(err).get("reason") or "",
                message=status_message(err),
            )
        return True

    def _still_there(self, namespace: str, name: str, uid: str | None) -> bool:
        try:
            with on_call_errors(f"read pod {namespace}/{name}"):
                live = self.core.read_namespaced_pod(name, namespace)
        except ApplicationError as err:
            if err.type == "KubernetesNotFound":
                return False
            raise
        return live.metadata.uid == uid


def _host_of(instance: str) -> str:
    """The host of Prometheus' `instance` (host:port, [v6]:port or a bare host)."""
    if instance.startswith("["):
        return instance[1 : instance.find("]")]
    host, sep, port = instance.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else instance


def _cordon_mark(node: k8s.V1Node) -> dict | None:
    raw = (node.metadata.annotations or {}).get(CORDONED_BY_ANNOTATION)
    try:
        mark = json.loads(raw) if raw else None
    except ValueError:
        return None
    return mark if isinstance(mark, dict) else None


_BUDGET_CAUSE = re.compile(r"The disruption budget (?P<name>\S+) ")


def _blocked(pod: k8s.V1Pod, err: ApiException) -> BlockedEviction:
    """The budget(s) named in the API server's 429 Status (details.causes), with its words."""
    status = api_status(err)
    causes = (status.get("details") or {}).get("causes") or []
    messages = [c.get("message", "") for c in causes if c.get("reason") == "DisruptionBudget"]
    budgets = [f"{pod.metadata.namespace}/{m['name']}" for m in map(_BUDGET_CAUSE.match, messages) if m]
    message = "; ".join(messages) or status.get("message") or str(err.reason)
    return BlockedEviction(namespace=pod.metadata.namespace, name=pod.metadata.name, budgets=budgets, message=message)


def _why_not_evicted(pod: k8s.V1Pod) -> str | None:
    """None: drain evicts it. 'daemonset', or why kubectl drain would leave it."""
    if pod.status and pod.status.phase in _FINISHED:
        return "finished"
    if MIRROR_POD_ANNOTATION in (pod.metadata.annotations or {}):
        return "static (mirror) pod: the kubelet owns it"
    owner = next((o for o in pod.metadata.owner_references or [] if o.controller), None)
    if owner is None:
        return "not managed by a controller: evicting it would lose it (kubectl drain --force)"
    return "daemonset" if owner.kind == "DaemonSet" else None


def _node_summary(node: k8s.V1Node) -> NodeSummary:
    conditions = {c.type: c.status for c in (node.status.conditions or [])} if node.status else {}
    capacity = (node.status.capacity if node.status else None) or {}
    allocatable = (node.status.allocatable if node.status else None) or {}
    return NodeSummary(
        name=node.metadata.name or "",
        ready=conditions.get("Ready") == "True",
        unschedulable=bool(node.spec and node.spec.unschedulable),
        conditions=conditions,
        gpu_capacity=int(capacity.get(GPU, "0")),
        gpu_allocatable=int(allocatable.get(GPU, "0")),
        labels=node.metadata.labels or {},
    )


def _node_event(e: k8s.CoreV1Event) -> NodeEvent:
    seen = (
        e.last_timestamp or e.event_time or e.first_timestamp or (e.metadata.creation_timestamp if e.metadata else None)
    )
    source = (e.source.component if e.source else None) or e.reporting_component or ""
    return NodeEvent(reason=e.reason or "", message=e.message or "", source=source, count=e.count or 1, last_seen=seen)
