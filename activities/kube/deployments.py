"""Kubernetes activities: what an SRE would do with kubectl, through the official client.

The conventions they share with the other activity modules (errors, dry runs, patch types,
the client itself) are in activities/kube_api.py. The client is blocking, so every activity here is a plain (sync) function that the worker
runs on its thread pool. Writes return a `ClusterChange` with the value they replaced, and
are safe to retry: a retry that finds our value already in place reports `applied=False`
instead of writing (and, for a restart, rolling the pods) again.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube_models import (
    HEALTH_URL_ANNOTATION,
    RESTARTED_AT,
    RESTARTED_BY,
    DeploymentImages,
    DeploymentRef,
    ImageChange,
    IngressRef,
    IngressSpec,
    LLMDeploymentPatch,
    LLMDeploymentQuery,
    LLMDeploymentSummary,
    LogQuery,
    NodeQuery,
    NodeSummary,
    PodLog,
    PodQuery,
    PodSummary,
    RestartRequest,
    RolloutStatus,
    RolloutWait,
    ScaleRequest,
)
from activities.kube_api import (
    FIELD_MANAGER,
    GPU,
    JSON_PATCH,
    LLMD_GROUP,
    LLMD_PLURAL,
    LLMD_VERSION,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    label_selector,
    on_call_errors,
    pod_summary,
    poll_rollout,
    server_dry_run,
)
from activities.models import ClusterChange

_REVISION = "deployment.kubernetes.io/revision"


class KubeActivities:
    """kubectl's verbs for the playbooks, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.networking = k8s.NetworkingV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    # ---- reads -------------------------------------------------------------------------------

    @activity.defn
    def list_pods(self, query: PodQuery) -> list[PodSummary]:
        """`kubectl get pods [-n NS | -A] [-l SELECTOR]`."""
        where = query.namespace or "all namespaces"
        with on_call_errors(f"list pods in {where}"):
            if query.namespace:
                pods = self.core.list_namespaced_pod(
                    query.namespace, label_selector=query.label_selector
                )
            else:
                pods = self.core.list_pod_for_all_namespaces(label_selector=query.label_selector)
        return [pod_summary(pod) for pod in pods.items]

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
            (svc.metadata.namespace, svc.metadata.name): (svc.metadata.annotations or {}).get(
                HEALTH_URL_ANNOTATION
            )
            for svc in services
        }
        return [_llm_deployment_summary(obj, health_urls) for obj in found.get("items", [])]

    @activity.defn
    def list_nodes(self, query: NodeQuery) -> list[NodeSummary]:
        """`kubectl get nodes [-l SELECTOR]`."""
        with on_call_errors("list nodes"):
            nodes = self.core.list_node(label_selector=query.label_selector)
        return [_node_summary(node) for node in nodes.items]

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
        pods.sort(key=lambda p: p.metadata.creation_timestamp.timestamp() if p.metadata.creation_timestamp else 0,
                  reverse=True)
        sick = [p for p in pods if pod_summary(p).unhealthy]
        return (sick or pods)[0].metadata.name

    @activity.defn
    def deployment_images(self, ref: DeploymentRef) -> DeploymentImages:
        """The images a Deployment runs, and those of its newest earlier revision that ran others.

        Restarts make revisions with the same images; skipping them finds what `kubectl set
        image` would have to go back to.
        """
        with on_call_errors(f"read deployment {ref.namespace}/{ref.name}"):
            deployment = self.apps.read_namespaced_deployment(ref.name, ref.namespace)
            replica_sets = self.apps.list_namespaced_replica_set(
                ref.namespace, label_selector=label_selector(deployment.spec.selector)
            ).items
        current = _images(deployment.spec.template)
        owned = sorted(
            (rs for rs in replica_sets
             if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])),
            key=lambda rs: _revision(rs.metadata) or 0,
        )
        revision = _revision(deployment.metadata) or (_revision(owned[-1].metadata) if owned else None)
        earlier = [
            _images(rs.spec.template) for rs in owned
            if (_revision(rs.metadata) or 0) < (revision or 0)
        ]
        previous = next((images for images in reversed(earlier) if images != current), None)
        return DeploymentImages(
            namespace=ref.namespace, name=ref.name, containers=current, previous=previous,
            revision=revision,
        )

    @activity.defn
    def wait_for_rollout(self, wait: RolloutWait) -> RolloutStatus:
        """`kubectl rollout status --timeout=...`: polls until complete or the timeout passes."""
        def read() -> RolloutStatus:
            with on_call_errors(f"read deployment {wait.namespace}/{wait.name}"):
                return _rollout_status(self.apps.read_namespaced_deployment(wait.name, wait.namespace))

        return poll_rollout(read, timeout_seconds=wait.timeout_seconds, poll_seconds=wait.poll_seconds)

    # ---- writes ------------------------------------------------------------------------------

    @activity.defn
    def restart_deployment(self, req: RestartRequest) -> ClusterChange:
        """`kubectl rollout restart`, stamped with the incident, so a retry does not roll twice."""
        what = f"restart deployment {req.namespace}/{req.name}"
        with on_call_errors(what):
            deployment = self.apps.read_namespaced_deployment(req.name, req.namespace)
        annotations = deployment.spec.template.metadata.annotations or {}
        change = ClusterChange(
            action="restart deployment", kind="Deployment", namespace=req.namespace,
            name=req.name, field=f"spec.template.metadata.annotations[{RESTARTED_AT}]",
            before=annotations.get(RESTARTED_AT), after=req.restarted_at, dry_run=req.dry_run,
        )
        if annotations.get(RESTARTED_BY) == req.restarted_by:
            # Our own earlier attempt got through: the pods are already rolling for this step.
            change.applied = False
            return change
        body = {
            "spec": {"template": {"metadata": {"annotations": {
                RESTARTED_AT: req.restarted_at, RESTARTED_BY: req.restarted_by,
            }}}}
        }
        with on_call_errors(what):
            self.apps.patch_namespaced_deployment(
                req.name, req.namespace, body, _content_type=STRATEGIC_MERGE_PATCH,
                field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def set_image(self, req: ImageChange) -> ClusterChange:
        """`kubectl set image deployment/NAME CONTAINER=IMAGE`."""
        what = f"set the image of {req.namespace}/{req.deployment} container {req.container}"
        with on_call_errors(what):
            deployment = self.apps.read_namespaced_deployment(req.deployment, req.namespace)
        containers = deployment.spec.template.spec.containers
        index = next((i for i, c in enumerate(containers) if c.name == req.container), None)
        if index is None:
            raise ApplicationError(
                f"Deployment {req.namespace}/{req.deployment} has no container {req.container!r} "
                f"(it has: {', '.join(c.name for c in containers)})",
                type="KubernetesNotFound",
                non_retryable=True,
            )
        before = containers[index].image
        change = ClusterChange(
            action="set image", kind="Deployment", namespace=req.namespace, name=req.deployment,
            field=f"spec.template.spec.containers[{req.container}].image", before=before,
            after=req.image, applied=before != req.image, dry_run=req.dry_run,
        )
        if change.applied:
            patch = [
                # `test` makes the write fail rather than clobber a concurrent change of this container.
                {"op": "test", "path": f"/spec/template/spec/containers/{index}/name", "value": req.container},
                {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": req.image},
            ]
            with on_call_errors(what):
                self.apps.patch_namespaced_deployment(
                    req.deployment, req.namespace, patch, _content_type=JSON_PATCH,
                    field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run),
                )
        return change

    @activity.defn
    def scale(self, req: ScaleRequest) -> ClusterChange:
        """`kubectl scale deployment/NAME --replicas=N`."""
        what = f"scale deployment {req.namespace}/{req.deployment}"
        with on_call_errors(what):
            deployment = self.apps.read_namespaced_deployment(req.deployment, req.namespace)
        before = deployment.spec.replicas
        change = ClusterChange(
            action="scale deployment", kind="Deployment", namespace=req.namespace,
            name=req.deployment, field="spec.replicas", before=before, after=req.replicas,
            applied=before != req.replicas, dry_run=req.dry_run,
        )
        if change.applied:
            with on_call_errors(what):
                self.apps.patch_namespaced_deployment(
                    req.deployment, req.namespace, {"spec": {"replicas": req.replicas}},
                    _content_type=MERGE_PATCH, field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run),
                )
        return change

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
            action="patch LLMDeployment", kind="LLMDeployment", namespace=req.namespace,
            name=req.name, field="spec", before=before, after=req.spec,
            applied=before != req.spec, dry_run=req.dry_run,
        )
        if change.applied:
            with on_call_errors(what):
                self.custom.patch_namespaced_custom_object(
                    LLMD_GROUP, LLMD_VERSION, req.namespace, LLMD_PLURAL, req.name,
                    {"spec": req.spec}, _content_type=MERGE_PATCH, field_manager=FIELD_MANAGER,
                    dry_run=server_dry_run(req.dry_run),
                )
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
            action="apply ingress", kind="Ingress", namespace=spec.namespace, name=spec.name,
            field="spec", before=before, after=after, applied=before != after,
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
                    spec.name, spec.namespace, wanted, field_manager=FIELD_MANAGER,
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
            action="delete ingress", kind="Ingress", namespace=ref.namespace, name=ref.name,
            field="(object)", before=_ingress_view(existing) if existing else None, after=None,
            applied=existing is not None, dry_run=ref.dry_run,
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


