"""The checks the seeds run on a clock, as short workflows that Temporal Schedules start
(worker/schedule_specs.py): `gpu-health-check`, `model-health-check`, `morning-health-check`.

- GPU health (seed 002 "Automated GPU health monitoring", every 15 min): nvidia-smi on every
  Ready GPU node (a short-lived probe pod, as SOP-003's driver check); a GPU reading `ERR!` or
  `[N/A]`, or any other fault nvidia-smi shows, is a finding.
- Model health (seed 002 "Automated model health checking", every 5 min): each LLMDeployment's
  endpoint answers its health URL; one that does not is a finding.
- Morning health (seed 002 "Morning Health Check", seed 003 "Morning Checks"): deployments, GPU
  nodes and their allocatable GPUs, pods not Running, errors in recent logs, open incidents; one
  Slack report (Block Kit) to the ops channel, also the workflow's result.

A finding opens or joins the incident of its scope exactly as an alert does: it goes, as an
Alertmanager alert labelled `runbooks_source="schedule"`, through the webhook's intake
(activity `report_findings`). A clean run posts nothing; its result is in its history. A check
that cannot run (the API down) says so in the ops channel and fails, so the Schedules page
shows the failed run. Checks only read: they never write to the cluster (the probe pods
excepted, created and always deleted by the GPU probe).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.incident import Cluster, SopTimings
from workflows.checks.models import (
    GPU_FINDING_ALERT,
    GPU_HEALTH_CHECK,
    MODEL_FINDING_ALERT,
    MODEL_HEALTH_CHECK,
    MORNING_HEALTH_CHECK,
    FindingAlert,
    FindingsReport,
    GpuHealthCheckInput,
    GpuHealthCheckResult,
    IncidentJoined,
    ModelCheck,
    ModelHealthCheckInput,
    ModelHealthCheckResult,
    MorningHealthCheckInput,
    MorningReport,
    NodeCheck,
    OpenIncident,
    OpenIncidentsQuery,
    ReportLine,
    finding_alert,
)
from workflows.checks.report import morning_message

with workflow.unsafe.imports_passed_through():
    from activities.http_models import HealthCheck
    from activities.kube.gpus_models import GpuInventoryQuery, NodeGpuProbeRequest
    from activities.kube.llmdeployments_models import LLMDeploymentQuery
    from activities.kube.pods_models import LogQuery, PodQuery
    from activities.slack_models import SlackMessageRef, ThreadMessage

# A check is short and runs again in minutes: a few quick attempts, then it says it could not run.
CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
_DELIVERY: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5),
}


class _ReadsOnly:
    """What `Cluster` needs of an incident, for a check that is not one: reads, no writes."""

    async def check(
        self,
        activity: Any,
        arg: Any,
        *,
        summary: str,
        timeout: timedelta,
        retry: RetryPolicy,
        heartbeat_timeout: timedelta | None,
        result_type: type | None,
    ) -> Any:
        return await workflow.execute_activity(
            activity,
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry,
            summary=summary,
            result_type=result_type,
        )

    async def act(self, *_: Any, **__: Any) -> Any:
        raise ApplicationError("a scheduled check does not write to the cluster", non_retryable=True)


def _cluster(inp: GpuHealthCheckInput | ModelHealthCheckInput | MorningHealthCheckInput) -> Cluster:
    timings = SopTimings(kube_call_timeout_seconds=inp.kube_call_timeout_seconds)
    return Cluster(_ReadsOnly(), timings, retry=CHECK_RETRY)  # type: ignore[arg-type]


def _why(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) and err.cause else err
    return getattr(cause, "message", None) or str(cause)


async def _tell_ops(
    channel: str, purpose: str, text: str, blocks: list[dict[str, Any]] | None = None
) -> SlackMessageRef:
    """One top-level message in the ops channel, posted once per run and purpose."""
    msg = ThreadMessage(key=f"{workflow.info().workflow_id}:{purpose}", channel=channel, text=text, blocks=blocks)
    return await workflow.execute_activity(
        "post_in_thread", msg, result_type=SlackMessageRef, summary=f"Slack {channel}: {purpose}", **_DELIVERY
    )  # type: ignore[arg-type]


async def _cannot_run(check: str, channel: str, step: str, err: BaseException) -> ApplicationError:
    """Say in the ops channel that the check could not run; the caller raises what this returns."""
    why = _why(err)
    await _tell_ops(
        channel,
        "cannot-run",
        f":warning: *{check}* could not run: {step} failed ({why}). "
        "Nothing was checked this time; the next run tries again.",
    )
    return ApplicationError(f"{check} could not {step}: {why}", type="CheckCouldNotRun", non_retryable=True)


async def _report(check: str, alerts: list[FindingAlert]) -> list[IncidentJoined]:
    """Findings → incidents, through the webhook's intake (activities/temporal_incidents.py)."""
    return await workflow.execute_activity(
        "report_findings",
        FindingsReport(check=check, alerts=alerts),
        result_type=list[IncidentJoined],
        summary=f"{len(alerts)} finding(s) → incident (as alerts {', '.join(sorted({a.alertname for a in alerts}))})",
        **_DELIVERY,
    )  # type: ignore[arg-type]


