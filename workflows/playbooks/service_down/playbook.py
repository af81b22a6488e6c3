"""Seed 001 "Runbook: LLM-D Service Down", as a durable workflow: one incident per model service.

Read `respond()` next to the runbook: Immediate Response (1. verify outage scope, 2. check recent
changes, 3. check infrastructure health), Recovery Actions (immediate rollback if deployment-related,
else pod recovery; service recreation stays a human's), Validation Steps (health, an inference request).

Which alert comes here, and which goes to SOP-001 (workflows/playbooks/service_outage/playbook.py): `LLMModelNotResponding`
(seed 002: `up{job="llm-deployment"} == 0`, one model's endpoint) is scoped to that one service and
handled here; `LLMDServiceDown` (seed 001: the llm-d service as a whole) stays SOP-001's, one incident
for the cluster (operator, every LLMDeployment). docs/sop-coverage.md says the same.

What the runbook leaves to judgement is decided so: "deployment-related" means the Deployment behind
the Service rolled out a revision within `change_window_minutes` before the alert started; undoing it
asks a human first (gate `rollout-undo`). Otherwise the unready pods are deleted (the runbook's "force
pod restart", no gate: their controller recreates them). A missing Service, or one still failing after
recovery, goes to a human with the manifest to re-apply named.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from workflows.incident import Alert, Cluster, Drill, Incident, Playbook, PlaybookPolicy, Scope
from workflows.playbooks.service_down.models import (
    GATE_ROLLOUT_UNDO,
    SERVICE_LABELS,
    ServiceDownInput,
    recent_rollout,
    scope_line,
    window_start,
)

with workflow.unsafe.imports_passed_through():
    from activities.http_models import HealthCheck, HealthResult, InferenceProbe
    from activities.kube.deployments_models import DeploymentRef, Revision, RolloutHistory, RolloutUndo, RolloutWait
    from activities.kube.nodes_models import NodeQuery
    from activities.kube.services_models import ServicePodsDeletion, ServiceRef, ServiceScope


POLICY = PlaybookPolicy(
    runbook="service-down",
    title="Model service down",
    default_severity="P0",
    escalation=None,  # P0: the severity's marks (seed 001 "Response Time: 5 minutes", seed 003 matrix)
    impact="every inference request to this model service fails",
    gates=(GATE_ROLLOUT_UNDO,),
)


@workflow.defn
class ServiceDown:
    """Seed 001's service-down runbook for one model Service."""

    @workflow.init
    def __init__(self, inp: ServiceDownInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        labels = inp.alert.labels
        self.namespace = inp.namespace or labels.get(SERVICE_LABELS[0])
        self.service = inp.service or labels.get(SERVICE_LABELS[1])
        self.scope: ServiceScope | None = None
        self.health: HealthResult | None = None
        self.histories: dict[str, RolloutHistory] = {}
        self.rollout: tuple[str, Revision, Revision] | None = None  # (deployment, current, previous)
        self.undone: tuple[str, int] | None = None  # (deployment, the revision the undo replaced)

    @workflow.run
    async def run(self, inp: ServiceDownInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        """Seed 001 LLM-D Service Down, top to bottom."""
        if not self.namespace or not self.service:
            await self.incident.escalate_now(
                "the alert names no service (labels namespace and service): a human must find which service is down"
            )
            return
        await self.verify_outage_scope()
        if self.scope is None or not self.scope.found:
            await self.service_recovery("the Service does not exist")
            return
        await self.check_recent_changes()
        await self.check_infrastructure_health()
        if await self.nothing_wrong():
            return
        recovered = await self.immediate_rollback() if self.rollout else await self.pod_recovery()
        validated = recovered and await self.validation()
        await self.rollback()
        if recovered and not validated and not self.incident.interrupted:
            await self.service_recovery("the service still fails after recovery")

    # ---- 1. Verify outage scope: kubectl get pods -o wide; get svc; get ingress -----------------

    async def verify_outage_scope(self) -> None:
        inc = self.incident
        async with inc.step("1. Verify outage scope") as entry:
            self.scope = scope = await self.cluster.service_scope(
                ServiceRef(namespace=self.namespace, name=self.service)
            )
            if not scope.found:
                entry.outcome = f"no Service {self.namespace}/{self.service}"
                return
            self.health = await self._health()
            await inc.say(
                f"*Outage scope* (`kubectl get pods,svc,ingress -n {self.namespace}`): {scope_line(scope)}\n"
                f"*Health:* {self.health.summary if self.health else 'no health URL on the Service'}",
                purpose="scope",
            )
            entry.note(scope_line(scope))
            entry.outcome = f"{scope.ready_pods}/{len(scope.pods)} pods Ready; health " + (
                self.health.summary if self.health else "unknown (no llm-d.io/health-url)"
            )

    # ---- 2. Check recent changes: kubectl rollout history ---------------------------------------

    async def check_recent_changes(self) -> None:
        inc, scope = self.incident, self.scope
        assert scope is not None
        since = window_start(self.inp.alert.starts_at, self.inp.change_window_minutes)
        async with inc.step("2. Check recent changes") as entry:
            for name in scope.deployments:
                history = await self.cluster.rollout_history(DeploymentRef(namespace=scope.namespace, name=name))
                self.histories[name] = history
                entry.note(
                    f"deployment/{name}: "
                    + "; ".join(f"{r} at {r.created:%H:%M:%S}" if r.created else str(r) for r in history.revisions)
                )
                found = recent_rollout(history, since)
                if found and self.rollout is None:
                    self.rollout = (name, *found)
            if self.rollout:
                name, current, previous = self.rollout
                entry.outcome = (
                    f"deployment/{name} rolled out {current} at {current.created:%H:%M:%S}, within "
                    f"{self.inp.change_window_minutes:g} min before the alert; before it: {previous}"
                )
            else:
                entry.outcome = (
                    f"no rollout in the {self.inp.change_window_minutes:g} min before the alert "
                    f"({', '.join(f'deployment/{d}' for d in scope.deployments) or 'no Deployment behind it'})"
                )
            await inc.say(f"*Recent changes:* {entry.outcome}", purpose="recent-changes")

    # ---- 3. Check infrastructure health: kubectl get nodes ---------------------------------------

    async def check_infrastructure_health(self) -> None:
        async with self.incident.step("3. Check infrastructure health") as entry:
            nodes = await self.cluster.list_nodes(NodeQuery())
            not_ready = [n.name for n in nodes if not n.ready]
            entry.outcome = f"nodes NotReady: {', '.join(not_ready)}" if not_ready else f"all {len(nodes)} nodes Ready"

    async def nothing_wrong(self) -> bool:
        scope = self.scope
        assert scope is not None
        if (self.health is None or not self.health.ok) or scope.unready or not scope.pods:
            return False
        await self.incident.nothing_wrong_found(f"{scope_line(scope)}; health {self.health.summary}")
        return True

    def _finding(self) -> str:
        scope = self.scope
        assert scope is not None
        health = f"; health {self.health.summary}" if self.health else ""
        return (
            f"service {scope.namespace}/{scope.name} down: {scope.ready_pods}/{len(scope.pods)} pods Ready"
            + (f" ({'; '.join(str(p) for p in scope.unready[:3])})" if scope.unready else "")
            + health
        )

    # ---- Recovery: immediate rollback (deployment-related) --------------------------------------

    async def immediate_rollback(self) -> bool:
        inc = self.incident
        assert self.rollout is not None and self.scope is not None
        name, current, previous = self.rollout
        async with inc.step("Immediate rollback") as entry:
            approved = await inc.approval(
                GATE_ROLLOUT_UNDO,
                f"{self._finding()}. deployment/{name} rolled out {current} at {current.created:%H:%M:%S} UTC, "
                f"just before. Roll it back to {previous} (`kubectl rollout undo deployment/{name} -n "
                f"{self.namespace} --to-revision={previous.revision}`)?",
                target=name,
                destructive=True,
                timeout=self.t.approval_timeout,
            )
            if not approved:
                entry.outcome = "not rolled back (not approved)"
                await inc.escalate_now(f"{self._finding()}; rollback of deployment/{name} not approved")
                return False
            change = await self.cluster.rollout_undo(
                RolloutUndo(
                    namespace=self.namespace, name=name, to_revision=previous.revision, from_revision=current.revision
                ),
                finding=f"{self._finding()}; {current} rolled out at {current.created:%H:%M:%S} UTC",
            )
            if change is None:
                entry.outcome = "stopped: automation may not act"
                return False
            self.undone = (name, current.revision)
            status = await self.cluster.wait_for_rollout(
                RolloutWait(
                    namespace=self.namespace,
                    name=name,
                    timeout_seconds=self.t.rollout_timeout_seconds,
                    poll_seconds=self.t.rollout_poll_seconds,
                )
            )
            # "Rolled back" only once the rollout happened; an undo the cluster took may still not roll.
            done = f"rolled back to {previous}" if status.complete else f"rollback to {previous} not complete"
            entry.outcome = f"{done}; rollout: {status.message}"
            await inc.say(
                f":leftwards_arrow_with_hook: deployment/{name} {done}: {status.message}", purpose="rollout-undo"
            )
        return True

    # ---- Recovery: pod recovery (kubectl delete pods -l app=...) --------------------------------

    async def pod_recovery(self) -> bool:
        inc, scope = self.incident, self.scope
        assert scope is not None
        async with inc.step("Pod recovery") as entry:
            stuck = scope.unready
            if not stuck or not scope.deployments:
                entry.outcome = "no unready pod of a Deployment to restart"
                return True  # validation tells whether the service answers after all
            deleted = await self.cluster.delete_service_pods(
                ServicePodsDeletion(
                    namespace=scope.namespace,
                    deployment=scope.deployments[0],
                    pods=[p.name for p in stuck],
                    uids={p.name: p.uid for p in stuck},
                ),
                finding=self._finding(),
            )
            if deleted is None:
                entry.outcome = "stopped: automation may not act"
                return False
            entry.outcome = f"deleted {sum(1 for c in deleted if c.applied)} of {len(stuck)} unready pods"
        return True

    # ---- Validation: curl /health; POST /v1/chat/completions -------------------------------------

    async def validation(self) -> bool:
        """Health and one inference request, polled up to `validation_timeout_seconds`; passing
        resolves the incident."""
        inc = self.incident
        async with inc.step("Validation") as entry:
            health, answer = await inc.poll_until(
                lambda: asyncio.gather(self._health(), self._inference()),
                lambda found: all(r is not None and r.ok for r in found),
                deadline=workflow.now() + timedelta(seconds=self.t.validation_timeout_seconds),
                every=timedelta(seconds=self.t.validation_poll_seconds),
                to_deadline=False,
                summary="next validation look",
            )
            ok = health is not None and health.ok and answer is not None and answer.ok
            said = "; ".join(r.summary for r in (health, answer) if r is not None) or "no health or inference URL"
            entry.outcome = ("passed: " if ok else "failed: ") + said
            if ok and not inc.rollback_requested:
                inc.resolve(f"seed 001 validation: {said}")
        return ok

    # ---- Service recovery: a human's (the manifest is the team's) -------------------------------

    async def service_recovery(self, why: str) -> None:
        manifest = self.inp.service_manifest
        await self.incident.say(
            f":wrench: *Human only — service recovery* ({why}): if the Service itself is broken, recreate it "
            f"from the team's manifest: `kubectl delete svc {self.service} -n {self.namespace}` then "
            f"`kubectl apply -f {manifest}`. Automation does not recreate Services.",
            purpose="service-recovery",
        )
        await self.incident.escalate_now(f"{self.namespace}/{self.service}: {why}")

    # ---- Rollback on request: undo the undo ------------------------------------------------------

    async def rollback(self) -> None:
        inc, req = self.incident, self.incident.rollback_requested
        if req is None or self.undone is None or not inc.automation_allowed:
            return
        name, revision = self.undone
        async with inc.step("Rollback") as entry:
            change = await self.cluster.rollout_undo(
                RolloutUndo(namespace=self.namespace, name=name, to_revision=revision, rollback=True),
                finding=f"rollback {req.why}",
            )
            entry.outcome = (
                "stopped: automation may not act"
                if change is None
                else f"deployment/{name} back to the template of revision {revision}"
            )
        await inc.say(f":leftwards_arrow_with_hook: *Rollback* ({req.why}): {entry.outcome}", purpose="rollback")

    # ---- helpers ---------------------------------------------------------------------------------

    async def _health(self) -> HealthResult | None:
        url = self.scope.health_url if self.scope else None
        if not url:
            return None
        return await self.cluster.check_health(HealthCheck(url=url, timeout_seconds=self.t.probe_timeout_seconds))

    async def _inference(self) -> HealthResult | None:
        url = self.scope.inference_url if self.scope else None
        if not url:
            return None
        return await self.cluster.check_inference(
            InferenceProbe(url=url, model=self.inp.model, timeout_seconds=self.t.probe_timeout_seconds)
        )


# One model service down is one incident: every alert about that service joins it.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=ServiceDown,
    scope=Scope("llm-deployment", SERVICE_LABELS),
    alerts={
        "LLMModelNotResponding": Alert("P0", "seed 002 rule severity critical, a model down: SOP-001 outage, P0"),
    },
    drills=(
        Drill(
            "service-down",
            "LLMModelNotResponding",
            "a model service is not responding",
            {"namespace": "production", "service": "llm-d-decode"},
        ),
    ),
    kube_access=(
        "list pods",
        "list nodes",
        "get services",
        "get deployments.apps",
        "list deployments.apps",
        "patch deployments.apps",
        "list replicasets.apps",
        "list ingresses.networking.k8s.io",
    ),
)
