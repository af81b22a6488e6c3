"""Service-down activities (seed 001 "LLM-D Service Down"): what the runbook does with `kubectl get
pods,svc,ingress`, `kubectl rollout history|undo` and `kubectl delete pods -l`, and the inference
request of its validation.

The Kubernetes ones are sync (the client blocks) and run on the worker's thread pool. Writes return
`ClusterChange`s with the value they replaced and are safe to retry.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http_models import HealthResult
from activities.kube_api import FIELD_MANAGER, JSON_PATCH, label_selector, on_call_errors, server_dry_run
from activities.kube_models import HEALTH_URL_ANNOTATION
from activities.models import ClusterChange, writes_kept_on_failure
from activities.rollouts_models import (
    CHANGE_CAUSE,
    INFERENCE_URL_ANNOTATION,
    InferenceProbe,
    Revision,
    RolloutHistory,
    RolloutUndo,
    ServicePod,
    ServicePodsDeletion,
    ServiceRef,
    ServiceScope,
)

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"


class RolloutActivities:
    """Reads and writes on one Service and the Deployment behind it."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.networking = k8s.NetworkingV1Api(api_client)

    # ---- reads -------------------------------------------------------------------------------

    @activity.defn
    def service_scope(self, ref: ServiceRef) -> ServiceScope:
        """`kubectl get pods -o wide; kubectl get svc; kubectl get ingress` for one Service. A missing
        Service is an answer (found=False), not a failure."""
        where = f"{ref.namespace}/{ref.name}"
        with on_call_errors(f"read service {where}"):
            try:
                svc = self.core.read_namespaced_service(ref.name, ref.namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
                return ServiceScope(namespace=ref.namespace, name=ref.name, found=False)
        selector = dict((svc.spec.selector if svc.spec else None) or {})
        annotations = svc.metadata.annotations or {}
        health = annotations.get(HEALTH_URL_ANNOTATION)
        inference = annotations.get(INFERENCE_URL_ANNOTATION) or (
            health[: -len("/health")] + "/v1/chat/completions" if health and health.endswith("/health") else None)
        with on_call_errors(f"list the pods, deployments and ingresses of service {where}"):
            pods = (self.core.list_namespaced_pod(ref.namespace, label_selector=label_selector(selector)).items
                    if selector else [])
            deployments = self.apps.list_namespaced_deployment(ref.namespace).items
            ingresses = self.networking.list_namespaced_ingress(ref.namespace).items
        behind = [d.metadata.name for d in deployments if selector and _picks(selector, d.spec.template.metadata.labels)]
        return ServiceScope(
            namespace=ref.namespace, name=ref.name, found=True, selector=selector, deployments=sorted(behind),
            pods=[_pod(p) for p in pods], ingresses=sorted(i.metadata.name for i in ingresses if _routes_to(i, ref.name)),
            health_url=health, inference_url=inference,
        )

    @activity.defn
    def rollout_history(self, ref: ServiceRef) -> RolloutHistory:
        """`kubectl rollout history deployment/NAME`: one Revision per ReplicaSet the Deployment owns,
        oldest first, with the time it was created (when that revision was rolled out)."""
        where = f"deployment {ref.namespace}/{ref.name}"
        with on_call_errors(f"read {where} and its ReplicaSets"):
            deployment = self.apps.read_namespaced_deployment(ref.name, ref.namespace)
            owned = [rs for rs in self.apps.list_namespaced_replica_set(
                ref.namespace, label_selector=label_selector(deployment.spec.selector)).items
                if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])]
        revisions = sorted((_revision(rs) for rs in owned), key=lambda r: r.revision)
        current = _number((deployment.metadata.annotations or {}).get(REVISION))
        return RolloutHistory(namespace=ref.namespace, name=ref.name, current=current, revisions=revisions)

    # ---- writes ------------------------------------------------------------------------------

    @activity.defn
    def rollout_undo(self, req: RolloutUndo) -> ClusterChange:
        """`kubectl rollout undo --to-revision=N`: the pod template replaced by revision N's (as kubectl
        does, without its pod-template-hash). Before/after name the revisions and their images.
        Errors: `RevisionNotFound` (non-retryable) when revision N's ReplicaSet is gone."""
        what = f"roll back deployment {req.namespace}/{req.name} to revision {req.to_revision}"
        with on_call_errors(what):
            deployment = self.apps.read_namespaced_deployment(req.name, req.namespace)
            owned = [rs for rs in self.apps.list_namespaced_replica_set(
                req.namespace, label_selector=label_selector(deployment.spec.selector)).items
                if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])]
        target = next((rs for rs in owned if _number((rs.metadata.annotations or {}).get(REVISION)) == req.to_revision), None)
        if target is None:
            raise ApplicationError(f"{what}: no ReplicaSet of revision {req.to_revision} is left "
                                   f"(revisions: {sorted(_revision(rs).revision for rs in owned)})",
                                   type="RevisionNotFound", non_retryable=True)
        template = self.api.sanitize_for_serialization(target.spec.template)
        (template.get("metadata") or {}).get("labels", {}).pop(TEMPLATE_HASH, None)
        current = self.api.sanitize_for_serialization(deployment.spec.template)
        now = _number((deployment.metadata.annotations or {}).get(REVISION))
        change = ClusterChange(
            action="rollout undo" if not req.rollback else "rollout undo (restore the recorded revision)",
            kind="Deployment", namespace=req.namespace, name=req.name, field="spec.template",
            before=f"revision {req.from_revision or now} ({_images_of(current)})",
            after=f"revision {req.to_revision} ({_images_of(template)})",
            applied=_comparable(current) != _comparable(template), dry_run=req.dry_run,
        )
        if change.applied:
            with on_call_errors(what):
                self.apps.patch_namespaced_deployment(
                    req.name, req.namespace, [{"op": "replace", "path": "/spec/template", "value": template}],
                    _content_type=JSON_PATCH, field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run))
        return change

    @activity.defn
    def delete_service_pods(self, req: ServicePodsDeletion) -> list[ClusterChange]:
        """`kubectl delete pods -l ...` for the pods named (uid-checked: a replacement is left be). Fails
        with the deletions made so far if one fails midway (WritesBeforeFailure)."""
        changes: list[ClusterChange] = []
        with writes_kept_on_failure(changes, f"delete the pods of {req.namespace}/{req.deployment}"):
            for name in req.pods:
                changes.append(self._delete_pod(req, name))
        return changes

    def _delete_pod(self, req: ServicePodsDeletion, name: str) -> ClusterChange:
        change = ClusterChange(action="delete pod (force restart)", kind="Pod", namespace=req.namespace, name=name,
                               field="(object)", after=None, dry_run=req.dry_run)
        with on_call_errors(f"delete pod {req.namespace}/{name}"):
            try:
                pod = self.core.read_namespaced_pod(name, req.namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
                pod = None
            expected = req.uids.get(name)
            if pod is None or (expected and pod.metadata.uid != expected):
                change.applied = False  # gone already (a retry, or its controller replaced it)
                return change
            change.before = str(_pod(pod))
            options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=pod.metadata.uid),
                                          dry_run=["All"] if req.dry_run else None)
            try:
                self.core.delete_namespaced_pod(name, req.namespace, body=options)
            except ApiException as err:
                if err.status not in (404, 409):  # gone meanwhile, or another pod by that name now
                    raise
                change.applied = False
        return change


