"""The high-latency runbook's (seed 001) writes: scale a deployment (decode or prefill) and warm a
model up, each recording what it replaced so the playbook's rollback restores it exactly.
"""

from __future__ import annotations

import asyncio

import httpx
from kubernetes import client as k8s
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube_api import FIELD_MANAGER, GPU, STRATEGIC_MERGE_PATCH, on_call_errors, server_dry_run
from activities.latency_models import (
    REPLICAS_BEFORE_ANNOTATION,
    SCALED_BY_ANNOTATION,
    WARMUP_URL_ANNOTATION,
    DeploymentScale,
    DeploymentScaleQuery,
    ScaleRequest,
    WarmUpRequest,
)
from activities.models import ClusterChange



class LatencyActivities:
    """Scale reads and writes through the Kubernetes API; the warm-up POST through httpx."""

    def __init__(self, api: k8s.ApiClient, http: httpx.AsyncClient) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.http = http

    @activity.defn
    def deployment_scale(self, q: DeploymentScaleQuery) -> DeploymentScale:
        """Replicas, ready replicas and GPUs per pod of one Deployment; KubernetesNotFound if absent."""
        with on_call_errors(f"read deployment {q.namespace}/{q.name}"):
            d = self.apps.read_namespaced_deployment(q.name, q.namespace)
        gpus, containers = 0, d.spec.template.spec.containers
        for c in containers:
            limits = (c.resources.limits if c.resources else None) or {}
            gpus += int(limits.get(GPU, 0) or 0)
        args = (containers[0].args or []) if containers else []
        model = args[args.index("--model") + 1] if "--model" in args[:-1] else None
        return DeploymentScale(
            namespace=q.namespace, name=q.name, replicas=d.spec.replicas or 0,
            ready_replicas=(d.status.ready_replicas if d.status else None) or 0, gpus_per_pod=gpus,
            scaled_by=(d.metadata.annotations or {}).get(SCALED_BY_ANNOTATION), model=model,
        )

    @activity.defn
    def scale_deployment(self, req: ScaleRequest) -> ClusterChange:
        """`kubectl scale`: spec.replicas set, the replicas it found recorded on the object (a retry
        reports applied=False with the original); a rollback removes that record."""
        what = f"scale deployment {req.namespace}/{req.name} to {req.replicas}"
        with on_call_errors(what):
            d = self.apps.read_namespaced_deployment(req.name, req.namespace)
        annotations = d.metadata.annotations or {}
        current = d.spec.replicas or 0
        change = ClusterChange(action=req.action, kind="Deployment", namespace=req.namespace, name=req.name,
                               field="spec.replicas", before=current, after=req.replicas, dry_run=req.dry_run)
        if not req.rollback and annotations.get(SCALED_BY_ANNOTATION) == req.change_key:
            # our own earlier attempt got through: report the original it recorded
            change.before = int(annotations.get(REPLICAS_BEFORE_ANNOTATION, current))
            change.applied = False
            return change
        if req.rollback and current == req.replicas and SCALED_BY_ANNOTATION not in annotations:
            change.applied = False
            return change
        stamp = ({SCALED_BY_ANNOTATION: None, REPLICAS_BEFORE_ANNOTATION: None} if req.rollback else
                 {SCALED_BY_ANNOTATION: req.change_key,
                  REPLICAS_BEFORE_ANNOTATION: annotations.get(REPLICAS_BEFORE_ANNOTATION, str(current))})
        body = {"metadata": {"annotations": stamp}, "spec": {"replicas": req.replicas}}
        with on_call_errors(what):
            self.apps.patch_namespaced_deployment(req.name, req.namespace, body, _content_type=STRATEGIC_MERGE_PATCH,
                                                  field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run))
        return change

    @activity.defn
    async def warm_up_model(self, req: WarmUpRequest) -> ClusterChange:
        """POST the model's warm-up endpoint; a non-2xx answer fails the activity (retryable: the
        server may be loading), with the status and the start of its body."""
        svc = await asyncio.to_thread(self._read_service, req.namespace, req.service)
        url = (svc.metadata.annotations or {}).get(WARMUP_URL_ANNOTATION)
        if not url:
            port = svc.spec.ports[0].port if svc.spec and svc.spec.ports else 8080
            url = f"http://{req.service}.{req.namespace}.svc:{port}/v1/warmup"
        try:
            response = await self.http.post(url, json={"model": req.model}, timeout=req.timeout_seconds)
        except httpx.HTTPError as err:
            raise ApplicationError(f"warm-up of {req.model} at {url}: no answer ({type(err).__name__}: {err})",
                                   type="WarmUpFailed") from None
        if not response.is_success:
            raise ApplicationError(f"warm-up of {req.model} at {url}: HTTP {response.status_code}: "
                                   f"{response.text[:200]}", type="WarmUpFailed",
                                   non_retryable=400 <= response.status_code < 500)
        return ClusterChange(action="warm up model", kind="Service", namespace=req.namespace, name=req.service,
                             field=f"POST {url}", before=None, after=f"HTTP {response.status_code}: {req.model}")

    def _read_service(self, namespace: str, name: str) -> k8s.V1Service:
        with on_call_errors(f"read service {namespace}/{name}"):
            return self.core.read_namespaced_service(name, namespace)
