"""LLMDeployments (llm-d's custom resource): `kubectl get|describe|patch llmdeployment`, and what
SOP-004 reads about a model deployment that will not come up (its pods, their events, the nodes'
GPUs, the namespace's claims).

Sync (the client blocks), run on the worker's thread pool. Writes return a `ClusterChange` with the
value they replaced and are safe to retry: a retry that finds our value already in place reports
`applied=False` (and `change_llm_deployment` still knows the original, recorded on the object).
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import (
    FIELD_MANAGER,
    LLMD_GROUP,
    LLMD_PLURAL,
    LLMD_VERSION,
    MERGE_PATCH,
    on_call_errors,
    pod_evidence,
    server_dry_run,
)
from activities.kube.claims_models import ClaimEvidence
from activities.kube.llmdeployments_models import (
    REPLACED_ANNOTATION,
    CommonIssues,
    DeploymentDescription,
    DeploymentTarget,
    LLMDeploymentChange,
    LLMDeploymentPatch,
    LLMDeploymentQuery,
    LLMDeploymentSummary,
    NodeAllocation,
)
from activities.kube.models import GPU, HEALTH_URL_ANNOTATION, EventEvidence, quantity
from activities.models import ClusterChange

# The claim fields a recreation carries over; the rest is the cluster's to fill in.
_CLAIM_SPEC = ("accessModes", "resources", "storageClassName", "volumeMode", "selector", "dataSource")


class KubeLLMDeployments:
    """What an on-call engineer does with kubectl to an LLMDeployment, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    # ---- reads -----------------------------------------------------------------------------

    @activity.defn
    def list_llm_deployments(self, query: LLMDeploymentQuery) -> list[LLMDeploymentSummary]:
        """`kubectl get llmdeployments [-n NS | -A]`, with each model service's health URL."""
        where = query.namespace or "all namespaces"
        with on_call_errors(f"list LLMDeployments in {where}"):
            if query.namespace:
                found = self.custom.list_namespaced_custom_object(
                    LLMD_GROUP, LLMD_VERSION, query.namespace, LLMD_PLURAL
                )
                services = self.core.list_namespaced_service(query.namespace).items
            else:
                found = self.custom.list_cluster_custom_object(LLMD_GROUP, LLMD_VERSION, LLMD_PLURAL)
                services = self.core.list_service_for_all_namespaces().items
        health_urls = {
            (svc.metadata.namespace, svc.metadata.name): (svc.metadata.annotations or {}).get(HEALTH_URL_ANNOTATION)
            for svc in services
        }
        return [_llm_deployment_summary(obj, health_urls) for obj in found.get("items", [])]

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
        mine = [
            e
            for e in events
            if e.involved_object
            and (
                e.involved_object.name in involved
                or (e.involved_object.kind == "ReplicaSet" and (e.involved_object.name or "").startswith(f"{name}-"))
            )
        ]
        claim = (spec.get("storage") or {}).get("persistentVolumeClaim")
        return DeploymentDescription(
            namespace=ns,
            name=name,
            phase=status.get("phase") or "Unknown",
            ready_replicas=status.get("readyReplicas") or 0,
            replicas=spec.get("replicas", 1),
            condition=_ready_condition(status),
            image=spec.get("image"),
            resources=spec.get("resources") or {},
            claims=[claim] if claim else [],
            pods=[pod_evidence(p) for p in pods],
            events=_newest([_event(e) for e in mine], target.events_limit),
        )

    @activity.defn
    def check_common_issues(self, target: DeploymentTarget) -> CommonIssues:
        """Pull events, GPUs allocated per node, and the namespace's claims (SOP-004 step 2)."""
        ns, name = target.namespace, target.name
        with on_call_errors(f"check image pulls, nodes and storage for {ns}/{name}"):
            events = self.core.list_namespaced_event(ns).items
            nodes = self.core.list_node().items
            pods = self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed"
            ).items
            claims = self.core.list_namespaced_persistent_volume_claim(ns).items
        pulls = [
            _event(e)
            for e in events
            if e.involved_object
            and (e.involved_object.name or "").startswith(name)
            and "pull" in (e.message or "").lower()
        ]
        claim_events: dict[str, list[EventEvidence]] = {}
        for e in events:
            if e.involved_object and e.involved_object.kind == "PersistentVolumeClaim":
                claim_events.setdefault(e.involved_object.name, []).append(_event(e))
        return CommonIssues(
            namespace=ns,
            name=name,
            pull_events=_newest(pulls, target.events_limit),
            nodes=[_allocation(n, pods) for n in nodes if _gpus(n.status.allocatable if n.status else None)],
            claims=[_claim_evidence(self.api_client, c, claim_events.get(c.metadata.name, [])) for c in claims],
        )

    # ---- writes ----------------------------------------------------------------------------

    @activity.defn
    def patch_llm_deployment(self, req: LLMDeploymentPatch) -> ClusterChange:
        """A merge patch of an LLMDeployment's spec; `before` holds the replaced values only."""
        what = f"patch LLMDeployment {req.namespace}/{req.name}"
        with on_call_errors(what):
            current = self.custom.get_namespaced_custom_object(
                LLMD_GROUP, LLMD_VERSION, req.namespace, LLMD_PLURAL, req.name
            )
        before = _pick(current.get("spec") or {}, req.spec)
        change = ClusterChange(
            action="patch LLMDeployment",
            kind="LLMDeployment",
            namespace=req.namespace,
            name=req.name,
            field="spec",
            before=before,
            after=req.spec,
            applied=before != req.spec,
            dry_run=req.dry_run,
        )
        if change.applied:
            with on_call_errors(what):
                self.custom.patch_namespaced_custom_object(
                    LLMD_GROUP,
                    LLMD_VERSION,
                    req.namespace,
                    LLMD_PLURAL,
                    req.name,
                    {"spec": req.spec},
                    _content_type=MERGE_PATCH,
                    field_manager=FIELD_MANAGER,
                    dry_run=server_dry_run(req.dry_run),
                )
        return change

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
            action=req.action,
            kind="LLMDeployment",
            namespace=req.namespace,
            name=req.name,
            field=f"spec.{req.field}",
            before=before,
            after=req.value,
            dry_run=req.dry_run,
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
                LLMD_GROUP,
                LLMD_VERSION,
                req.namespace,
                LLMD_PLURAL,
                req.name,
                body,
                _content_type=MERGE_PATCH,
                field_manager=FIELD_MANAGER,
                dry_run=server_dry_run(req.dry_run),
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