def _incomplete(check: str, missing: list[str]) -> str:
    return f":warning: *{check}* could not check everything: " + "; ".join(missing[:10])


@workflow.defn(name="GpuHealthCheck")
class GpuHealthCheck:
    """Seed 002: nvidia-smi on every GPU node; "N/A" or "ERR" → the SRE team is told (an incident)."""

    @workflow.run
    async def run(self, inp: GpuHealthCheckInput) -> GpuHealthCheckResult:
        cluster = _cluster(inp)
        result = GpuHealthCheckResult(checked_at=workflow.now())
        try:
            inventory = await cluster.gpu_inventory(GpuInventoryQuery(node_selector=inp.node_selector))
        except ActivityError as err:
            raise await _cannot_run(GPU_HEALTH_CHECK, inp.ops_channel, "list the GPU nodes", err) from err
        result.could_not_check += [f"{n.node}: NotReady, not probed" for n in inventory.nodes if not n.ready]
        ready = [n.node for n in inventory.nodes if n.ready]
        result.nodes = list(await asyncio.gather(*(self._probe(cluster, inp, node) for node in ready)))
        result.could_not_check += [f"{n.node}: {'; '.join(n.reasons)}" for n in result.nodes if not n.probed]
        if not inventory.nodes:
            result.could_not_check.append(f"no node matches {inventory.node_selector}")
        at = workflow.now()
        alerts = [
            finding_alert(
                GPU_HEALTH_CHECK,
                GPU_FINDING_ALERT,
                {"node": n.node, "namespace": "kube-system"},
                f"nvidia-smi on {n.node}: {'; '.join(n.reasons)[:300]}",
                "The scheduled GPU health check (seed 002, every 15 minutes) found:\n" + "\n".join(n.reasons),
                at,
            )
            for n in result.findings
        ]
        if alerts:
            result.incidents = await _report(GPU_HEALTH_CHECK, alerts)
        if result.could_not_check:
            await _tell_ops(inp.ops_channel, "incomplete", _incomplete(GPU_HEALTH_CHECK, result.could_not_check))
        return result

    async def _probe(self, cluster: Cluster, inp: GpuHealthCheckInput, node: str) -> NodeCheck:
        req = NodeGpuProbeRequest(
            incident_id=workflow.info().workflow_id,
            node=node,
            purpose=GPU_HEALTH_CHECK,
            timeout_seconds=inp.probe_timeout_seconds,
        )
        try:
            probe = await cluster.probe_node_gpus(req)
        except ActivityError as err:
            return NodeCheck(node=node, healthy=False, probed=False, reasons=[f"probe failed: {_why(err)}"])
        if probe.report is None:  # the pod did not run to the end: not a GPU finding
            return NodeCheck(node=node, healthy=False, probed=False, reasons=probe.reasons or ["probe did not finish"])
        return NodeCheck(node=node, healthy=probe.healthy, probed=True, reasons=probe.reasons)


@workflow.defn(name="ModelHealthCheck")
class ModelHealthCheck:
    """Seed 002's model health CronJob: every model endpoint answers, or its LLMDeployment's
    incident (SOP-004) is opened or joined."""

    @workflow.run
    async def run(self, inp: ModelHealthCheckInput) -> ModelHealthCheckResult:
        cluster = _cluster(inp)
        result = ModelHealthCheckResult(checked_at=workflow.now())
        try:
            deployments = await cluster.list_llm_deployments(LLMDeploymentQuery(namespace=inp.namespace))
        except ActivityError as err:
            raise await _cannot_run(MODEL_HEALTH_CHECK, inp.ops_channel, "list the LLMDeployments", err) from err
        probed = [d for d in deployments if d.health_url]
        result.could_not_check += [f"{d.namespace}/{d.name}: no health URL" for d in deployments if not d.health_url]
        answers = await asyncio.gather(
            *(self._probe(cluster, inp, d.health_url or "") for d in probed), return_exceptions=True
        )
        for d, answer in zip(probed, answers):
            if isinstance(answer, BaseException):
                result.could_not_check.append(f"{d.namespace}/{d.name}: probe failed ({_why(answer)})")
                continue
            result.models.append(
                ModelCheck(
                    namespace=d.namespace,
                    name=d.name,
                    url=answer.url,
                    ok=answer.ok,
                    answer=answer.summary.removeprefix(f"{answer.url}: "),
                    elapsed_ms=answer.elapsed_ms,
                )
            )
        at = workflow.now()
        alerts = [
            finding_alert(
                MODEL_HEALTH_CHECK,
                MODEL_FINDING_ALERT,
                {"namespace": m.namespace, "llmdeployment": m.name},
                f"model endpoint {m.namespace}/{m.name} failed its health check: {m.answer}",
                f"The scheduled model health check (seed 002, every 5 minutes) got {m.answer} from {m.url}.",
                at,
            )
            for m in result.models
            if not m.ok
        ]
        if alerts:
            result.incidents = await _report(MODEL_HEALTH_CHECK, alerts)
        if result.could_not_check:
            await _tell_ops(inp.ops_channel, "incomplete", _incomplete(MODEL_HEALTH_CHECK, result.could_not_check))
        return result

    async def _probe(self, cluster: Cluster, inp: ModelHealthCheckInput, url: str):  # -> HealthResult
        return await cluster.check_health(HealthCheck(url=url, timeout_seconds=inp.probe_timeout_seconds))


