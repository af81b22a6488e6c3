"""How playbooks call activities: one typed way, each activity declared once.

A playbook holds a `Cluster` (the incident, its `SopTimings`) and calls the activity by its
registered name as a method, with the activity's own request model:

    change = await self.cluster.restart_deployment(req, finding="operator pod CrashLoopBackOff")
    pods = await self.cluster.list_pods(PodQuery(namespace=ns))

Why a facade of declarations, not `incident.call(CALL, arg)` or one function per activity: the
playbook reads like the runbook (the verb is the activity, in kubectl's words), the declaration
below is the only place a name, request model, result type, read or write, timeout and summary
are written, and the facade binds what every call of one playbook shares (its incident, its API
call timeout, its retry policy), so a call site says only what differs: the request and, for a
write, the finding that justifies it.

- `Read`: through `Incident.check` (always allowed, not an action). Returns the activity's result.
- `Write`: through `Incident.act`, so findings, shadow mode (dry runs), coordination claims and
  "resolution stops action" apply. Returns None when automation must not write (the incident
  records why); `finding` (keyword) names what this run found that justifies the write.
- Timeout per attempt: `SopTimings.kube_call_timeout_seconds` for an API call; a wait (`bound`:
  the request's own bound in seconds, e.g. `RolloutWait.timeout_seconds`) gets that bound plus
  one API call. An activity that heartbeats (`heartbeats=True`) is given the API call timeout as
  its heartbeat timeout, so a dead worker is noticed without waiting out the whole bound.
- Summary (Temporal's activity summary, in the UI): the command the SOP would type, from the
  request (`kubectl rollout restart deployment/NAME -n NS`).

Workflow modules import only this and the pure pydantic `activities/**/*_models.py`: never the
activity classes, the `kubernetes` client or httpx (tests/test_workflow_imports.py).
tests/test_workflow_imports.py also checks each declaration against the activity the worker
registers (name, request model, result type).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, Self, TypeVar, overload

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.incident.actions import ACTION_RETRY, ActivityRunner
from workflows.incident.models import SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.http_models import HealthCheck, HealthResult, InferenceProbe, WarmUpRequest
    from activities.kube.claims_models import ClaimReplacement
    from activities.kube.daemonsets_models import DaemonSetRestart, DaemonSetRolloutStatus, DaemonSetRolloutWait
    from activities.kube.deployments_models import (
        DeploymentImages,
        DeploymentRef,
        DeploymentScale,
        ImageChange,
        RestartRequest,
        RolloutHistory,
        RolloutStatus,
        RolloutUndo,
        RolloutWait,
        ScaleRequest,
    )
    from activities.kube.gpus_models import (
        DevicePluginHealth,
        DevicePluginQuery,
        GpuInventory,
        GpuInventoryQuery,
        GpuPendingPods,
        GpuPendingPodsQuery,
        GpuTestPodRequest,
        GpuTestPodResult,
        NodeGpuProbe,
        NodeGpuProbeRequest,
    )
    from activities.kube.llmdeployments_models import (
        CommonIssues,
        DeploymentDescription,
        DeploymentTarget,
        LLMDeploymentChange,
        LLMDeploymentPatch,
        LLMDeploymentQuery,
        LLMDeploymentSummary,
    )
    from activities.kube.models import PodSummary
    from activities.kube.nodes_models import (
        FoundNode,
        NodeCordon,
        NodeEvents,
        NodeEventsQuery,
        NodeEvictionRound,
        NodeEvictionRoundResult,
        NodeHint,
        NodeQuery,
        NodeSummary,
        NodeUncordon,
        PodsGone,
        PodsGoneWait,
    )
    from activities.kube.pods_models import (
        FailedPodsDeletion,
        LogQuery,
        MemoryEvent,
        MemoryEventsQuery,
        MemoryLimitsQuery,
        PodDeletion,
        PodLog,
        PodMemory,
        PodMemoryLimits,
        PodQuery,
        PodsReadiness,
        ReadinessQuery,
        TopPodsQuery,
    )
    from activities.kube.services_models import IngressRef, IngressSpec, ServicePodsDeletion, ServiceRef, ServiceScope
    from activities.models import ClusterChange

RequestT = TypeVar("RequestT", bound=BaseModel)
ResultT = TypeVar("ResultT")
RequestT_contra = TypeVar("RequestT_contra", bound=BaseModel, contravariant=True)
ResultT_co = TypeVar("ResultT_co", covariant=True)


class _BoundRead(Protocol[RequestT_contra, ResultT_co]):
    def __call__(self, arg: RequestT_contra, /) -> Awaitable[ResultT_co]: ...


class _BoundWrite(Protocol[RequestT_contra, ResultT_co]):
    def __call__(self, arg: RequestT_contra, /, *, finding: str | None) -> Awaitable[ResultT_co | None]: ...


@dataclass(frozen=True)
class Call(Generic[RequestT, ResultT]):
    """One activity as playbooks call it. `name` is the attribute's name on `Cluster`: the
    activity's registered name. `output` is the result type (`list[PodSummary]` too)."""

    input: type[RequestT]
    output: type[ResultT]
    summary: Callable[[RequestT], str]
    bound: Callable[[RequestT], float] | None = None  # a wait's own bound, seconds
    heartbeats: bool = False
    name: str = field(default="", init=False)

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    def timeouts(self, arg: RequestT, api_call: timedelta) -> tuple[timedelta, timedelta | None]:
        """(start-to-close, heartbeat) for one attempt with this request."""
        timeout = api_call + timedelta(seconds=self.bound(arg)) if self.bound else api_call
        return timeout, api_call if self.heartbeats else None