def _revision(meta: k8s.V1ObjectMeta) -> int | None:
    value = (meta.annotations or {}).get(_REVISION)
    return int(value) if value and value.isdigit() else None


def _images(template: k8s.V1PodTemplateSpec) -> dict[str, str]:
    return {c.name: c.image or "" for c in template.spec.containers}


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
        namespace=namespace, name=name, phase=status.get("phase") or "Unknown",
        model=model or None, model_version=version, previous_versions=[str(v) for v in previous],
        replicas=spec.get("replicas"), ready_replicas=status.get("readyReplicas") or 0, url=url, health_url=health,
    )


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


def _rollout_status(deployment: k8s.V1Deployment) -> RolloutStatus:
    """kubectl's rollout-status rules, in its words."""
    name, ns = deployment.metadata.name, deployment.metadata.namespace
    status = deployment.status or k8s.V1DeploymentStatus()
    wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated, total = status.updated_replicas or 0, status.replicas or 0
    available = status.available_replicas or 0
    counts = dict(replicas=wanted, updated_replicas=updated, available_replicas=available)
    if (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return RolloutStatus(namespace=ns, name=name, complete=False,
                             message="waiting for the deployment spec update to be observed", **counts)
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return RolloutStatus(namespace=ns, name=name, complete=False,
                                 message=f"deployment {name} exceeded its progress deadline", **counts)
    if updated < wanted:
        message = f"{updated} of {wanted} updated replicas are available"
    elif total > updated:
        message = f"{total - updated} old replicas are pending termination"
    elif available < updated:
        message = f"{available} of {updated} updated replicas are available"
    else:
        return RolloutStatus(namespace=ns, name=name, complete=True,
                             message=f"deployment {name} successfully rolled out", **counts)
    return RolloutStatus(namespace=ns, name=name, complete=False,
                         message=f"waiting for rollout to finish: {message}", **counts)


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
            "name": spec.name, "namespace": spec.namespace,
            "annotations": dict(spec.annotations), "labels": dict(spec.labels),
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


def _pick(current: dict[str, Any], shape: dict[str, Any]) -> dict[str, Any]:
    """The values in `current` at the keys `shape` names (recursively): what a patch replaces."""
    picked: dict[str, Any] = {}
    for key, value in shape.items():
        old = current.get(key)
        picked[key] = _pick(old, value) if isinstance(value, dict) and isinstance(old, dict) else old
    return picked
