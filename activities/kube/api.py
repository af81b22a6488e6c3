"""The Kubernetes API conventions every module of activities/kube/ shares: the client (`connect`),
how API errors become on-call-readable failures (`on_call_errors`, `KubernetesApiErrors`), `kubectl rollout status` polling,
server-side dry runs, patch content types, our field manager, the llm-d custom resource's
coordinates, label selectors, kubectl's views of a pod and the GPUs a pod asks for. None of them is
an activity.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.kube.models import GPU, PodSummary
from activities.kube.pods_models import PodEvidence

LLMD_GROUP, LLMD_VERSION, LLMD_PLURAL = "inference.llm-d.io", "v1alpha1", "llmdeployments"
FIELD_MANAGER = "llm-runbooks"  # who server-side apply and every patch name as the writer (managedFields)
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def connect(kubeconfig: str | Path | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client from a kubeconfig file, else the pod's service account, else ~/.kube/config."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    return k8s_config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None, context=context)


class _Rollout(Protocol):
    complete: bool
    message: str
    waited_seconds: float


RolloutT = TypeVar("RolloutT", bound=_Rollout)


def poll_rollout(read: Callable[[], RolloutT], *, timeout_seconds: float, poll_seconds: float) -> RolloutT:
    """`kubectl rollout status --timeout=...`: read until the rollout is complete, paused, or the timeout
    passes, heartbeating each look so a dead worker's wait is noticed."""
    started = time.monotonic()
    while True:
        status = read()
        status.waited_seconds = round(time.monotonic() - started, 2)
        activity.heartbeat(status.message)
        # A paused Deployment (DaemonSets have no pause) will not roll however long we wait.
        if status.complete or getattr(status, "paused", False) or status.waited_seconds >= timeout_seconds:
            return status
        time.sleep(min(poll_seconds, max(0.0, timeout_seconds - status.waited_seconds)))


@contextmanager
def on_call_errors(doing: str) -> Iterator[None]:
    """Turn API errors that retrying cannot fix into non-retryable, on-call-readable failures.

    401/403 (the worker's identity lacks a permission), 404 (a named object is missing) and
    400/422 (the cluster rejects the request as invalid) stop the activity at once; conflicts,
    throttling and 5xx stay retryable.
    """
    try:
        yield
    except ApiException as err:
        detail = status_message(err)
        if err.status in (401, 403):
            # from None: the incident reports the innermost cause, and this message is the clear one
            raise ApplicationError(
                f"Permission denied while trying to {doing}: {detail}. The worker's Kubernetes identity "
                "(its ServiceAccount in a cluster, else the kubeconfig user) lacks it in its RBAC: see deploy/base/rbac.yaml.",
                type="KubernetesForbidden",
                non_retryable=True,
            ) from None
        if err.status == 404:
            raise ApplicationError(
                f"Not found while trying to {doing}: {detail}. Check the name and namespace.",
                type="KubernetesNotFound",
                non_retryable=True,
            ) from err
        if err.status in (400, 422):
            raise ApplicationError(
                f"The cluster rejected the request to {doing} as invalid: {detail}",
                type="KubernetesInvalid",
                non_retryable=True,
            ) from err
        raise


def status_message(err: ApiException) -> str:
    """The API server's own message for a failed call (its Status body), else the HTTP status."""
    return api_status(err).get("message") or f"HTTP {err.status} {err.reason}"


def server_dry_run(dry_run: bool) -> str | None:
    """The `dryRun` parameter of a write: "All" (`kubectl --dry-run=server`) in shadow mode, else none."""
    return "All" if dry_run else None


def label_selector(selector: k8s.V1LabelSelector | Mapping[str, str] | None) -> str:
    """`key=value,...` (sorted) for a selector's matchLabels or a plain label mapping; '' for none."""
    labels = selector.match_labels if isinstance(selector, k8s.V1LabelSelector) else selector
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def pod_summary(pod: k8s.V1Pod) -> PodSummary:
    """A pod as `kubectl get pods` shows it: phase, READY, RESTARTS, the STATUS word, node."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    containers = len(pod.spec.containers) if pod.spec else len(statuses)
    return PodSummary(
        namespace=pod.metadata.namespace or "",
        name=pod.metadata.name or "",
        phase=(pod.status.phase if pod.status else None) or "Unknown",
        ready=bool(statuses) and all(s.ready for s in statuses),
        ready_containers=sum(1 for s in statuses if s.ready),
        containers=containers,
        restarts=sum(s.restart_count or 0 for s in statuses),
        reason=_pod_reason(pod, statuses),
        node=pod.spec.node_name if pod.spec else None,
        labels=pod.metadata.labels or {},
    )


def _pod_reason(pod: k8s.V1Pod, statuses: list[k8s.V1ContainerStatus]) -> str | None:
    """The word kubectl's STATUS column would show instead of the phase, if any."""
    if pod.metadata.deletion_timestamp:
        return "Terminating"
    for s in statuses:
        if s.state and s.state.waiting and s.state.waiting.reason not in (None, "ContainerCreating"):
            return s.state.waiting.reason
        if s.state and s.state.terminated and s.state.terminated.reason != "Completed":
            return s.state.terminated.reason or "Error"
    if pod.status and pod.status.reason:
        return pod.status.reason
    return None


