"""SOP-001: Service Outage Response (seed 000), as a durable workflow.

Read `respond()` next to the SOP: the same steps in the same order. Each step is a named
`incident.step(...)` on the timeline; activities are called through `self.cluster`
(workflows/incident/calls.py), so every cluster write goes through `incident.act(...)`: recorded with the
value it replaced, refused after a hand-over, and retried safely (restarts are stamped with the
incident id and step).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

from workflows.incident import (
    Alert,
    Cluster,
    Drill,
    EscalationPolicy,
    Incident,
    Playbook,
    PlaybookPolicy,
    Scope,
    TimelineEntry,
    failure_text,
)
from workflows.playbooks.service_outage.models import (
    GATE_MAINTENANCE,
    GATE_OPERATOR_ROLLBACK,
    ClusterHealth,
    ServiceOutageInput,
    Verdict,
)

with workflow.unsafe.imports_passed_through():
    from activities.http_models import HealthCheck, HealthResult
    from activities.kube.deployments_models import (
        DeploymentImages,
        DeploymentRef,
        ImageChange,
        RestartRequest,
        RolloutWait,
    )
    from activities.kube.llmdeployments_models import LLMDeploymentQuery, LLMDeploymentSummary
    from activities.kube.models import PodSummary
    from activities.kube.nodes_models import NodeQuery
    from activities.kube.pods_models import LogQuery, PodQuery
    from activities.kube.services_models import IngressRef
    from activities.models import ClusterChange


POLICY = PlaybookPolicy(
    runbook="service-outage",
    title="LLM service outage",
    default_severity="P0",
    escalation=EscalationPolicy.standard(),  # SOP-001: 15 senior SRE, 30 engineering, 45 roll back
    impact="LLM inference unavailable for all users",
    gates=("maintenance-mode", "rollback-operator"),
)


@workflow.defn
class ServiceOutage:
    """SOP-001 for a complete llm-d outage."""

    @workflow.init
    def __init__(self, inp: ServiceOutageInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.maintenance_on: ClusterChange | None = None
        self.operator_restarted = False
        self.operator_images: DeploymentImages | None = None  # recorded by the health check, for rollback
        self.last_verdict = Verdict()

    @workflow.run
    async def run(self, inp: ServiceOutageInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        """SOP-001, top to bottom."""
        await self.acknowledge_and_communicate()
        health = await self.quick_health_check()
        await self.identify_scope(health)
        if await self.nothing_wrong(health):
            return  # no write; the incident waits for the alert to resolve or a human
        await self.apply_standard_fixes(health)
        await self.enable_maintenance_mode_if_needed()
        restored = await self.verification()
        await self.rollback(restored)

    # ---- 1. Acknowledge and communicate (0-2 minutes) -----------------------------------------

    async def acknowledge_and_communicate(self) -> None:
        inc = self.incident
        async with inc.step("1. Acknowledge and communicate") as entry:
            # The incident's first message (severity, title, incident commander, status, start) is the
            # SOP's announcement: posting the template too would announce every outage twice.
            entry.outcome = (
                f"announced in the incident's first message; incident commander {self.inp.incident_commander}"
            )

    # ---- 2. Quick health check (2-5 minutes) ---------------------------------------------------

    async def quick_health_check(self) -> ClusterHealth:
        inc, ns = self.incident, self.inp.operator_namespace
        async with inc.step("2. Quick health check") as entry:
            pods, llmds, nodes = await asyncio.gather(
                self.cluster.list_pods(PodQuery(namespace=ns)),
                self._list_llm_deployments(),
                self.cluster.list_nodes(NodeQuery()),
            )
            health = ClusterHealth(operator_pods=pods, llm_deployments=llmds, nodes=nodes)
            self.operator_images = await self._operator_images(entry)
            for line in health.notes():
                entry.note(line)
            entry.outcome = str(health)
        return health

    async def _operator_images(self, entry: TimelineEntry) -> DeploymentImages | None:
        """Recorded now so SOP-001's rollback knows the operator's previous image."""
        ref = DeploymentRef(namespace=self.inp.operator_namespace, name=self.inp.operator_deployment)
        try:
            return await self.cluster.deployment_images(ref)
        except FailureError as err:  # e.g. no operator deployment to read: the rollback will say so
            entry.note(f"operator's previous images unknown (a rollback could not know them): {failure_text(err)}")
            return None

    # ---- 3. Identify scope (5-7 minutes) ------------------------------------------------------

    async def identify_scope(self, health: ClusterHealth) -> None:
        inc, ns, name = self.incident, self.inp.operator_namespace, self.inp.operator_deployment
        async with inc.step("3. Identify scope") as entry:
            failed = health.not_ready
            listed = "\n".join(f"• `{d.namespace}/{d.name}` {d.phase}" for d in failed)
            await inc.say(
                f"*Scope:* {len(failed)} of {len(health.llm_deployments)} LLMDeployments not Ready"
                + (f"\n{listed}" if listed else ""),
                purpose="scope",
            )
            query = LogQuery(namespace=ns, deployment=name, tail_lines=self.inp.logs_tail_lines)
            try:
                log = await self.cluster.pod_logs(query)
                await inc.say(
                    f"*Operator logs* (`{log.pod}`, last {query.tail_lines} lines):\n```{log.text.rstrip() or '(empty)'}```",
                    purpose="operator-logs",
                )
                entry.note(f"operator logs from {log.pod} posted")
            except FailureError as err:
                entry.note(f"operator logs unavailable: {failure_text(err)}")
            entry.outcome = f"{len(failed)} LLMDeployments not Ready"

    async def nothing_wrong(self, health: ClusterHealth) -> bool:
        """Operator pods healthy, every LLMDeployment Ready and every health endpoint 2xx: no outage
        to act on, so no write at all (an alert on a healthy cluster must not restart anything)."""
        if health.operator_unhealthy or health.not_ready:
            return False
        self.last_verdict = verdict = await self._verify_once()
        if not verdict.restored:
            return False  # Ready everywhere but not answering: an outage all the same
        pods = ", ".join(str(p) for p in health.operator_pods) or "none"
        await self.incident.nothing_wrong_found(
            f"operator pods healthy ({pods}); {len(health.llm_deployments)}/{len(health.llm_deployments)} "
            f"LLMDeployments Ready; every health endpoint answering 2xx"
        )
        return True

    # ---- 4. Apply standard fixes (7-15 minutes) ------------------------------------------------

    async def apply_standard_fixes(self, health: ClusterHealth) -> None:
        inc = self.incident
        async with inc.step("4. Apply standard fixes") as entry:
            if health.operator_unhealthy:
                await self._restart_operator(health.operator_unhealthy, entry)
            else:
                entry.note("operator pods healthy: no operator restart")
            # As the SOP's script: list the failed deployments after the operator is back.
            failed = [d for d in await self._list_llm_deployments() if not d.ready]
            restarted = [d for d in failed if await self._restart_failed_deployment(d, entry)]
            entry.outcome = (
                f"operator {'restarted' if self.operator_restarted else 'left alone'}; "
                f"{len(restarted)}/{len(failed)} failed deployments restarted"
            )

    async def _restart_operator(self, unhealthy: list[PodSummary], entry: TimelineEntry) -> None:
        ns, name = self.inp.operator_namespace, self.inp.operator_deployment
        change = await self.cluster.restart_deployment(
            self._restart(ns, name),
            finding=f"operator pod{'s' if len(unhealthy) > 1 else ''} in {ns} not healthy: "
            + ", ".join(str(p) for p in unhealthy),
        )
        if change is None:
            return  # handed over: a human is driving now
        self.operator_restarted = True
        wait = RolloutWait(
            namespace=ns,
            name=name,
            timeout_seconds=self.t.operator_rollout_timeout_seconds,
            poll_seconds=self.t.rollout_poll_seconds,
        )
        status = await self.cluster.wait_for_rollout(wait)
        entry.note(f"operator rollout: {status.message} after {status.waited_seconds:g}s")

    async def _restart_failed_deployment(self, d: LLMDeploymentSummary, entry: TimelineEntry) -> bool:
        """Restart the Deployment of the same name; one that can't be restarted doesn't stop the others."""
        try:
            change = await self.cluster.restart_deployment(
                self._restart(d.namespace, d.name),
                finding=f"LLMDeployment {d.namespace}/{d.name} {d.phase}, {d.ready_replicas}/{d.replicas or 0} replicas Ready",
            )
        except FailureError as err:
            entry.note(f"could not restart {d.namespace}/{d.name}: {err}")
            return False
        return change is not None

    def _restart(self, namespace: str, name: str) -> RestartRequest:
        # The workflow's clock and the incident id make every retry write the very same stamp.
        return RestartRequest(
            namespace=namespace,
            name=name,
            restarted_at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            restarted_by=f"{workflow.info().workflow_id}/standard-fixes",
        )

    # ---- 5. Enable maintenance mode (if needed) -----------------------------------------------

    async def enable_maintenance_mode_if_needed(self) -> None:
        inc, page = self.incident, self.inp.maintenance
        async with inc.step("5. Enable maintenance mode (if needed)") as entry:
            verdict = await self._wait_for_recovery(self.t.restart_grace_seconds)
            if verdict.restored:
                entry.outcome = "not needed: the standard fixes restored service"
                return
            entry.note(f"after the standard fixes: {verdict}")
            if self.incident.rollback_requested:
                entry.outcome = f"skipped: rollback requested by {self.incident.rollback_requested.by}"
                return
            question = (
                f"The standard fixes did not restore service ({verdict}). Enable maintenance mode: "
                f"ingress {page.namespace}/{page.name} sends {page.host} to {page.service}:{page.port}?"
            )
            if not await inc.approval(GATE_MAINTENANCE, question, destructive=True, timeout=self.t.approval_timeout):
                entry.outcome = "not enabled: not approved"
                return
            self.maintenance_on = await self.cluster.apply_ingress(
                page.ingress(),
                finding=f"service still down {self.t.restart_grace_seconds:g}s after the standard fixes: {verdict}",
            )
            if self.maintenance_on is not None:
                inc.mitigated("users see the maintenance page")
                await inc.say(
                    f":construction: Maintenance mode ON: `{page.name}` → `{page.service}`", purpose="maintenance-on"
                )
            entry.outcome = "enabled" if self.maintenance_on else "not enabled: automation stopped"

    # ---- Verification ---------------------------------------------------------------------------

    async def verification(self) -> bool:
        inc = self.incident
        async with inc.step("Verification") as entry:
            verdict = await self._wait_for_recovery(self.t.verification_timeout_seconds)
            entry.outcome = f"{'passed' if verdict.restored else 'failed'}: {verdict}"
            if self.incident.rollback_requested and not verdict.restored:
                entry.note(f"rollback requested by {self.incident.rollback_requested.by}")
        return verdict.restored

    async def _wait_for_recovery(self, seconds: float, *, until_rollback_request: bool = True) -> Verdict:
        """Poll until service is verified or `seconds` pass; a rollback request or a hand-over
        cuts the wait short (`until_rollback_request=False`: the rollback's own wait)."""

        def interrupted() -> bool:
            return (
                until_rollback_request and self.incident.rollback_requested is not None
            ) or self.incident.stop_waiting

        async def look() -> Verdict:
            self.last_verdict = await self._verify_once()
            return self.last_verdict

        return await self.incident.poll_until(
            look,
            lambda verdict: verdict.restored,
            deadline=workflow.now() + timedelta(seconds=seconds),
            every=timedelta(seconds=self.t.verification_poll_seconds),
            stop=interrupted,
            summary="next verification poll",
            shortest=None,
            look_again=False,
        )

    async def _verify_once(self) -> Verdict:
        """`curl -f <health>` for every model service, and every LLMDeployment Ready."""
        llmds = await self._list_llm_deployments()
        urls = sorted({d.health_url for d in llmds if d.health_url})
        results: list[HealthResult] = await asyncio.gather(
            *(
                self.cluster.check_health(HealthCheck(url=url, timeout_seconds=self.t.health_timeout_seconds))
                for url in urls
            )
        )
        return Verdict(
            not_ready=[f"{d.namespace}/{d.name} ({d.phase})" for d in llmds if not d.ready],
            unhealthy=[r.summary for r in results if not r.ok],
        )

    # ---- Rollback ---------------------------------------------------------------------------------

    async def rollback(self, restored: bool) -> None:
        inc = self.incident
        if not inc.automation_allowed:
            return  # handed over or resolved by a human: nothing more for automation to do
        if restored and not self.incident.rollback_requested:
            await self._end_maintenance_and_resolve(str(self.last_verdict))
            return
        async with inc.step("Rollback") as entry:
            why = self.incident.rollback_requested.why if self.incident.rollback_requested else "verification failed"
            entry.note(why)
            reverted = await self._revert_operator(entry, f"rollback {why} (last check: {self.last_verdict})")
            if reverted or restored:
                verdict = await self._wait_for_recovery(
                    self.t.verification_timeout_seconds, until_rollback_request=False
                )
                entry.note(f"after rollback: {verdict}")
                restored = verdict.restored
            entry.outcome = "service restored" if restored else "service still down: humans take it from here"
        if restored:
            await self._end_maintenance_and_resolve(f"{self.last_verdict}, after the rollback ({why})")
        else:
            await inc.say(
                ":warning: SOP-001 automation could not restore service. The rollback steps are done or "
                "declined; escalating to the next level.",
                purpose="automation-exhausted",
            )
            await inc.escalate_now("SOP-001 fixes and rollback did not restore service")

    async def _revert_operator(self, entry: TimelineEntry, finding: str) -> bool:
        """`kubectl set image` back to the operator's previous revision, after approval.

        `finding`: why the rollback runs (failed verification's verdict, or who asked), for the write."""
        inc, ns, name = self.incident, self.inp.operator_namespace, self.inp.operator_deployment
        if not (self.operator_restarted or self.incident.rollback_requested):
            entry.note("the operator was healthy and not restarted: no operator revert")
            return False
        images = self.operator_images
        current = images.containers if images else {}
        previous = (images.previous if images else None) or (
            {self.inp.operator_container: self.inp.operator_previous_image}
            if self.inp.operator_previous_image
            else None
        )
        if not previous:
            entry.note("no previous operator image recorded or configured: nothing to revert to")
            return False
        changes = {c: img for c, img in previous.items() if current.get(c) != img}
        if not changes:
            entry.note(f"operator already runs its previous images ({', '.join(previous.values())})")
            return False
        listing = ", ".join(f"{c}: {current.get(c, '?')} → {img}" for c, img in changes.items())
        question = f"Revert the operator {ns}/{name} to its previous image ({listing})?"
        if not await inc.approval(GATE_OPERATOR_ROLLBACK, question, destructive=True, timeout=self.t.approval_timeout):
            entry.note("operator revert not approved")
            return False
        for container, image in changes.items():
            change = await self.cluster.set_image(
                ImageChange(namespace=ns, deployment=name, container=container, image=image),
                finding=finding,
            )
            if change is None:
                return False
        status = await self.cluster.wait_for_rollout(
            RolloutWait(
                namespace=ns,
                name=name,
                timeout_seconds=self.t.operator_rollout_timeout_seconds,
                poll_seconds=self.t.rollout_poll_seconds,
            )
        )
        entry.note(f"operator revert rollout: {status.message}")
        return True

    async def _end_maintenance_and_resolve(self, how: str) -> None:
        """Service verified: take the maintenance page down (SOP rollback), then resolve."""
        inc, page = self.incident, self.inp.maintenance
        if self.maintenance_on is not None:
            async with inc.step("Rollback: remove maintenance mode") as entry:
                await self.cluster.delete_ingress(
                    IngressRef(namespace=page.namespace, name=page.name), finding=f"service verified: {how}"
                )
                entry.outcome = "maintenance page removed"
        inc.resolve(f"SOP-001 verification passed: {how}")

    # ---- helpers ------------------------------------------------------------------------------------

    async def _list_llm_deployments(self) -> list[LLMDeploymentSummary]:
        return await self.cluster.list_llm_deployments(LLMDeploymentQuery())


# SOP-001 acts on the operator and every LLMDeployment: one incident per cluster.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=ServiceOutage,
    scope=Scope.cluster(),
    alerts={
        "LLMDServiceDown": Alert("P0", "seed 001 service-down runbook: P0 (Critical); SOP-001 is a P0 incident"),
    },
    drills=(Drill("service-outage", "LLMDServiceDown", "llm-d service is down", {"namespace": "production"}),),
    kube_access=(
        "list pods",
        "get pods/log",
        "list nodes",
        "list services",
        "get deployments.apps",
        "patch deployments.apps",
        "list replicasets.apps",
        "list llmdeployments.inference.llm-d.io",
        "get ingresses.networking.k8s.io",
        "create ingresses.networking.k8s.io",
        "update ingresses.networking.k8s.io",
        "delete ingresses.networking.k8s.io",
    ),
)