class InferenceProbes:
    """Seed 001's validation request: one chat completion, one token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @activity.defn
    async def check_inference(self, probe: InferenceProbe) -> HealthResult:
        """One POST; a failing model is an answer (ok=False), not an activity failure."""
        body = {"model": probe.model, "messages": [{"role": "user", "content": "test"}], "max_tokens": 1}
        started = time.monotonic()
        try:
            response = await self.client.post(probe.url, json=body, timeout=probe.timeout_seconds)
        except httpx.HTTPError as err:
            return HealthResult(url=probe.url, ok=False, error=f"{type(err).__name__}: {err}".rstrip(": "),
                                elapsed_ms=round((time.monotonic() - started) * 1000, 1))
        return HealthResult(url=probe.url, ok=response.is_success, status_code=response.status_code,
                            body=response.text[:500], elapsed_ms=round((time.monotonic() - started) * 1000, 1))


def _picks(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    return all((labels or {}).get(k) == v for k, v in selector.items())


def _routes_to(ingress: k8s.V1Ingress, service: str) -> bool:
    spec = ingress.spec
    backends = [spec.default_backend] if spec and spec.default_backend else []
    for rule in (spec.rules if spec else None) or []:
        backends += [p.backend for p in (rule.http.paths if rule.http else None) or []]
    return any(b.service is not None and b.service.name == service for b in backends)


def _pod(pod: k8s.V1Pod) -> ServicePod:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    reason = None
    for s in statuses:
        state = s.state
        if state and state.waiting and state.waiting.reason:
            reason = state.waiting.reason
        elif state and state.terminated and state.terminated.reason:
            reason = state.terminated.reason
    conditions = (pod.status.conditions if pod.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ServicePod(name=pod.metadata.name, uid=pod.metadata.uid or "", phase=(pod.status.phase if pod.status else None) or "Unknown",
                      ready=ready, reason=reason, restarts=sum(s.restart_count or 0 for s in statuses),
                      node=pod.spec.node_name if pod.spec else None,
                      template_hash=(pod.metadata.labels or {}).get(TEMPLATE_HASH))


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _revision(rs: k8s.V1ReplicaSet) -> Revision:
    annotations = rs.metadata.annotations or {}
    return Revision(revision=_number(annotations.get(REVISION)) or 0, created=rs.metadata.creation_timestamp,
                    images={c.name: c.image or "" for c in rs.spec.template.spec.containers},
                    change_cause=annotations.get(CHANGE_CAUSE),
                    template_hash=(rs.metadata.labels or {}).get(TEMPLATE_HASH),
                    replicas=(rs.status.replicas if rs.status else 0) or 0,
                    labels={k: v for k, v in ((rs.spec.template.metadata.labels if rs.spec.template.metadata else None)
                                              or {}).items() if k != TEMPLATE_HASH})


def _images_of(template: dict[str, Any]) -> str:
    return ", ".join(f"{c.get('name')}={c.get('image')}" for c in (template.get("spec") or {}).get("containers", []))


def _comparable(template: dict[str, Any]) -> dict[str, Any]:
    """A template as a rollout compares it: without the hash label the controller adds."""
    meta = dict(template.get("metadata") or {})
    meta["labels"] = {k: v for k, v in (meta.get("labels") or {}).items() if k != TEMPLATE_HASH}
    meta.pop("creationTimestamp", None)
    return {**template, "metadata": meta}