class Read(Call[RequestT, ResultT]):
    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: Cluster, owner: type) -> _BoundRead[RequestT, ResultT]: ...
    def __get__(self, obj: Cluster | None, owner: type) -> Any:
        if obj is None:
            return self

        def read(arg: RequestT, /) -> Awaitable[ResultT]:
            return obj.read(self, arg)

        return read


class Wait(Read[RequestT, ResultT]):
    """A read that waits on the cluster for up to its request's `timeout_seconds`, heartbeating meanwhile."""

    def __init__(self, input: type[RequestT], output: type[ResultT], summary: Callable[[RequestT], str]) -> None:
        super().__init__(input, output, summary, bound=_its_timeout, heartbeats=True)


def _its_timeout(request: Any) -> float:
    return request.timeout_seconds


class Write(Call[RequestT, ResultT]):
    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: Cluster, owner: type) -> _BoundWrite[RequestT, ResultT]: ...
    def __get__(self, obj: Cluster | None, owner: type) -> Any:
        if obj is None:
            return self

        def write(arg: RequestT, /, *, finding: str | None) -> Awaitable[ResultT | None]:
            return obj.write(self, arg, finding=finding)

        return write


def _in(namespace: str | None) -> str:
    return f"-n {namespace}" if namespace else "-A"


def _selector(selector: str | None) -> str:
    return f" -l {selector}" if selector else ""


