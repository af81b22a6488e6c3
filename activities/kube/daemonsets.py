"""DaemonSets: `kubectl rollout restart ds` and `kubectl rollout status ds` (SOP-003 restarts the
NVIDIA device plugin with them).

Sync (the client blocks), run on the worker's thread pool. The restart returns a `ClusterChange`
with the value it replaced and is stamped with the incident step, so a retry does not roll twice.
"""

from __future__ import annotations

from kubernetes import client as k8s
from temporalio import activity

from activities.kube.api import FIELD_MANAGER, STRATEGIC_MERGE_PATCH, on_call_errors, poll_rollout, server_dry_run
from activities.kube.daemonsets_models import DaemonSetRestart, DaemonSetRolloutStatus, DaemonSetRolloutWait
from activities.kube.models import RESTARTED_AT, RESTARTED_BY
from activities.models import ClusterChange


class KubeDaemonSets:
    """kubectl rollout restart / status for DaemonSets, against one cluster."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.apps = k8s.AppsV1Api(api_client)

    @activity.defn
    def restart_daemonset(self, req: DaemonSetRestart) -> ClusterChange:
        """`kubectl rollout restart ds/NAME`, stamped with the incident, so a retry does not roll twice."""
        what = f"restart DaemonSet {req.namespace}/{req.name}"
        with on_call_errors(what):
            ds = self.apps.read_namespaced_daemon_set(req.name, req.namespace)
        annotations = (ds.spec.template.metadata.annotations if ds.spec.template.metadata else None) or {}
        change = ClusterChange(
            action="restart daemonset",
            kind="DaemonSet",
            namespace=req.namespace,
            name=req.name,
            field=f"spec.template.metadata.annotations[{RESTARTED_AT}]",
            before=annotations.get(RESTARTED_AT),
            after=req.restarted_at,
            dry_run=req.dry_run,
        )
        if annotations.get(RESTARTED_BY) == req.restarted_by:
            # Our own earlier attempt got through: the plugin pods are already rolling for this step.
            change.applied = False
            return change
        body = {
            "spec": {
                "template": {
                    "metadata": {"annotations": {RESTARTED_AT: req.restarted_at, RESTARTED_BY: req.restarted_by}}
                }
            }
        }
        with on_call_errors(what):
            self.apps.patch_namespaced_daemon_set(
                req.name,
                req.namespace,
                body,
                _content_type=STRATEGIC_MERGE_PATCH,
                field_manager=FIELD_MANAGER,
                dry_run=server_dry_run(req.dry_run),
            )
        return change

    @activity.defn
    def wait_for_daemonset_rollout(self, wait: DaemonSetRolloutWait) -> DaemonSetRolloutStatus:
        """`kubectl rollout status ds/NAME --timeout=...`: polls until complete or the timeout passes."""

        def read() -> DaemonSetRolloutStatus:
            with on_call_errors(f"read DaemonSet {wait.namespace}/{wait.name}"):
                return daemonset_rollout_status(self.apps.read_namespaced_daemon_set(wait.name, wait.namespace))

        return poll_rollout(read, timeout_seconds=wait.timeout_seconds, poll_seconds=wait.poll_seconds)


def daemonset_rollout_status(ds: k8s.V1DaemonSet) -> DaemonSetRolloutStatus:
    """kubectl's DaemonSet rollout-status rules, in its words."""
    name, ns = ds.metadata.name, ds.metadata.namespace
    status = ds.status or k8s.V1DaemonSetStatus(
        current_number_scheduled=0, desired_number_scheduled=0, number_misscheduled=0, number_ready=0
    )
    desired, updated = status.desired_number_scheduled or 0, status.updated_number_scheduled or 0
    available = status.number_available or 0
    counts = dict(namespace=ns, name=name, desired=desired, updated=updated, available=available)
    strategy = ds.spec.update_strategy.type if ds.spec.update_strategy else "RollingUpdate"
    if strategy != "RollingUpdate":
        return DaemonSetRolloutStatus(
            complete=False,
            message=f"rollout status is only available for RollingUpdate strategy type, "
            f"not {strategy}: restart the pods by deleting them",
            **counts,
        )
    if (status.observed_generation or 0) < (ds.metadata.generation or 0):
        return DaemonSetRolloutStatus(
            complete=False, message="waiting for daemon set spec update to be observed", **counts
        )
    if updated < desired:
        message = f"{updated} out of {desired} new pods have been updated"
    elif available < desired:
        message = f"{available} of {updated} updated pods are available"
    else:
        return DaemonSetRolloutStatus(complete=True, message=f"daemon set {name!r} successfully rolled out", **counts)
    return DaemonSetRolloutStatus(
        complete=False, message=f"waiting for daemon set {name!r} rollout to finish: {message}", **counts
    )
