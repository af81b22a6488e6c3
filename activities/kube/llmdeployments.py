"""SOP-004's cluster work: describe a failing LLMDeployment, check the common issues, and the
writes its fixes need that KubeActivities does not already offer (delete failed pods, recreate
a claim). The resource patch and its rollback reuse `KubeActivities.patch_llm_deployment`.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deployment_models import (
    GPU,
    ClaimEvidence,
    ClaimReplacement,
    CommonIssues,
    DeploymentDescription,
    DeploymentTarget,
    EventEvidence,
    FailedPodsDeletion,
    NodeAllocation,
    PodEvidence,
    PodRef,
    PodsReadiness,
    ReadinessQuery,
    quantity,
)
from activities.kube_api import FIELD_MANAGER, LLMD_GROUP, LLMD_PLURAL, LLMD_VERSION, on_call_errors, server_dry_run
from activities.models import ClusterChange, writes_kept_on_failure

# Stamped on a claim we recreate: the incident step that did it, so a retry recognises its own work.
RECREATED_BY = "llm-runbooks.io/recreated-by"
_BINDING_ANNOTATIONS = ("pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/")
# The claim fields a recreation carries over; the rest is the cluster's to fill in.
_CLAIM_SPEC = ("accessModes", "resources", "storageClassName", "volumeMode", "selector", "dataSource")


class ModelDeploymentActivities:
    """What an on-call engineer does with kubectl for a model deployment that will not come up."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    # ---- reads -----------------------------------------------------------------------------

    @activity.defn
    def describe_llm_deployment(self, target: DeploymentTarget) -> DeploymentDescription:
        """`kubectl describe llmdeployment`, `kubectl get/describe pod -l app=NAME`, their events."""
        ns, name = target.namespace, target.name
        obj = self._read_llm_deployment(ns, name)
        if obj is None:
            return DeploymentDescription(namespace=ns, name=name, found=False)
        with on_call_errors(f"list the pods of {ns}/{name}"):
            pods = self.core.list_namespaced_pod(ns, label_selector=f"app={name}").items
            events = self.core.list_namespaced_event(ns).items
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        involved = {name} | {p.metadata.name for p in pods}
        mine = [e for e in events if e.involved_object and (
            e.involved_object.name in involved
            or (e.involved_object.kind == "ReplicaSet" and e.involved_object.name.startswith(f"{name}-")))]
        claim = (spec.get("storage") or {}).get("persistentVolumeClaim")
        return DeploymentDescription(
            namespace=ns, name=name, phase=status.get("phase") or "Unknown",
            ready_replicas=status.get("readyReplicas") or 0, replicas=spec.get("replicas", 1),
            condition=_ready_condition(status), image=spec.get("image"),
            resources=spec.get("resources") or {}, claims=[claim] if claim else [],
            pods=[_pod_evidence(p) for p in pods],
            events=_newest([_event(e) for e in mine], target.events_limit),
        )

    @activity.defn
    def check_common_issues(self, target: DeploymentTarget) -> CommonIssues:
        """Pull events, GPUs allocated per node, and the namespace's claims (SOP-004 step 2)."""
        ns, name = target.namespace, target.name
        with on_call_errors(f"check image pulls, nodes and storage for {ns}/{name}"):
            events = self.core.list_namespaced_event(ns).items
            nodes = self.core.list_node().items
            pods = self.core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items
            claims = self.core.list_namespaced_persistent_volume_claim(ns).items
        pulls = [
            _event(e) for e in events
            if e.involved_object and e.involved_object.name.startswith(name) and "pull" in (e.message or "").lower()
        ]
        claim_events = {}
        for e in events:
            if e.involved_object and e.involved_object.kind == "PersistentVolumeClaim":
                claim_events.setdefault(e.involved_object.name, []).append(_event(e))
        return CommonIssues(
            namespace=ns, name=name, pull_events=_newest(pulls, target.events_limit),
            nodes=[_allocation(n, pods) for n in nodes if _gpus(n.status.allocatable if n.status else None)],
            claims=[_claim_evidence(self.api_client, c, claim_events.get(c.metadata.name, [])) for c in claims],
        )

    @activity.defn
    def pods_readiness(self, query: ReadinessQuery) -> PodsReadiness:
        """How many of the deployment's pods are Ready now, and why the others are not."""
        with on_call_errors(f"read the pods of {query.namespace}/{query.app}"):
            pods = self.core.list_namespaced_pod(query.namespace, label_selector=f"app={query.app}").items
        evidence = [_pod_evidence(p) for p in pods if not p.metadata.deletion_timestamp]
        return PodsReadiness(
            namespace=query.namespace, app=query.app, wanted=query.replicas,
            ready=sum(1 for p in evidence if p.ready),
            not_ready=[p.line for p in evidence if not p.ready],
        )

    # ---- writes ----------------------------------------------------------------------------

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
        pod = self._read_pod(req.namespace, ref.name)
        change = ClusterChange(
            action="delete failed pod", kind="Pod", namespace=req.namespace, name=ref.name,
            field="(object)", after=None, dry_run=req.dry_run,
        )
        if pod is None or pod.metadata.uid != ref.uid or (pod.status and pod.status.phase == "Running"):
            change.before = None if pod is None or pod.metadata.uid != ref.uid else "Running"
            change.applied = False
        else:
            change.before = _pod_evidence(pod).line
            self._delete_pod(req.namespace, ref, req.dry_run)
        changes.append(change)

    @activity.defn
    def replace_claim(self, req: ClaimReplacement) -> ClusterChange:
        """Delete the claim and create it again with `spec_after`; a retry finding it done does nothing."""
        what = f"recreate PersistentVolumeClaim {req.namespace}/{req.name}"
        change = ClusterChange(
            action="recreate claim", kind="PersistentVolumeClaim", namespace=req.namespace, name=req.name,
            field="spec", before=req.spec_before, after=req.spec_after, dry_run=req.dry_run,
        )
        existing = self._read_claim(req.namespace, req.name)
        if existing is not None and (existing.metadata.annotations or {}).get(RECREATED_BY) == req.key:
            change.applied = False  # our earlier attempt got through
            return change
        if existing is not None:
            if existing.status and existing.status.phase == "Bound" and not req.replace_bound:
                raise ApplicationError(
                    f"{what}: the claim is Bound to {existing.spec.volume_name}; recreating it could lose "
                    "the volume, so automation leaves it to a human",
                    type="ClaimBound", non_retryable=True,
                )
            labels, annotations = existing.metadata.labels or {}, _kept(existing.metadata.annotations or {})
            self._delete_claim(existing, req, what)
            deleted = [ClusterChange(action="delete claim (to recreate it)", kind="PersistentVolumeClaim",
                                     namespace=req.namespace, name=req.name, field="(object)",
                                     before=req.spec_before, after=None, dry_run=req.dry_run)]
        else:
            labels, annotations, deleted = {}, {}, []
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": req.name, "namespace": req.namespace, "labels": labels,
                             "annotations": {**annotations, RECREATED_BY: req.key}},
                "spec": req.spec_after}
        # Deleted but not created again: the failure says so, so the incident records the deletion.
        with writes_kept_on_failure(deleted, what), on_call_errors(what):
            self.core.create_namespaced_persistent_volume_claim(
                req.namespace, body, field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run)
            )
        return change

    # ---- helpers ---------------------------------------------------------------------------

    def _read_llm_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            with on_call_errors(f"read LLMDeployment {ns}/{name}"):
                return self.custom.get_namespaced_custom_object(LLMD_GROUP, LLMD_VERSION, ns, LLMD_PLURAL, name)
        except ApplicationError as err:
            if err.type == "KubernetesNotFound":
                return None
            raise

    def _read_pod(self, ns: str, name: str) -> k8s.V1Pod | None:
        try:
            return self.core.read_namespaced_pod(name, ns)
        except ApiException as err:
            if err.status == 404:
                return None
            with on_call_errors(f"read pod {ns}/{name}"):
                raise

    def _delete_pod(self, ns: str, ref: PodRef, dry_run: bool) -> None:
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=ref.uid), dry_run=["All"] if dry_run else None)
        try:
            self.core.delete_namespaced_pod(ref.name, ns, body=options)
        except ApiException as err:
            if err.status not in (404, 409):  # gone, or replaced by a pod of the same name: not ours
                with on_call_errors(f"delete pod {ns}/{ref.name}"):
                    raise

    def _read_claim(self, ns: str, name: str) -> k8s.V1PersistentVolumeClaim | None:
        try:
            return self.core.read_namespaced_persistent_volume_claim(name, ns)
        except ApiException as err:
            if err.status == 404:
                return None
            with on_call_errors(f"read PersistentVolumeClaim {ns}/{name}"):
                raise

    def _delete_claim(self, claim: k8s.V1PersistentVolumeClaim, req: ClaimReplacement, what: str) -> None:
        options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=claim.metadata.uid),
                                      dry_run=["All"] if req.dry_run else None)
        try:
            with on_call_errors(what):
                self.core.delete_namespaced_persistent_volume_claim(req.name, req.namespace, body=options)
        except ApplicationError as err:
            if err.type != "KubernetesNotFound":
                raise
        if req.dry_run:
            return
        deadline = time.monotonic() + req.delete_wait_seconds
        while self._read_claim(req.namespace, req.name) is not None:
            if time.monotonic() > deadline:
                raise ApplicationError(
                    f"{what}: the old claim is still terminating after {req.delete_wait_seconds:g}s "
                    "(pods still use it: kubernetes.io/pvc-protection); scale the deployment to 0 first",
                    type="ClaimTerminating", non_retryable=True,
                )
            activity.heartbeat("waiting for the old claim to go")
            time.sleep(0.5)


