"""PersistentVolumeClaims: recreate one with another spec (a claim's spec is immutable), as SOP-004's
storage fix does.

Sync (the client blocks), run on the worker's thread pool. The new claim is stamped with the
incident step, so a retry that finds it done does nothing; deleted but not created again, the
activity fails with the deletion as its record (WritesBeforeFailure).
"""

from __future__ import annotations

import time

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube.api import FIELD_MANAGER, on_call_errors, server_dry_run
from activities.kube.claims_models import ClaimReplacement
from activities.models import ClusterChange, writes_kept_on_failure

# Stamped on a claim we recreate: the incident step that did it, so a retry recognises its own work.
RECREATED_BY = "llm-runbooks.io/recreated-by"
_BINDING_ANNOTATIONS = ("pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/")


class KubeClaims:
    """`kubectl delete pvc` and `kubectl apply` of its new spec, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)

    @activity.defn
    def replace_claim(self, req: ClaimReplacement) -> ClusterChange:
        """Delete the claim and create it again with `spec_after`; a retry finding it done does nothing."""
        what = f"recreate PersistentVolumeClaim {req.namespace}/{req.name}"
        change = ClusterChange(
            action="recreate claim",
            kind="PersistentVolumeClaim",
            namespace=req.namespace,
            name=req.name,
            field="spec",
            before=req.spec_before,
            after=req.spec_after,
            dry_run=req.dry_run,
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
                    type="ClaimBound",
                    non_retryable=True,
                )
            labels, annotations = existing.metadata.labels or {}, _kept(existing.metadata.annotations or {})
            self._delete_claim(existing, req, what)
            deleted = [
                ClusterChange(
                    action="delete claim (to recreate it)",
                    kind="PersistentVolumeClaim",
                    namespace=req.namespace,
                    name=req.name,
                    field="(object)",
                    before=req.spec_before,
                    after=None,
                    dry_run=req.dry_run,
                )
            ]
        else:
            labels, annotations, deleted = {}, {}, []
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": req.name,
                "namespace": req.namespace,
                "labels": labels,
                "annotations": {**annotations, RECREATED_BY: req.key},
            },
            "spec": req.spec_after,
        }
        # Deleted but not created again: the failure says so, so the incident records the deletion.
        with writes_kept_on_failure(deleted, what), on_call_errors(what):
            self.core.create_namespaced_persistent_volume_claim(
                req.namespace, body, field_manager=FIELD_MANAGER, dry_run=server_dry_run(req.dry_run)
            )
        return change

    def _read_claim(self, ns: str, name: str) -> k8s.V1PersistentVolumeClaim | None:
        try:
            return self.core.read_namespaced_persistent_volume_claim(name, ns)
        except ApiException as err:
            if err.status == 404:
                return None
            with on_call_errors(f"read PersistentVolumeClaim {ns}/{name}"):
                raise

    def _delete_claim(self, claim: k8s.V1PersistentVolumeClaim, req: ClaimReplacement, what: str) -> None:
        options = k8s.V1DeleteOptions(
            preconditions=k8s.V1Preconditions(uid=claim.metadata.uid), dry_run=["All"] if req.dry_run else None
        )
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
                    type="ClaimTerminating",
                    non_retryable=True,
                )
            activity.heartbeat("waiting for the old claim to go")
            time.sleep(0.5)


def _kept(annotations: dict[str, str]) -> dict[str, str]:
    """The old claim's annotations minus the binding ones, which belong to the old volume."""
    return {k: v for k, v in annotations.items() if not k.startswith(_BINDING_ANNOTATIONS) and k != RECREATED_BY}
