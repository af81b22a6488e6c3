"""The facades beside `Cluster` (workflows/incident/calls.py), declared the same way: Prometheus
queries and seed 004's KServe activities, each bound to one incident as `Cluster` is."""

from __future__ import annotations

from temporalio import workflow

from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.incident.actions import ActivityRunner
from workflows.incident.calls import Cluster, Read, Write, patch_json
from workflows.incident.models import SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.kserve_models import (
        InferenceServiceDescription,
        InferenceServicePatch,
        InferenceServiceRedeploy,
        InferenceServiceRef,
        PodLogLines,
        PredictorLogQuery,
    )
    from activities.kube.gpus_models import GpuAllocation, GpuAllocationQuery
    from activities.models import ClusterChange
    from activities.prometheus_models import InstantQuery, InstantResult, RangeQuery, RangeResult


def retry_within(seconds: float) -> RetryPolicy:
    """Backoff from 2 s, doubling up to a minute between attempts, for as many attempts as fit in
    `seconds` of waiting (at least two)."""
    attempts, waited, wait = 1, 0.0, 2.0
    while waited + wait <= seconds:
        attempts, waited, wait = attempts + 1, waited + wait, min(wait * 2, 60.0)
    return RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=max(2, attempts),
    )


class Prometheus(Cluster):
    """Prometheus queries (activities/prometheus.py), bound to one incident as `Cluster` is:

        p95 = await self.prometheus.query_prometheus(InstantQuery(expr=P95))

    Reads only (`Incident.check`); timeout per attempt: the query's own `timeout_seconds` plus one
    API call. An overloaded Prometheus usually recovers within minutes, so an unavailable one is
    retried for the timings' `dependency_retry_seconds` (3 minutes by default), not seconds.
    Failures: ActivityError whose cause is PrometheusUnavailable (after the retries),
    PrometheusBadQuery or PrometheusNotConfigured (at once). An answer may still say it could not
    tell (no series, warnings: `InstantResult.could_not_tell`).
    """

    def __init__(self, incident: ActivityRunner, timings: SopTimings) -> None:
        super().__init__(incident, timings, retry=retry_within(timings.dependency_retry_seconds))

    query_prometheus = Read(
        InstantQuery, InstantResult, lambda q: f"promtool query instant '{q.expr}'", bound=lambda q: q.timeout_seconds
    )
    query_prometheus_range = Read(
        RangeQuery,
        RangeResult,
        lambda q: (
            f"promtool query range '{q.expr}' --start {q.start:%H:%M:%S} --end {q.end:%H:%M:%S} "
            f"--step {q.step_seconds:g}s"
        ),
        bound=lambda q: q.timeout_seconds,
    )


class KServe(Cluster):
    """Seed 004's KServe activities (activities/kserve.py; `gpu_allocation`: activities/kube/gpus.py), bound
    to one incident as `Cluster` is:

        isvc = await self.kserve.describe_inference_service(InferenceServiceRef(namespace=ns, name=name))
        await self.kserve.patch_inference_service(patch, finding="canary 00002 fails 60 % of requests")
    """

    describe_inference_service = Read(
        InferenceServiceRef,
        InferenceServiceDescription,
        lambda r: (
            f"kubectl describe isvc {r.name} -n {r.namespace}; kubectl get pods "
            f"-n {r.namespace} -l serving.kserve.io/inferenceservice={r.name}"
        ),
    )
    predictor_logs = Read(
        PredictorLogQuery,
        list[PodLogLines],
        lambda q: (
            f"kubectl logs -n {q.namespace} -l serving.kserve.io/inferenceservice={q.name} "
            f"-c {q.container} --tail={q.tail_lines}"
        ),
    )
    gpu_allocation = Read(
        GpuAllocationQuery,
        GpuAllocation,
        lambda q: (
            "kubectl describe nodes | grep -A5 'Allocated resources'; "
            "kubectl get pods --all-namespaces -o wide | grep -i gpu; "
            "kubectl describe node <gpu-node> | grep Taints"
        ),
    )
    patch_inference_service = Write(
        InferenceServicePatch,
        ClusterChange,
        lambda p: (
            f"kubectl patch isvc {p.name} -n {p.namespace} --type='json' -p "
            f"'[{patch_json({'op': 'replace', 'path': p.path, 'value': p.value})}]'"
            + (" (restore the recorded original)" if p.rollback else "")
        ),
    )
    redeploy_inference_service = Write(
        InferenceServiceRedeploy,
        ClusterChange,
        lambda r: (
            f"kubectl delete isvc {r.name} -n {r.namespace} && kubectl apply -f "
            "inference-service.yaml (its spec as read)"
        ),
        bound=lambda r: r.wait_seconds,
        heartbeats=True,
    )