# ---- plain functions over the client's models --------------------------------------------------


def _ready_condition(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return None


def _pod_evidence(pod: k8s.V1Pod) -> PodEvidence:
    status = pod.status or k8s.V1PodStatus()
    main = (status.container_statuses or [None])[0]
    init = next((s for s in status.init_container_statuses or [] if s.state and s.state.waiting), None)
    waiting = main.state.waiting if main and main.state else None
    terminated = main.state.terminated if main and main.state else None
    last = (main.last_state.terminated if main and main.last_state else None) or terminated
    scheduled = next((c for c in status.conditions or [] if c.type == "PodScheduled" and c.status == "False"), None)
    return PodEvidence(
        name=pod.metadata.name, uid=pod.metadata.uid or "", phase=status.phase or "Unknown",
        ready=bool(main and main.ready), restarts=sum(s.restart_count or 0 for s in status.container_statuses or []),
        node=pod.spec.node_name if pod.spec else None,
        waiting_reason=waiting.reason if waiting else None, waiting_message=waiting.message if waiting else None,
        init_waiting_reason=init.state.waiting.reason if init else None,
        last_terminated_reason=last.reason if last else None, last_exit_code=last.exit_code if last else None,
        unschedulable=scheduled.message if scheduled else None,
        status_reason=status.reason, status_message=status.message,
        claims=[v.persistent_volume_claim.claim_name for v in (pod.spec.volumes or []) if v.persistent_volume_claim]
        if pod.spec else [],
        terminating=pod.metadata.deletion_timestamp is not None,
    )


def _event(e: k8s.CoreV1Event) -> EventEvidence:
    last = e.last_timestamp or e.event_time or e.first_timestamp
    return EventEvidence(
        kind=e.involved_object.kind or "", name=e.involved_object.name or "", type=e.type or "Normal",
        reason=e.reason or "", message=e.message or "", count=e.count or 1,
        last_seen=last.isoformat() if last else None,
    )


def _newest(events: list[EventEvidence], limit: int) -> list[EventEvidence]:
    return sorted(events, key=lambda e: e.last_seen or "")[-limit:]


def _gpus(resources: dict[str, str] | None) -> int:
    return int(quantity((resources or {}).get(GPU, "0")))


def _allocation(node: k8s.V1Node, pods: list[k8s.V1Pod]) -> NodeAllocation:
    name = node.metadata.name
    requested = sum(
        _gpus((c.resources.requests if c.resources else None) or (c.resources.limits if c.resources else None))
        for p in pods if p.spec and p.spec.node_name == name for c in p.spec.containers
    )
    return NodeAllocation(
        name=name, gpu_allocatable=_gpus(node.status.allocatable), gpu_requested=requested,
        unschedulable=bool(node.spec and node.spec.unschedulable),
    )


def _claim_evidence(
    api: k8s.ApiClient, claim: k8s.V1PersistentVolumeClaim, events: list[EventEvidence]
) -> ClaimEvidence:
    spec = api.sanitize_for_serialization(claim.spec) or {}
    return ClaimEvidence(
        name=claim.metadata.name, uid=claim.metadata.uid or "", phase=(claim.status.phase if claim.status else None) or "Unknown",
        storage_class=claim.spec.storage_class_name if claim.spec else None,
        volume_name=claim.spec.volume_name if claim.spec else None,
        spec={k: v for k, v in spec.items() if k in _CLAIM_SPEC}, events=events,
    )


def _kept(annotations: dict[str, str]) -> dict[str, str]:
    """The old claim's annotations minus the binding ones, which belong to the old volume."""
    return {k: v for k, v in annotations.items() if not k.startswith(_BINDING_ANNOTATIONS) and k != RECREATED_BY}
