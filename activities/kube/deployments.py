"""Deployments: what an SRE does to one with kubectl, through the official client.

`kubectl get deployment` (its images, its scale), `kubectl rollout status|history|restart|undo`,
`kubectl set image` and `kubectl scale`. The client blocks, so every activity here is a plain (sync)
function that the worker runs on its thread pool. Writes return a `ClusterChange` with the value
they replaced, and are safe to retry: a retry that finds our value already in place reports
`applied=False` instead of writing (and, for a restart, rolling the pods) again.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import (
    FIELD_MANAGER,
    JSON_PATCH,
    STRATEGIC_MERGE_PATCH,
    label_selector,
    on_call_errors,
    poll_rollout,
    server_dry_run,
)
from activities.kube.deployments_models import (
    CHANGE_CAUSE,
    REPLICAS_BEFORE_ANNOTATION,
    SCALED_BY_ANNOTATION,
    DeploymentImages,
    DeploymentRef,
    DeploymentScale,
    ImageChange,
    RestartRequest,
    Revision,
    RolloutHistory,
    RolloutStatus,
    RolloutUndo,
    RolloutWait,
    ScaleRequest,
)
from activities.kube.models import GPU, RESTARTED_AT, RESTARTED_BY
from activities.models import ClusterChange

_REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"


class KubeDeployments:
    """kubectl's Deployment verbs for the playbooks, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.apps = k8s.AppsV1Api(api_client)

    # ---- reads -------------------------------------------------------------------------------

    @activity.defn
    def deployment_images(self, ref: DeploymentRef) -> DeploymentImages:
        """The images a Deployment runs, and those of its newest earlier revision that ran others.

        Restarts make revisions with the same images; skipping them finds what `kubectl set
        image` would have to go back to.
        """
        deployment, owned = self._with_replica_sets(
            ref.namespace, ref.name, f"read deployment {ref.namespace}/{ref.name}"
        )
        current = _images(deployment.spec.template)
        owned.sort(key=lambda rs: _revision(rs.metadata) or 0)
        revision = _revision(deployment.metadata) or (_revision(owned[-1].metadata) if owned else None)
        earlier = [_images(rs.spec.template) for rs in owned if (_revision(rs.metadata) or 0) < (revision or 0)]
        previous = next((images for images in reversed(earlier) if images != current), None)
        return DeploymentImages(
            namespace=ref.namespace,
            name=ref.name,
            containers=current,
            previous=previous,
            revision=revision,
        )

    @activity.defn
    def deployment_scale(self, ref: DeploymentRef) -> DeploymentScale:
        """Replicas, ready replicas and GPUs per pod of one Deployment; KubernetesNotFound if absent."""
        with on_call_errors(f"read deployment {ref.namespace}/{ref.name}"):
            d = self.apps.read_namespaced_deployment(ref.name, ref.namespace)
        gpus, containers = 0, _containers(d.spec.template)
        for c in containers:
            limits = (c.resources.limits if c.resources else None) or {}
            gpus += int(limits.get(GPU, 0) or 0)
        args = (containers[0].args or []) if containers else []
        model = args[args.index("--model") + 1] if "--model" in args[:-1] else None
        return DeploymentScale(
            namespace=ref.namespace,
            name=ref.name,
            replicas=d.spec.replicas or 0,
            ready_replicas=(d.status.ready_replicas if d.status else None) or 0,
            gpus_per_pod=gpus,
            scaled_by=(d.metadata.annotations or {}).get(SCALED_BY_ANNOTATION),
            model=model,
        )

    @activity.defn
    def wait_for_rollout(self, wait: RolloutWait) -> RolloutStatus:
        """`kubectl rollout status --timeout=...`: polls until complete or the timeout passes."""

        def read() -> RolloutStatus:
            with on_call_errors(f"read deployment {wait.namespace}/{wait.name}"):
                return _rollout_status(self.apps.read_namespaced_deployment(wait.name, wait.namespace))

        return poll_rollout(read, timeout_seconds=wait.timeout_seconds, poll_seconds=wait.poll_seconds)

    @activity.defn
    def rollout_history(self, ref: DeploymentRef) -> RolloutHistory:
        """`kubectl rollout history deployment/NAME`: one Revision per ReplicaSet the Deployment owns,
        oldest first, with the time it was created (when that revision was rolled out)."""
        deployment, owned = self._with_replica_sets(
            ref.namespace, ref.name, f"read deployment {ref.namespace}/{ref.name} and its ReplicaSets"
        )
        revisions = sorted((_history_line(rs) for rs in owned), key=lambda r: r.revision)
        return RolloutHistory(
            namespace=ref.namespace, name=ref.name, current=_revision(deployment.metadata), revisions=revisions
        )

    def _with_replica_sets(
        self, namespace: str, name: str, doing: str
    ) -> tuple[k8s.V1Deployment, list[k8s.V1ReplicaSet]]:
        """The Deployment and the ReplicaSets it owns (its revisions)."""
        with on_call_errors(doing):
            deployment = self.apps.read_namespaced_deployment(name, namespace)
            replica_sets = self.apps.list_namespaced_replica_set(
                namespace, label_selector=label_selector(deployment.spec.selector)
            ).items
        owned = [
            rs
            for rs in replica_sets
            if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])
        ]
        return deployment, owned

    # ---- writes ------------------------------------------------------------------------------

    @activity.defn
    def restart_deployment(self, req: RestartRequest) -> ClusterChange:
        """`kubectl rollout restart`, stamped with the incident, so a retry does not roll twice.
        A paused Deployment is refused as kubectl refuses it (`DeploymentPaused`, non-retryable):
        someone paused it on purpose, and a restart would not roll until it is resumed."""
        what = f"restart deployment {req.namespace}/{req.name}"
        with on_call_errors(what):
            deployment = self.apps.read_namespaced_deployment(req.name, req.namespace)
        if deployment.spec.paused:
            raise _paused(deployment, "can't restart paused deployment (run rollout resume first)")
        annotations = deployment.spec.template.metadata.annotations or {}
        change = ClusterChange(
            action="restart deployment",
            kind="Deployment",
            namespace=req.namespace,
            name=req.name,
            field=f"spec.template.metadata.annotations[{RESTARTED_AT}]",
            before=annotations.get(RESTARTED_AT),
            after=req.restarted_at,
            dry_run=req.dry_run,
        )
        if annotations.get(RESTARTED_BY) == req.restarted_by:
            # Our own earlier attempt got through: the pods are already rolling for this step.
            change.applied = False
            return change
        body = {
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {
                            RESTARTED_AT: req.restarted_at,
                            RESTARTED_BY: req.restarted_by,
                        }
                    }
                }
            }
        }
        with on_call_errors(what):
            self.apps.patch_namespaced_deployment(
                req.name,
                req.namespace,
                body,
                _content_type=STRATEGIC_MERGE_PATCH,
                field_manager=FIELD_MANAGER,
                dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def set_image(self, req: ImageChange) -> ClusterChange:
        """`kubectl set image deployment/NAME CONTAINER=IMAGE`."""
        what = f"set the image of {req.namespace}/{req.deployment} container {req.container}"
        with on_call_errors(what):
            deployment = self.apps.read_namespaced_deployment(req.deployment, req.namespace)
        containers = _containers(deployment.spec.template)
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
            action="set image",
            kind="Deployment",
            namespace=req.namespace,
            name=req.deployment,
            field=f"spec.template.spec.containers[{req.container}].image",
            before=before,
            after=req.image,
            applied=before != req.image,
            dry_run=req.dry_run,
        )
        if change.applied:
            patch = [
                # `test` makes the write fail rather than clobber a concurrent change of this container.
                {"op": "test", "path": f"/spec/template/spec/containers/{index}/name", "value": req.container},
                {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": req.image},
            ]
            with on_call_errors(what):
                self.apps.patch_namespaced_deployment(
                    req.deployment,
                    req.namespace,
                    patch,
                    _content_type=JSON_PATCH,
                    field_manager=FIELD_MANAGER,
                    dry_run=server_dry_run(req.dry_run),
                )
        return change

    @activity.defn
    def scale_deployment(self, req: ScaleRequest) -> ClusterChange:
        """`kubectl scale`: spec.replicas set, the replicas it found recorded on the object (a retry
        reports applied=False with the original); a rollback removes that record."""
        what = f"scale deployment {req.namespace}/{req.name} to {req.replicas}"
        with on_call_errors(what):
            d = self.apps.read_namespaced_deployment(req.name, req.namespace)
        annotations = d.metadata.annotations or {}
        current = d.spec.replicas or 0
        change = ClusterChange(
            action=req.action,
            kind="Deployment",
            namespace=req.namespace,
            name=req.name,
            field="spec.replicas",
            before=current,
            after=req.replicas,
            dry_run=req.dry_run,
        )
        if not req.rollback and annotations.get(SCALED_BY_ANNOTATION) == req.change_key:
            # our own earlier attempt got through: report the original it recorded
            change.before = int(annotations.get(REPLICAS_BEFORE_ANNOTATION, current))
            change.applied = False
            return change
        if req.rollback and current == req.replicas and SCALED_BY_ANNOTATION not in annotations:
            change.applied = False
            return change
        stamp = (
            {SCALED_BY_ANNOTATION: None, REPLICAS_BEFORE_ANNOTATION: None}
            if req.rollback
            else {
                SCALED_BY_ANNOTATION: req.change_key,
                REPLICAS_BEFORE_ANNOTATION: annotations.get(REPLICAS_BEFORE_ANNOTATION, str(current)),
            }
        )
        body = {"metadata": {"annotations": stamp}, "spec": {"replicas": req.replicas}}
        with on_call_errors(what):
            self.apps.patch_namespaced_deployment(
                req.name,
                req.namespace,
                body,
                _content_type=STRATEGIC_MERGE_PATCH,
                field_manager=FIELD_MANAGER,
                dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def rollout_undo(self, req: RolloutUndo) -> ClusterChange:
        """`kubectl rollout undo --to-revision=N`: the pod template replaced by revision N's (as kubectl
        does, without its pod-template-hash). Before/after name the revisions and their images.
        Errors (non-retryable): `RevisionNotFound` when revision N's ReplicaSet is gone,
        `DeploymentPaused` when the Deployment is paused (kubectl refuses it the same way)."""
        what = f"roll back deployment {req.namespace}/{req.name} to revision {req.to_revision}"
        deployment, owned = self._with_replica_sets(req.namespace, req.name, what)
        if deployment.spec.paused:
            raise _paused(
                deployment,
                "you cannot rollback a paused deployment; resume it first with "
                f"'kubectl rollout resume deployment/{req.name} -n {req.namespace}' and try again",
            )
        target = next((rs for rs in owned if _revision(rs.metadata) == req.to_revision), None)
        if target is None:
            raise ApplicationError(
                f"{what}: no ReplicaSet of revision {req.to_revision} is left "
                f"(revisions: {sorted(_history_line(rs).revision for rs in owned)})",
                type="RevisionNotFound",
                non_retryable=True,
            )
        template = self.api_client.sanitize_for_serialization(target.spec.template)
        (template.get("metadata") or {}).get("labels", {}).pop(TEMPLATE_HASH, None)
        current = self.api_client.sanitize_for_serialization(deployment.spec.template)
        now = _revision(deployment.metadata)
        change = ClusterChange(
            action="rollout undo" if not req.rollback else "rollout undo (restore the recorded revision)",
            kind="Deployment",
            namespace=req.namespace,
            name=req.name,
            field="spec.template",
            before=f"revision {req.from_revision or now} ({_images_of(current)})",
            after=f"revision {req.to_revision} ({_images_of(template)})",
            applied=_comparable(current) != _comparable(template),
            dry_run=req.dry_run,
        )
        if change.applied:
            with on_call_errors(what):
                self.apps.patch_namespaced_deployment(
                    req.name,
                    req.namespace,
                    [{"op": "replace", "path": "/spec/template", "value": template}],
                    _content_type=JSON_PATCH,
                    field_manager=FIELD_MANAGER,
                    dry_run=server_dry_run(req.dry_run),
                )
        return change


# ---- helpers: plain functions over the client's models -----------------------------------------


def _paused(deployment: k8s.V1Deployment, kubectl_says: str) -> ApplicationError:
    """kubectl's refusal for a paused Deployment; a retry cannot fix it, only a human's resume."""
    meta = deployment.metadata
    return ApplicationError(
        f'deployments.apps "{meta.name}" in {meta.namespace} is paused: {kubectl_says}. Automation does not '
        "resume a Deployment someone paused",
        type="DeploymentPaused",
        non_retryable=True,
    )


def _revision(meta: k8s.V1ObjectMeta) -> int | None:
    value = (meta.annotations or {}).get(_REVISION)
    return int(value) if value and value.isdigit() else None


def _containers(template: k8s.V1PodTemplateSpec | None) -> list[k8s.V1Container]:
    """The template's containers; none when the object has no template or pod spec."""
    return (template.spec.containers if template and template.spec else None) or []


def _images(template: k8s.V1PodTemplateSpec | None) -> dict[str, str]:
    return {c.name: c.image or "" for c in _containers(template)}


def _history_line(rs: k8s.V1ReplicaSet) -> Revision:
    annotations = rs.metadata.annotations or {}
    template = rs.spec.template if rs.spec else None
    return Revision(
        revision=_revision(rs.metadata) or 0,
        created=rs.metadata.creation_timestamp,
        images=_images(template),
        change_cause=annotations.get(CHANGE_CAUSE),
        template_hash=(rs.metadata.labels or {}).get(TEMPLATE_HASH),
        replicas=(rs.status.replicas if rs.status else 0) or 0,
        labels={
            k: v
            for k, v in ((template.metadata.labels if template and template.metadata else None) or {}).items()
            if k != TEMPLATE_HASH
        },
    )


def _images_of(template: dict[str, Any]) -> str:
    return ", ".join(f"{c.get('name')}={c.get('image')}" for c in (template.get("spec") or {}).get("containers", []))


def _comparable(template: dict[str, Any]) -> dict[str, Any]:
    """A template as a rollout compares it: without the hash label the controller adds."""
    meta = dict(template.get("metadata") or {})
    meta["labels"] = {k: v for k, v in (meta.get("labels") or {}).items() if k != TEMPLATE_HASH}
    meta.pop("creationTimestamp", None)
    return {**template, "metadata": meta}


def _rollout_status(deployment: k8s.V1Deployment) -> RolloutStatus:
    """kubectl's rollout-status rules, in its words."""
    name, ns = deployment.metadata.name, deployment.metadata.namespace
    status = deployment.status or k8s.V1DeploymentStatus()
    wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated, total = status.updated_replicas or 0, status.replicas or 0
    available = status.available_replicas or 0
    counts = dict(replicas=wanted, updated_replicas=updated, available_replicas=available)
    if deployment.spec.paused:
        # No rollout happens while paused, so waiting longer cannot help: say so at once.
        return RolloutStatus(
            namespace=ns,
            name=name,
            complete=False,
            paused=True,
            message=f"deployment {name} is paused: its rollout waits for `kubectl rollout resume deployment/{name}`",
            **counts,
        )
    if (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return RolloutStatus(
            namespace=ns,
            name=name,
            complete=False,
            message="waiting for the deployment spec update to be observed",
            **counts,
        )
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return RolloutStatus(
                namespace=ns,
                name=name,
                complete=False,
                message=f"deployment {name} exceeded its progress deadline",
                **counts,
            )
    if updated < wanted:
        message = f"{updated} of {wanted} updated replicas are available"
    elif total > updated:
        message = f"{total - updated} old replicas are pending termination"
    elif available < updated:
        message = f"{available} of {updated} updated replicas are available"
    else:
        return RolloutStatus(
            namespace=ns, name=name, complete=True, message=f"deployment {name} successfully rolled out", **counts
        )
    return RolloutStatus(
        namespace=ns, name=name, complete=False, message=f"waiting for rollout to finish: {message}", **counts
    )
