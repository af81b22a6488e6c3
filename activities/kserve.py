"""KServe (seed 004): describe an InferenceService with its predictor pods and revisions, read the
predictor's logs, `kubectl patch isvc` one field (recording the value it replaced), redeploy an
InferenceService from its own spec. Through the Kubernetes API; the cluster's GPU allocation, which
seed 004 reads too, is activities/kube/gpus.py.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kserve_models import (
    ISVC_GROUP,
    ISVC_LABEL,
    ISVC_PLURAL,
    ISVC_VERSION,
    REVISION_LABEL,
    InferenceServiceDescription,
    InferenceServicePatch,
    InferenceServiceRedeploy,
    InferenceServiceRef,
    ModelFailure,
    PodLogLines,
    PredictorLogQuery,
    PredictorPod,
    TrafficTarget,
)
from activities.kube.api import FIELD_MANAGER, JSON_PATCH, on_call_errors, pod_summary, server_dry_run
from activities.models import ClusterChange


class KServeActivities:
    """InferenceServices through the Kubernetes API (CustomObjectsApi), pods and nodes through CoreV1."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)

    # ---- reads ---------------------------------------------------------------------------------

    @activity.defn
    def describe_inference_service(self, ref: InferenceServiceRef) -> InferenceServiceDescription:
        """`kubectl describe isvc` + its predictor Deployments and pods; `found=False` when it does not exist."""
        try:
            isvc = self._read(ref.namespace, ref.name)
        except ApiException as err:
            if err.status == 404:
                return InferenceServiceDescription(namespace=ref.namespace, name=ref.name, found=False)
            with on_call_errors(f"read InferenceService {ref.namespace}/{ref.name}"):  # a 403 says which RBAC
                raise
        spec, status = isvc.get("spec") or {}, isvc.get("status") or {}
        predictor = spec.get("predictor") or {}
        comp = (status.get("components") or {}).get("predictor") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        with on_call_errors(f"list the predictor of {ref.namespace}/{ref.name}"):
            deploys = self.apps.list_namespaced_deployment(
                ref.namespace, label_selector=f"{ISVC_LABEL}={ref.name}"
            ).items
            pods = self.core.list_namespaced_pod(ref.namespace, label_selector=f"{ISVC_LABEL}={ref.name}").items
            events = self.core.list_namespaced_event(ref.namespace).items
        rolled_out = comp.get("latestRolledoutRevision")
        stable = next((d for d in deploys if _labels(d.spec.template).get(REVISION_LABEL) == rolled_out), None) or next(
            (d for d in deploys if d.metadata.name == f"{ref.name}-predictor"), None
        )
        traffic = [
            TrafficTarget(
                revision=t.get("revisionName", ""),
                percent=int(t.get("percent") or 0),
                latest=bool(t.get("latestRevision")),
            )
            for t in comp.get("traffic") or []
        ]
        canary_rev = next(
            (t.revision for t in traffic if t.latest and t.revision != rolled_out and len(traffic) > 1), None
        )
        described = [self._predictor_pod(p, events, canary_rev) for p in pods if not p.metadata.deletion_timestamp]
        mine = [
            e for e in events if e.involved_object.kind == "InferenceService" and e.involved_object.name == ref.name
        ]
        started = next(
            (
                _when(e)
                for e in reversed(mine)
                if e.reason == "CanaryCreated" and canary_rev and canary_rev in (e.message or "")
            ),
            None,
        )
        return InferenceServiceDescription(
            namespace=ref.namespace,
            name=ref.name,
            ready=ready.get("status") == "True",
            reason=ready.get("reason") if ready.get("status") != "True" else None,
            message=ready.get("message") or None,
            storage_uri=(predictor.get("model") or {}).get("storageUri"),
            canary_traffic_percent=predictor.get("canaryTrafficPercent"),
            min_replicas=predictor.get("minReplicas"),
            max_replicas=predictor.get("maxReplicas"),
            latest_created_revision=comp.get("latestCreatedRevision"),
            latest_rolled_out_revision=rolled_out,
            previous_rolled_out_revision=comp.get("previousRolledoutRevision"),
            traffic=traffic,
            rolled_out_storage_uri=_storage_uri(stable.spec.template) if stable else None,
            predictor_deployments=sorted(d.metadata.name for d in deploys),
            pods=described,
            events=[f"{e.reason} at {_when(e)}: {e.message}" for e in mine][-10:],
            canary_started_at=started,
            spec=spec,
            **_model_status(status.get("modelStatus") or {}),
        )

    def _predictor_pod(self, pod: k8s.V1Pod, events: list[k8s.CoreV1Event], canary_rev: str | None) -> PredictorPod:
        revision = (pod.metadata.labels or {}).get(REVISION_LABEL)
        status = pod.status or k8s.V1PodStatus()  # a just-created pod may have none yet
        init = next((s for s in (status.init_container_statuses or []) if s.name == "storage-initializer"), None)
        init_state = None
        if init is not None and not init.ready and init.state:
            if init.state.waiting:
                init_state = init.state.waiting.reason
            elif init.state.terminated and init.state.terminated.exit_code:
                init_state = init.state.terminated.reason or "Error"
        scheduling = None
        if (status.phase or "") == "Pending" and not (pod.spec and pod.spec.node_name):
            scheduling = next(
                (
                    e.message
                    for e in reversed(events)
                    if e.reason == "FailedScheduling" and e.involved_object.name == pod.metadata.name
                ),
                None,
            )
        server = next((s for s in (status.container_statuses or []) if s.name == "kserve-container"), None)
        server_state = server_message = None
        if server is not None and server.state and not server.state.running:
            server_state = (
                server.state.waiting.reason
                if server.state.waiting
                else (server.state.terminated.reason if server.state.terminated else None)
            )
            last = (server.last_state.terminated if server.last_state else None) or (
                server.state.terminated if server.state.terminated else None
            )
            server_message = (last.message or "").strip() or None if last else None
        return PredictorPod(
            server_state=server_state,
            server_message=server_message,
            pod=pod_summary(pod),
            revision=revision,
            storage_uri=_storage_uri(pod),
            canary=canary_rev is not None and revision == canary_rev,
            init_state=init_state,
            scheduling=scheduling,
        )

    @activity.defn
    def predictor_logs(self, q: PredictorLogQuery) -> list[PodLogLines]:
        """`kubectl logs POD -c CONTAINER --tail=N` for each predictor pod (a waiting container: `unavailable`)."""
        with on_call_errors(f"list the predictor pods of {q.namespace}/{q.name}"):
            pods = self.core.list_namespaced_pod(q.namespace, label_selector=f"{ISVC_LABEL}={q.name}").items
        out = []
        for pod in pods:
            canary = (pod.metadata.labels or {}).get("app", "").endswith("-canary")
            try:
                text = self.core.read_namespaced_pod_log(
                    pod.metadata.name, q.namespace, container=q.container, tail_lines=q.tail_lines
                )
                out.append(
                    PodLogLines(pod=pod.metadata.name, container=q.container, canary=canary, lines=text.splitlines())
                )
            except ApiException as err:
                if err.status not in (400, 404):
                    raise
                out.append(
                    PodLogLines(
                        pod=pod.metadata.name,
                        container=q.container,
                        canary=canary,
                        unavailable=f"HTTP {err.status}: {(err.body or '')[:200]}",
                    )
                )
        return out

    # ---- writes --------------------------------------------------------------------------------

    @activity.defn
    def patch_inference_service(self, req: InferenceServicePatch) -> ClusterChange:
        """One JSON-patch `replace` of `req.path`; `before` is the value it replaced (None: absent,
        then the patch is an `add`). Already at the value: applied=False (a retry, or nothing to do)."""
        what = f"patch InferenceService {req.namespace}/{req.name} {req.path}"
        with on_call_errors(what):
            isvc = self._read(req.namespace, req.name)
        before = _at(isvc, req.path)
        change = ClusterChange(
            action=req.action,
            kind="InferenceService",
            namespace=req.namespace,
            name=req.name,
            field=req.path.strip("/").replace("/", "."),
            before=before,
            after=req.value,
            applied=before != req.value,
            dry_run=req.dry_run,
        )
        if change.applied:
            body = [{"op": "replace" if before is not None else "add", "path": req.path, "value": req.value}]
            with on_call_errors(what):
                self.custom.patch_namespaced_custom_object(
                    ISVC_GROUP,
                    ISVC_VERSION,
                    req.namespace,
                    ISVC_PLURAL,
                    req.name,
                    body,
                    _content_type=JSON_PATCH,
                    field_manager=FIELD_MANAGER,
                    dry_run=server_dry_run(req.dry_run),
                )
        return change

    @activity.defn
    def redeploy_inference_service(self, req: InferenceServiceRedeploy) -> ClusterChange:
        """`kubectl delete isvc` + `kubectl apply` of the spec read just before (labels and annotations kept)."""
        what = f"redeploy InferenceService {req.namespace}/{req.name}"
        with on_call_errors(what):
            isvc = self._read(req.namespace, req.name)
        meta = isvc["metadata"]
        body = {
            "apiVersion": f"{ISVC_GROUP}/{ISVC_VERSION}",
            "kind": "InferenceService",
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
            "spec": isvc.get("spec") or {},
        }
        change = ClusterChange(
            action="redeploy InferenceService",
            kind="InferenceService",
            namespace=req.namespace,
            name=req.name,
            field="metadata.uid",
            before=meta.get("uid"),
            after="recreated",
            dry_run=req.dry_run,
        )
        with on_call_errors(what):
            self.custom.delete_namespaced_custom_object(
                ISVC_GROUP, ISVC_VERSION, req.namespace, ISVC_PLURAL, req.name, dry_run=server_dry_run(req.dry_run)
            )
        if req.dry_run:
            return change
        deadline = time.monotonic() + req.wait_seconds
        while time.monotonic() < deadline:
            try:
                self._read(req.namespace, req.name)
            except ApiException as err:
                if err.status == 404:
                    break
                raise
            activity.heartbeat("waiting for the old InferenceService to go")
            time.sleep(0.5)
        else:
            raise ApplicationError(
                f"{what}: the old object was still there after {req.wait_seconds:g}s",
                type="RedeployTimeout",
                non_retryable=True,
            )
        with on_call_errors(what):
            created = self.custom.create_namespaced_custom_object(
                ISVC_GROUP, ISVC_VERSION, req.namespace, ISVC_PLURAL, body, field_manager=FIELD_MANAGER
            )
        change.after = created["metadata"].get("uid")
        return change

    def _read(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name)


def _model_status(model: dict[str, Any]) -> dict[str, Any]:
    """InferenceServiceDescription's model_state, transition_status and last_failure from modelStatus."""
    failure = model.get("lastFailureInfo") or None
    return {
        "model_state": (model.get("states") or {}).get("targetModelState"),
        "transition_status": model.get("transitionStatus"),
        "last_failure": ModelFailure(
            reason=failure.get("reason") or "", message=failure.get("message") or "", exit_code=failure.get("exitCode")
        )
        if failure
        else None,
    }


def _labels(template: k8s.V1PodTemplateSpec) -> dict[str, str]:
    return (template.metadata.labels if template.metadata else None) or {}


def _storage_uri(obj: k8s.V1PodTemplateSpec | k8s.V1Pod) -> str | None:
    init = next((c for c in (obj.spec.init_containers or []) if c.name == "storage-initializer"), None)
    return (init.args or [None])[0] if init is not None else None


def _at(obj: dict[str, Any], path: str) -> Any:
    for part in path.strip("/").split("/"):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _when(event: k8s.CoreV1Event) -> str:
    stamp = event.last_timestamp or event.event_time or event.first_timestamp
    return stamp.isoformat().replace("+00:00", "Z") if stamp else ""