# ---- plain functions over the client's models --------------------------------------------------


def _llm_deployment_summary(
    obj: dict[str, Any], health_urls: dict[tuple[str, str], str | None]
) -> LLMDeploymentSummary:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    url = status.get("url")
    health = health_urls.get((namespace, name)) or (f"{url.rstrip('/')}/health" if url else None)
    model, version = spec.get("model"), None
    if isinstance(model, dict):  # seed 002's {modelUri, version, registry, checksums}
        version = str(model["version"]) if model.get("version") else None
        model = (model.get("modelUri") or "") + (f"@{version}" if version else "")
    previous = ((spec.get("rollback") or {}).get("previousVersions")) or []
    return LLMDeploymentSummary(
        namespace=namespace,
        name=name,
        phase=status.get("phase") or "Unknown",
        model=model or None,
        model_version=version,
        previous_versions=[str(v) for v in previous],
        replicas=spec.get("replicas"),
        ready_replicas=status.get("readyReplicas") or 0,
        url=url,
        health_url=health,
    )


def _ready_condition(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return None


def _event(e: k8s.CoreV1Event) -> EventEvidence:
    last = e.last_timestamp or e.event_time or e.first_timestamp
    return EventEvidence(
        kind=e.involved_object.kind or "",
        name=e.involved_object.name or "",
        type=e.type or "Normal",
        reason=e.reason or "",
        message=e.message or "",
        count=e.count or 1,
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
        for p in pods
        if p.spec and p.spec.node_name == name
        for c in p.spec.containers
    )
    return NodeAllocation(
        name=name,
        gpu_allocatable=_gpus(node.status.allocatable if node.status else None),
        gpu_requested=requested,
        unschedulable=bool(node.spec and node.spec.unschedulable),
    )


def _claim_evidence(
    api: k8s.ApiClient, claim: k8s.V1PersistentVolumeClaim, events: list[EventEvidence]
) -> ClaimEvidence:
    spec = api.sanitize_for_serialization(claim.spec) or {}
    return ClaimEvidence(
        name=claim.metadata.name,
        uid=claim.metadata.uid or "",
        phase=(claim.status.phase if claim.status else None) or "Unknown",
        storage_class=claim.spec.storage_class_name if claim.spec else None,
        volume_name=claim.spec.volume_name if claim.spec else None,
        spec={k: v for k, v in spec.items() if k in _CLAIM_SPEC},
        events=events,
    )


def _pick(current: dict[str, Any], shape: dict[str, Any]) -> dict[str, Any]:
    """The values in `current` at the keys `shape` names (recursively): what a patch replaces."""
    picked: dict[str, Any] = {}
    for key, value in shape.items():
        old = current.get(key)
        picked[key] = _pick(old, value) if isinstance(value, dict) and isinstance(old, dict) else old
    return picked


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
