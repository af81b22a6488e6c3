"""Services and the Ingresses that route to them: seed 001's outage scope of one Service (its pods,
the Deployments behind it, its Ingresses, its health and inference URLs), the deletion of its pods
("Pod Recovery"), and `kubectl apply|delete ingress` for an Ingress we own.

Sync (the client blocks), run on the worker's thread pool. Writes return `ClusterChange`s with the
value they replaced and are safe to retry.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import FIELD_MANAGER, label_selector, on_call_errors, server_dry_run
from activities.kube.models import HEALTH_URL_ANNOTATION
from activities.kube.services_models import (
    INFERENCE_URL_ANNOTATION,
    IngressRef,
    IngressSpec,
    ServicePod,
    ServicePodsDeletion,
    ServiceRef,
    ServiceScope,
)
from activities.models import ClusterChange, writes_kept_on_failure

TEMPLATE_HASH = "pod-template-hash"


class KubeServices:
    """Reads and writes on one Service, what stands behind it and the Ingresses in front of it."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
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
            health[: -len("/health")] + "/v1/chat/completions" if health and health.endswith("/health") else None
        )
        with on_call_errors(f"list the pods, deployments and ingresses of service {where}"):
            pods = (
                self.core.list_namespaced_pod(ref.namespace, label_selector=label_selector(selector)).items
                if selector
                else []
            )
            deployments = self.apps.list_namespaced_deployment(ref.namespace).items
            ingresses = self.networking.list_namespaced_ingress(ref.namespace).items
        behind = [
            d.metadata.name for d in deployments if selector and _picks(selector, d.spec.template.metadata.labels)
        ]
        return ServiceScope(
            namespace=ref.namespace,
            name=ref.name,
            found=True,
            selector=selector,
            deployments=sorted(behind),
            pods=[_pod(p) for p in pods],
            ingresses=sorted(i.metadata.name for i in ingresses if _routes_to(i, ref.name)),
            health_url=health,
            inference_url=inference,
        )

    # ---- writes ------------------------------------------------------------------------------

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
        change = ClusterChange(
            action="delete pod (force restart)",
            kind="Pod",
            namespace=req.namespace,
            name=name,
            field="(object)",
            after=None,
            dry_run=req.dry_run,
        )
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
            options = k8s.V1DeleteOptions(
                preconditions=k8s.V1Preconditions(uid=pod.metadata.uid), dry_run=["All"] if req.dry_run else None
            )
            try:
                self.core.delete_namespaced_pod(name, req.namespace, body=options)
            except ApiException as err:
                if err.status not in (404, 409):  # gone meanwhile, or another pod by that name now
                    raise
                change.applied = False
        return change

    @activity.defn
    def apply_ingress(self, spec: IngressSpec) -> ClusterChange:
        """`kubectl apply -f ingress.yaml`: create it, or replace what differs."""
        what = f"apply ingress {spec.namespace}/{spec.name}"
        wanted = _ingress_body(spec)
        with on_call_errors(what):
            existing = self._read_ingress(spec.namespace, spec.name)
        before = _ingress_view(existing) if existing else None
        after = _ingress_view(wanted)
        change = ClusterChange(
            action="apply ingress",
            kind="Ingress",
            namespace=spec.namespace,
            name=spec.name,
            field="spec",
            before=before,
            after=after,
            applied=before != after,
            dry_run=spec.dry_run,
        )
        if not change.applied:
            return change
        with on_call_errors(what):
            if existing is None:
                self.networking.create_namespaced_ingress(
                    spec.namespace, wanted, field_manager=FIELD_MANAGER, dry_run=server_dry_run(spec.dry_run)
                )
            else:
                wanted["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                self.networking.replace_namespaced_ingress(
                    spec.name,
                    spec.namespace,
                    wanted,
                    field_manager=FIELD_MANAGER,
                    dry_run=server_dry_run(spec.dry_run),
                )
        return change

    @activity.defn
    def delete_ingress(self, ref: IngressRef) -> ClusterChange:
        """`kubectl delete ingress NAME`; already gone counts as done (applied=False)."""
        what = f"delete ingress {ref.namespace}/{ref.name}"
        with on_call_errors(what):
            existing = self._read_ingress(ref.namespace, ref.name)
        change = ClusterChange(
            action="delete ingress",
            kind="Ingress",
            namespace=ref.namespace,
            name=ref.name,
            field="(object)",
            before=_ingress_view(existing) if existing else None,
            after=None,
            applied=existing is not None,
            dry_run=ref.dry_run,
        )
        if existing is not None:
            try:
                with on_call_errors(what):
                    self.networking.delete_namespaced_ingress(
                        ref.name, ref.namespace, dry_run=server_dry_run(ref.dry_run)
                    )
            except ApplicationError as err:
                if err.type != "KubernetesNotFound":  # deleted between our read and delete: done
                    raise
        return change

    def _read_ingress(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.networking.read_namespaced_ingress(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return self.api_client.sanitize_for_serialization(found)


# ---- helpers: plain functions over the client's models -----------------------------------------


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
    return ServicePod(
        name=pod.metadata.name,
        uid=pod.metadata.uid or "",
        phase=(pod.status.phase if pod.status else None) or "Unknown",
        ready=ready,
        reason=reason,
        restarts=sum(s.restart_count or 0 for s in statuses),
        node=pod.spec.node_name if pod.spec else None,
        template_hash=(pod.metadata.labels or {}).get(TEMPLATE_HASH),
    )


def _ingress_body(spec: IngressSpec) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": p.path,
                    "pathType": p.path_type,
                    "backend": {"service": {"name": p.service, "port": {"number": p.port}}},
                }
                for p in spec.paths
            ]
        }
    }
    if spec.host:
        rule["host"] = spec.host
    body: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "annotations": dict(spec.annotations),
            "labels": dict(spec.labels),
        },
        "spec": {"rules": [rule]},
    }
    if spec.ingress_class:
        body["spec"]["ingressClassName"] = spec.ingress_class
    return body


def _ingress_view(obj: dict[str, Any]) -> dict[str, Any]:
    """What we compare and record of an ingress: its annotations and spec."""
    return {
        "annotations": (obj.get("metadata") or {}).get("annotations") or {},
        "spec": obj.get("spec") or {},
    }