def pod_evidence(pod: k8s.V1Pod) -> PodEvidence:
    """What `kubectl describe pod` shows that tells why a pod is not Ready."""
    status = pod.status or k8s.V1PodStatus()
    main = (status.container_statuses or [None])[0]
    init = next((s for s in status.init_container_statuses or [] if s.state and s.state.waiting), None)
    waiting = main.state.waiting if main and main.state else None
    terminated = main.state.terminated if main and main.state else None
    last = (main.last_state.terminated if main and main.last_state else None) or terminated
    scheduled = next((c for c in status.conditions or [] if c.type == "PodScheduled" and c.status == "False"), None)
    return PodEvidence(
        name=pod.metadata.name,
        uid=pod.metadata.uid or "",
        phase=status.phase or "Unknown",
        ready=bool(main and main.ready),
        restarts=sum(s.restart_count or 0 for s in status.container_statuses or []),
        node=pod.spec.node_name if pod.spec else None,
        waiting_reason=waiting.reason if waiting else None,
        waiting_message=waiting.message if waiting else None,
        init_waiting_reason=init.state.waiting.reason if init else None,
        last_terminated_reason=last.reason if last else None,
        last_exit_code=last.exit_code if last else None,
        unschedulable=scheduled.message if scheduled else None,
        status_reason=status.reason,
        status_message=status.message,
        claims=[v.persistent_volume_claim.claim_name for v in (pod.spec.volumes or []) if v.persistent_volume_claim]
        if pod.spec
        else [],
        terminating=pod.metadata.deletion_timestamp is not None,
    )


def gpus_requested(pod: k8s.V1Pod) -> int:
    """GPUs a pod's containers ask for; extended resources are allocated by their limits."""
    total = 0
    for container in pod.spec.containers or []:
        resources = container.resources
        limits = (resources.limits if resources else None) or {}
        requests = (resources.requests if resources else None) or {}
        total += int(limits.get(GPU) or requests.get(GPU) or 0)
    return total


def unschedulable_message(pod: k8s.V1Pod) -> str | None:
    """The scheduler's words for a pod it cannot place (its PodScheduled=False Unschedulable condition)."""
    for c in (pod.status.conditions if pod.status else None) or []:
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
            return c.message
    return None


# ---- errors for humans: whatever ApiException escapes an activity ----------------------------
# `on_call_errors` turns the errors a step expects into named failures; whatever else escapes an
# activity (a 500, a 503 from an overloaded API server, a 409) is turned here, once for every activity
# of the worker, into an ApplicationError of type `Kubernetes<Reason>` in the API server's words, never
# the raw exception text (HTTP response headers, audit ids). Its retry stays what it was: the statuses
# a retry cannot fix are non-retryable, every other one is retried by the activity's policy.

# Statuses whose answer cannot change on a retry (as `on_call_errors` treats them).
FINAL_STATUSES = frozenset({400, 401, 403, 404, 422})


def api_status(err: ApiException) -> dict[str, Any]:
    """The Status object the API server sent ({} when the body is not one: a proxy's HTML page)."""
    try:
        status = json.loads(err.body or "")
    except (ValueError, TypeError):
        return {}
    return status if isinstance(status, dict) else {}


def api_failure(err: ApiException, doing: str) -> ApplicationError:
    """`err` for humans: '<doing>: the Kubernetes API server answered 503 ServiceUnavailable: <its message>'."""
    status = api_status(err)
    reason = str(status.get("reason") or err.reason or "").replace(" ", "") or "Error"
    message = status.get("message") or f"HTTP {err.status} {err.reason}"
    return ApplicationError(
        f"{doing}: the Kubernetes API server answered {err.status} {reason}: {message}",
        {"code": err.status, "reason": reason},
        type=f"Kubernetes{reason}",
        non_retryable=err.status in FINAL_STATUSES,
    )


class KubernetesApiErrors(Interceptor):
    """Worker interceptor: every activity's escaping ApiException becomes `api_failure(...)`."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Readable(next)


class _Readable(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except ApiException as err:
            # from None: the raw exception (headers and all) must not travel as the failure's cause
            raise api_failure(err, f"activity {getattr(input.fn, '__name__', 'unknown')}") from None