@workflow.defn(name="MorningHealthCheck")
class MorningHealthCheck:
    """Seeds 002/003's morning checks, read-only, as one Slack report to the ops channel."""

    @workflow.run
    async def run(self, inp: MorningHealthCheckInput) -> MorningReport:
        cluster = _cluster(inp)
        report = MorningReport(checked_at=workflow.now(), time_zone=inp.time_zone)
        failed: list[str] = []

        async def attempt(step: str, call: Any) -> Any:
            try:
                return await call
            except ActivityError as err:
                failed.append(step)
                report.could_not_check.append(f"{step}: {_why(err)}")
                return None

        deployments = await attempt("kubectl get llmdeployments -A", cluster.list_llm_deployments(LLMDeploymentQuery()))
        for d in deployments or []:
            report.deployments.append(
                ReportLine(
                    name=f"{d.namespace}/{d.name}",
                    ok=d.ready,
                    detail=f"{d.phase} {d.ready_replicas}/{d.replicas if d.replicas is not None else '?'}",
                )
            )
        inventory = await attempt("kubectl get nodes (GPU)", cluster.gpu_inventory(GpuInventoryQuery()))
        if inventory is not None:
            report.gpus_capacity, report.gpus_allocatable = inventory.total_capacity, inventory.total_allocatable
            report.gpus_in_use = inventory.total_in_use
            for n in inventory.nodes:
                state = "Ready" if n.ready else "NotReady"
                state += ", cordoned" if n.unschedulable else ""
                report.gpu_nodes.append(
                    ReportLine(
                        name=n.node,
                        ok=not n.problems,
                        detail=f"{state} · GPUs {n.allocatable}/{n.capacity} allocatable, {n.in_use} in use",
                    )
                )
        pods = await attempt("kubectl get pods -A", cluster.list_pods(PodQuery()))
        report.pods_not_running = [
            ReportLine(name=f"{p.namespace}/{p.name}", ok=False, detail=str(p)) for p in pods or [] if p.unhealthy
        ]
        for d in deployments or []:
            # Seed 002: `kubectl logs ... | grep -i error | wc -l`. A model without pods has no log:
            # the count says how many were read rather than flagging it twice.
            try:
                log = await cluster.pod_logs(
                    LogQuery(namespace=d.namespace, deployment=d.name, tail_lines=inp.log_lines)
                )
            except ActivityError:
                continue
            report.error_lines_read_from += 1
            report.error_lines += sum(1 for line in log.text.splitlines() if "error" in line.lower())
        try:
            report.open_incidents = await workflow.execute_activity(
                "open_incidents",
                OpenIncidentsQuery(),
                result_type=list[OpenIncident],
                summary="open incidents (Temporal visibility)",
                **_DELIVERY,
            )  # type: ignore[arg-type]
        except ActivityError as err:
            report.could_not_check.append(f"open incidents: {_why(err)}")
        report.text, report.blocks = morning_message(report)
        ref = await _tell_ops(inp.ops_channel, "morning-report", report.text, report.blocks)
        report.slack_ts = ref.ts
        if {"kubectl get llmdeployments -A", "kubectl get nodes (GPU)"} <= set(failed):
            raise ApplicationError(
                f"{MORNING_HEALTH_CHECK} could not read the cluster: " + "; ".join(report.could_not_check),
                type="CheckCouldNotRun",
                non_retryable=True,
            )
        return report


HEALTH_CHECKS: tuple[type, ...] = (GpuHealthCheck, ModelHealthCheck, MorningHealthCheck)
