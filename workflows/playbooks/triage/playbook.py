"""Triage: the playbook for an alert no other playbook claims. Nothing is silently dropped.

It tells on-call what fired, with the alert's cluster context (the pods of its namespace)
when the cluster can be read, escalates on the standard 15/30/45 policy, and ends when the
alert resolves or a human resolves the incident. It never changes the cluster.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.incident import Cluster, Incident, IncidentInput, Playbook, PlaybookPolicy, Scope, SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.kube.pods_models import PodQuery
    from activities.slack_models import MessageLink

POLICY = PlaybookPolicy(
    runbook="triage",
    title="Alert without a playbook",
    default_severity="P2",
    escalation=None,  # no SOP of its own: the severity's marks (seed 001 times, seed 003 matrix)
    impact="Unknown: an alert fired that no playbook handles; on-call must assess it",
    gates=(),
)
# Context is a courtesy: a cluster that can't be read must not keep the incident waiting long.
_CONTEXT_TIMINGS = SopTimings(kube_call_timeout_seconds=30)
_CONTEXT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
_MAX_PODS_LISTED = 15


@workflow.defn
class Triage:
    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, _CONTEXT_TIMINGS, retry=_CONTEXT_RETRY)

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        return await self.incident.run(self._triage)

    async def _triage(self) -> None:
        inc = self.incident
        alert = inc.input.alert
        async with inc.step("Notify on-call") as entry:
            labels = ", ".join(f"`{k}={v}`" for k, v in sorted(alert.labels.items())) or "none"
            text = (
                f":mag: *No playbook handles `{alert.alertname}`* — on-call, please assess.\n"
                f"*Summary:* {alert.summary}\n*Labels:* {labels}"
            )
            if alert.annotations.get("description"):
                text += f"\n*Description:* {alert.annotations['description']}"
            # Alert text is escaped when posted; the source link is ours, so it goes as a link.
            source = [MessageLink(url=alert.generator_url, label="Source")] if alert.generator_url else None
            await inc.say(text, purpose="triage", links=source)
            entry.note(f"paged on-call about {alert.alertname}")
        if inc.input.namespace:
            await self._cluster_context(inc.input.namespace)
        async with inc.step("Wait for the alert to resolve") as entry:
            await workflow.wait_condition(lambda: inc.state.alert_resolved_at is not None or inc.resolved)
            entry.outcome = "alert resolved" if inc.state.alert_resolved_at else "resolved by a human"
        inc.resolve("the alert resolved in Alertmanager")

    async def _cluster_context(self, namespace: str) -> None:
        inc = self.incident
        async with inc.step(f"Cluster context: pods in {namespace}") as entry:
            try:
                pods = await self.cluster.list_pods(PodQuery(namespace=namespace))
            except FailureError as err:
                entry.outcome = "cluster not readable"
                await inc.say(f"Cluster context unavailable for `{namespace}`: {err}", purpose="context")
                return
            unhealthy = [p for p in pods if p.unhealthy]
            entry.outcome = f"{len(pods)} pods, {len(unhealthy)} not healthy"
            shown = (unhealthy or pods)[:_MAX_PODS_LISTED]
            rows = "\n".join(
                f"• `{p.name}` {p.ready_containers}/{p.containers} {p.status} restarts={p.restarts}" for p in shown
            )
            await inc.say(f"*Pods in `{namespace}`:* {entry.outcome}\n{rows}", purpose="context")


# Triage pages once per Alertmanager group.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=Triage,
    scope=Scope.alert_group(),
    alerts={},
)