class Cluster:
    """The activities playbooks call, bound to one incident (see the module docstring).

    `timings`: the playbook's (its `kube_call_timeout_seconds` is every API call's timeout);
    `retry`: the activity retry policy of every call (default: a few attempts with backoff).
    A request of the wrong model raises TypeError (a bug: the incident fails and escalates).
    """

    def __init__(self, incident: ActivityRunner, timings: SopTimings, *, retry: RetryPolicy = ACTION_RETRY) -> None:
        self.incident = incident
        self.timings = timings
        self.retry = retry

    @classmethod
    def declared(cls) -> list[Call[Any, Any]]:
        """Every activity declared here and in the facades beside it (workflows/incident/facades.py), for the tests
        that check them against the worker's."""
        return [v for c in (cls, *cls.__subclasses__()) for v in vars(c).values() if isinstance(v, Call)]

    async def read(self, call: Read[RequestT, ResultT], arg: RequestT) -> ResultT:
        """Run a read (`Incident.check`): its result, or `ActivityError` once the retries are spent."""
        timeout, heartbeat = self._prepare(call, arg)
        return await self.incident.check(
            call.name,
            arg,
            summary=call.summary(arg),
            timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry=self.retry,
            result_type=call.output,
        )

    async def write(self, call: Write[RequestT, ResultT], arg: RequestT, *, finding: str | None) -> ResultT | None:
        """Run a write (`Incident.act`): its result (ClusterChanges recorded with `finding`), None when
        automation must not write, or `ActivityError` once the retries are spent."""
        timeout, heartbeat = self._prepare(call, arg)
        return await self.incident.act(
            call.name,
            arg,
            summary=call.summary(arg),
            timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry=self.retry,
            result_type=call.output,
            finding=finding,
        )

    def _prepare(self, call: Call[RequestT, ResultT], arg: RequestT) -> tuple[timedelta, timedelta | None]:
        if not isinstance(arg, call.input):
            raise TypeError(f"{call.name} takes {call.input.__name__}, not {type(arg).__name__}")
        return call.timeouts(arg, self.timings.kube_timeout)

    # ---- Kubernetes reads (activities/kube/) -----------------------------------------------------

    list_pods = Read(
        PodQuery, list[PodSummary], lambda q: f"kubectl get pods {_in(q.namespace)}{_selector(q.label_selector)}"
    )
    list_nodes = Read(NodeQuery, list[NodeSummary], lambda q: f"kubectl get nodes{_selector(q.label_selector)}")
    list_llm_deployments = Read(
        LLMDeploymentQuery, list[LLMDeploymentSummary], lambda q: f"kubectl get llmdeployments {_in(q.namespace)}"
    )
    pod_logs = Read(
        LogQuery,
        PodLog,
        lambda q: (
            f"kubectl logs -n {q.namespace} "
            f"{f'pod/{q.pod}' if q.pod else f'deployment/{q.deployment}'} --tail={q.tail_lines}"
        ),
    )
    deployment_images = Read(
        DeploymentRef, DeploymentImages, lambda r: f"kubectl rollout history deployment/{r.name} -n {r.namespace}"
    )
    wait_for_rollout = Wait(
        RolloutWait,
        RolloutStatus,
        lambda w: f"kubectl rollout status deployment/{w.name} -n {w.namespace} --timeout={w.timeout_seconds:g}s",
    )

    # ---- Kubernetes writes (activities/kube/) ----------------------------------------------------

    restart_deployment = Write(
        RestartRequest, ClusterChange, lambda r: f"kubectl rollout restart deployment/{r.name} -n {r.namespace}"
    )
    set_image = Write(
        ImageChange,
        ClusterChange,
        lambda c: f"kubectl set image deployment/{c.deployment} {c.container}={c.image} -n {c.namespace}",
    )
    apply_ingress = Write(IngressSpec, ClusterChange, lambda s: f"kubectl apply ingress {s.name} -n {s.namespace}")
    delete_ingress = Write(IngressRef, ClusterChange, lambda r: f"kubectl delete ingress {r.name} -n {r.namespace}")
    patch_llm_deployment = Write(
        LLMDeploymentPatch,
        ClusterChange,
        lambda p: (
            f"kubectl patch llmdeployment {p.name} -n {p.namespace} --type=merge -p '{patch_json({'spec': p.spec})}'"
        ),
    )

    # ---- seed 001 service down (activities/kube/services.py, deployments.py; http.py) ------------

    service_scope = Read(
        ServiceRef,
        ServiceScope,
        lambda r: (
            f"kubectl get pods -o wide -l <selector of svc/{r.name}> -n {r.namespace}; "
            f"kubectl get svc {r.name} -n {r.namespace}; kubectl get ingress -n {r.namespace}"
        ),
    )
    rollout_history = Read(
        DeploymentRef, RolloutHistory, lambda r: f"kubectl rollout history deployment/{r.name} -n {r.namespace}"
    )
    rollout_undo = Write(
        RolloutUndo,
        ClusterChange,
        lambda u: f"kubectl rollout undo deployment/{u.name} -n {u.namespace} --to-revision={u.to_revision}",
    )
    delete_service_pods = Write(
        ServicePodsDeletion, list[ClusterChange], lambda d: f"kubectl delete pods -n {d.namespace} " + " ".join(d.pods)
    )
    check_inference = Read(
        InferenceProbe,
        HealthResult,
        lambda p: f"curl -X POST {p.url} -d '{{\"model\": \"{p.model}\", \"messages\": [...]}}'",
        bound=lambda p: p.timeout_seconds,
    )

    # ---- HTTP (activities/http.py) ----------------------------------------------------------------

    check_health = Read(
        HealthCheck,
        HealthResult,
        lambda c: f"curl -f --max-time {c.timeout_seconds:g} {c.url}",
        bound=lambda c: c.timeout_seconds,
    )

    # ---- SOP-002 memory (activities/kube/pods.py, llmdeployments.py) -----------------------------

    top_memory_pods = Read(
        TopPodsQuery,
        list[PodMemory],
        lambda q: f"kubectl top pods {_in(q.namespace)} --sort-by=memory | head -{q.limit}",
        bound=lambda q: q.metrics_wait_seconds,
        heartbeats=True,
    )
    memory_events = Read(
        MemoryEventsQuery,
        list[MemoryEvent],
        lambda q: (
            f"kubectl get events {_in(q.namespace)} --field-selector type=Warning "
            f"| grep -i {'oom' if q.oom_only else 'memory'}"
        ),
    )
    pod_memory_limits = Read(
        MemoryLimitsQuery,
        list[PodMemoryLimits],
        lambda q: (
            "kubectl get pod -o jsonpath='{.spec.containers[*].resources.limits.memory}' "
            + " ".join(f"{p.namespace}/{p.name}" for p in q.pods)
        ),
    )
    change_llm_deployment = Write(
        LLMDeploymentChange,
        ClusterChange,
        lambda c: (
            f"kubectl patch llmdeployment {c.name} -n {c.namespace} --type=merge "
            f"-p '{patch_json({'spec': {c.field: c.value}})}'"
            + (" (restore the recorded original)" if c.rollback else "")
        ),
    )
    delete_pod = Write(PodDeletion, ClusterChange, lambda d: f"kubectl delete pod {d.name} -n {d.namespace}")

    # ---- SOP-003 GPUs (activities/kube/gpus.py, gpu_probes.py, daemonsets.py, nodes.py) ----------

    gpu_inventory = Read(
        GpuInventoryQuery,
        GpuInventory,
        lambda q: (
            "kubectl get nodes"
            + _selector(q.node_selector)
            + " -o custom-columns=NAME:.metadata.name,GPU:.status.capacity.nvidia\\.com/gpu"
        ),
    )
    device_plugin_health = Read(
        DevicePluginQuery,
        DevicePluginHealth,
        lambda q: (
            f"kubectl get ds {q.daemonset} -n {q.namespace}; kubectl get pods -n {q.namespace} -l {q.pod_selector}"
        ),
    )
    gpu_pending_pods = Read(
        GpuPendingPodsQuery,
        GpuPendingPods,
        lambda q: (
            f"kubectl get events {_in(q.namespace)} --field-selector reason=FailedScheduling "
            "| grep 'Insufficient nvidia.com/gpu'"
        ),
    )
    probe_node_gpus = Wait(
        NodeGpuProbeRequest,
        NodeGpuProbe,
        lambda r: f"kubectl debug node/{r.node} -- chroot /host nvidia-smi",
    )
    gpu_test_pod = Wait(
        GpuTestPodRequest,
        GpuTestPodResult,
        lambda r: f"kubectl run gpu-test --limits='nvidia.com/gpu={r.gpus}' -- nvidia-smi",
    )
    restart_daemonset = Write(
        DaemonSetRestart, ClusterChange, lambda r: f"kubectl rollout restart ds {r.name} -n {r.namespace}"
    )
    wait_for_daemonset_rollout = Wait(
        DaemonSetRolloutWait,
        DaemonSetRolloutStatus,
        lambda w: f"kubectl rollout status ds {w.name} -n {w.namespace} --timeout={w.timeout_seconds:g}s",
    )
    cordon_node = Write(NodeCordon, ClusterChange, lambda c: f"kubectl cordon {c.node}")
    uncordon_node = Write(NodeUncordon, ClusterChange, lambda u: f"kubectl uncordon {u.node}")
    evict_node_pods = Write(
        NodeEvictionRound,
        NodeEvictionRoundResult,
        lambda r: f"kubectl drain {r.node} --ignore-daemonsets --delete-emptydir-data: evict",
    )
    find_node = Read(
        NodeHint,
        FoundNode,
        lambda h: (
            "kubectl get nodes -o wide; kubectl get pods -A -o wide --field-selector "
            + ",".join(f"{k}={v}" for k, v in sorted(h.labels.items()) if k in ("Hostname", "instance", "pod", "node"))
        ),
    )
    node_events = Read(
        NodeEventsQuery,
        NodeEvents,
        lambda q: (
            f"kubectl get events -A --field-selector involvedObject.kind=Node,"
            f"involvedObject.name={q.node}" + (",type=Warning" if q.warnings_only else "")
        ),
    )
    wait_for_pods_gone = Wait(
        PodsGoneWait,
        PodsGone,
        lambda w: f"kubectl drain {w.node}: wait for the {len(w.pods)} evicted pods to go",
    )

    # ---- SOP-004 model deployments (activities/kube/llmdeployments.py, pods.py, claims.py) -------

    describe_llm_deployment = Read(
        DeploymentTarget,
        DeploymentDescription,
        lambda t: (
            f"kubectl describe llmdeployment {t.name} -n {t.namespace}; "
            f"kubectl get pods -n {t.namespace} -l app={t.name}"
        ),
    )
    check_common_issues = Read(
        DeploymentTarget,
        CommonIssues,
        lambda t: (
            f"kubectl get events -n {t.namespace} | grep -i pull; "
            "kubectl describe nodes | grep -A5 'Allocated resources'; "
            f"kubectl get pvc -n {t.namespace}"
        ),
    )
    pods_readiness = Read(
        ReadinessQuery,
        PodsReadiness,
        lambda q: f"kubectl get pods -n {q.namespace} -l app={q.app} (Ready of {q.replicas})",
    )
    delete_failed_pods = Write(
        FailedPodsDeletion,
        list[ClusterChange],
        lambda d: f"kubectl delete pods -n {d.namespace} -l app={d.app} --field-selector 'status.phase!=Running'",
    )
    replace_claim = Write(
        ClaimReplacement,
        ClusterChange,
        lambda c: (
            f"kubectl delete pvc {c.name} -n {c.namespace} && kubectl apply pvc {c.name} "
            + ("(as it was)" if c.replace_bound else "(without storageClassName)")
        ),
        bound=lambda c: c.delete_wait_seconds,
        heartbeats=True,
    )

    # ---- seed 001 high latency (activities/kube/deployments.py, http.py) -------------------------

    deployment_scale = Read(
        DeploymentRef, DeploymentScale, lambda q: f"kubectl get deployment {q.name} -n {q.namespace}"
    )
    scale_deployment = Write(
        ScaleRequest,
        ClusterChange,
        lambda r: (
            f"kubectl scale deployment {r.name} --replicas={r.replicas} -n {r.namespace}"
            + (" (restore the recorded original)" if r.rollback else "")
        ),
    )
    warm_up_model = Write(
        WarmUpRequest,
        ClusterChange,
        lambda r: f"curl -X POST http://{r.service}.{r.namespace}:8080/v1/warmup -d '{patch_json({'model': r.model})}'",
        bound=lambda r: r.timeout_seconds,
    )


def patch_json(value: Any) -> str:
    """A value as it goes into `kubectl patch -p`: JSON."""
    return json.dumps(value, separators=(",", ":"), default=str)
