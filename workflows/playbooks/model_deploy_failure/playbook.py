"""SOP-004: Model Deployment Failure Response (seed 000), as a durable workflow.

Read `respond()` next to the SOP: identify the failure reason, check the common issues and
classify them, apply only the standard fixes that fit the cause (the resource patch only after
approval), monitor recovery, verify. A cause no standard fix can heal (an image that does not
exist, a crash loop, an unknown one) ends in escalation with the diagnosis, never in repeated
restarts. Rollback restores exactly what the fixes replaced.

Escalation (SOP-004): 15 min while the deployment still fails; 30 min only when several
deployments are affected. Which of the two policies applies is decided once, from the scope read
before the escalation clock starts (an activity result, so replay decides the same).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError

from workflows.incident import Alert, Cluster, Drill, Incident, Playbook, PlaybookPolicy, Scope, TimelineEntry
from workflows.playbooks.model_deploy_failure.models import (
    DEPLOYMENT_LABEL,
    GATE_RECREATE_CLAIM,
    GATE_REDUCE_RESOURCES,
    SEVERAL_AFFECTED,
    DeploymentCase,
    ModelDeploymentFailureInput,
    all_ready_text,
    cause_of,
    claim_question,
    diagnosis_text,
    escalation_for,
    failing_targets,
    original_spec,
    resources_question,
    rolled_back_text,
)
from workflows.playbooks.model_deploy_failure.diagnosis import claim_on_default_class, classify_failure, plan_fixes

with workflow.unsafe.imports_passed_through():
    from activities.http_models import HealthCheck
    from activities.kube.claims_models import ClaimReplacement
    from activities.kube.llmdeployments_models import (
        DeploymentTarget,
        LLMDeploymentPatch,
        LLMDeploymentQuery,
        LLMDeploymentSummary,
    )
    from activities.kube.pods_models import FailedPodsDeletion, PodsReadiness, ReadinessQuery


POLICY = PlaybookPolicy(
    runbook="model-deploy-failure",
    title="Model deployment failure",
    default_severity="P1",
    escalation=SEVERAL_AFFECTED,  # replaced by the scope's policy before the clock starts
    impact="a model is not being served: requests for it fail or queue",
    gates=("recreate-claim", "reduce-resources"),
)


@workflow.defn
class ModelDeploymentFailure:
    """SOP-004 for an LLMDeployment that does not become Ready."""

    @workflow.init
    def __init__(self, inp: ModelDeploymentFailureInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.namespace = inp.namespace or inp.alert.labels.get("namespace")
        self.named = inp.deployment or inp.alert.labels.get(DEPLOYMENT_LABEL)
        self.scope: list[LLMDeploymentSummary] | None = None
        self.cases: list[DeploymentCase] = []

    @workflow.run
    async def run(self, inp: ModelDeploymentFailureInput) -> str:
        self.scope = await self._read_scope()
        if inp.escalation is None:  # an explicit policy in the input wins
            affected = None if self.scope is None else len(self._affected())
            self.incident.escalation = escalation_for(affected)
        return await self.incident.run(self.respond)

    @workflow.query
    def diagnosis(self) -> list[DeploymentCase]:
        return self.cases

    async def respond(self) -> None:
        """SOP-004, top to bottom."""
        await self.identify_failure_reason()
        if await self.nothing_wrong():
            return  # no write; the incident waits for the alert to resolve or a human
        await self.check_common_issues()
        await self.apply_standard_fixes()
        await self.monitor_recovery()
        await self.verification()
        await self.rollback()
        self.conclude()

    # ---- 1. Identify failure reason (0-3 minutes) ------------------------------------------------

    async def identify_failure_reason(self) -> None:
        inc = self.incident
        async with inc.step("1. Identify failure reason") as entry:
            targets, note = failing_targets(self.named, self.namespace, self.scope)
            if note:
                entry.note(note)
            self.cases = [DeploymentCase(namespace=ns, name=name) for ns, name in targets]
            for case in self.cases:
                case.description = desc = await self.cluster.describe_llm_deployment(self._target(case))
                entry.note(
                    f"{case.ref}: {desc.phase}"
                    + (f" ({desc.condition})" if desc.condition else "")
                    + f"; pods: {'; '.join(p.line for p in desc.pods) or 'none'}"
                )
            entry.outcome = (
                f"{len(self.cases)} LLMDeployment(s) to diagnose" if self.cases else "no failing LLMDeployment found"
            )
        if not self.cases and not self._all_ready():
            await inc.say(
                f":mag: No failing LLMDeployment found ({'; '.join(entry.details) or 'all Ready'}); "
                "leaving the incident to a human to confirm.",
                purpose="nothing-found",
            )

    def _all_ready(self) -> bool:
        """Every LLMDeployment the alert points at was read and is Ready (none failing in the scope read)."""
        if self.cases:
            return all(c.description is not None and c.description.found and c.description.ready for c in self.cases)
        return not self.named and self.scope is not None and not self._affected()

    async def nothing_wrong(self) -> bool:
        """The alert's LLMDeployments are all Ready: nothing to diagnose or fix, so no write."""
        if not self._all_ready():
            return False
        await self.incident.nothing_wrong_found(all_ready_text(self.cases, self.namespace, self.scope))
        return True

    # ---- 2. Check common issues (3-6 minutes) ----------------------------------------------------

    async def check_common_issues(self) -> None:
        inc = self.incident
        async with inc.step("2. Check common issues") as entry:
            for case in self.cases:
                case.issues = issues = await self.cluster.check_common_issues(self._target(case))
                assert case.description is not None
                case.classification = found = classify_failure(case.description, issues)
                case.plan = plan_fixes(case.description, issues, found, self.inp.resources)
                entry.note(f"{case.ref}: {found.cause} — {found.summary}")
                await inc.say(diagnosis_text(case), purpose=f"diagnosis-{case.name}")
            causes = [f"{c.name}: {c.classification.cause}" for c in self.cases if c.classification]
            entry.outcome = ", ".join(causes) or "nothing to classify"

    # ---- 3. Apply standard fixes (6-10 minutes) --------------------------------------------------

    async def apply_standard_fixes(self) -> None:
        inc = self.incident
        async with inc.step("3. Apply standard fixes") as entry:
            for case in self.cases:
                plan = case.plan
                if plan is None or plan.cannot_fix or not plan.anything:
                    why = "no standard fix fits" if plan and plan.cannot_fix else "nothing to fix"
                    entry.note(f"{case.ref}: {why}")
                    continue
                await self._recreate_claims(case, entry)
                await self._delete_failed_pods(case, entry)
                await self._adjust_resources(case, entry)
            unfixable = [c for c in self.cases if c.plan and c.plan.cannot_fix]
            entry.outcome = (
                f"{sum(len([x for x in c.changes if x.applied]) for c in self.cases)} change(s); "
                f"{len(unfixable)} deployment(s) automation cannot fix"
            )
        if unfixable:
            await self._escalate_unfixable(unfixable)

    async def _recreate_claims(self, case: DeploymentCase, entry: TimelineEntry) -> None:
        for claim in case.plan.recreate_claims if case.plan else []:
            after = claim_on_default_class(claim)
            if not await self.incident.approval(
                GATE_RECREATE_CLAIM,
                claim_question(case, claim),
                target=claim.name,
                destructive=True,
                timeout=self.t.approval_timeout,
            ):
                entry.note(f"claim {claim.name}: recreation not approved")
                continue
            change = await self.cluster.replace_claim(
                ClaimReplacement(
                    namespace=case.namespace,
                    name=claim.name,
                    key=self._key(f"claim-{claim.name}"),
                    spec_before=claim.spec,
                    spec_after=after,
                    delete_wait_seconds=self.t.claim_delete_wait_seconds,
                ),
                finding=f"claim {case.namespace}/{claim.name} {claim.phase}, never bound (storage class "
                f"{claim.storage_class!r}): {cause_of(case)}",
            )
            if change is not None:
                case.changes.append(change)

    async def _delete_failed_pods(self, case: DeploymentCase, entry: TimelineEntry) -> None:
        pods = case.plan.delete_failed_pods if case.plan else []
        if not pods:
            return
        changes = await self.cluster.delete_failed_pods(
            FailedPodsDeletion(namespace=case.namespace, app=case.name, pods=pods),
            finding=f"{len(pods)} pod(s) of {case.ref} not Running: {cause_of(case)}",
        )
        if changes is not None:
            case.changes += changes
            entry.note(f"{case.ref}: {sum(1 for c in changes if c.applied)} failed pod(s) deleted")

    async def _adjust_resources(self, case: DeploymentCase, entry: TimelineEntry) -> None:
        if not case.plan or not case.plan.adjust_resources or case.description is None:
            return
        question = resources_question(case, self.inp.resources)
        if not await self.incident.approval(
            GATE_REDUCE_RESOURCES, question, target=case.name, timeout=self.t.approval_timeout
        ):
            entry.note(f"{case.ref}: resource adjustment not approved")
            return
        change = await self.cluster.patch_llm_deployment(
            LLMDeploymentPatch(namespace=case.namespace, name=case.name, spec=self.inp.resources),
            finding=f"{cause_of(case)}; {case.plan.resources_why}",
        )
        if change is not None:
            case.changes.append(change)
            entry.note(f"{case.ref}: resources {change.before} → {change.after}")

    async def _escalate_unfixable(self, cases: list[DeploymentCase]) -> None:
        lines = [f"• `{c.ref}`: {c.plan.cannot_fix}" for c in cases if c.plan]
        await self.incident.say(
            ":rotating_light: *Automation cannot fix this; handing the diagnosis to a human:*\n" + "\n".join(lines),
            purpose="cannot-fix",
        )
        await self.incident.escalate_now(
            "no standard fix fits: "
            + "; ".join(f"{c.ref}: {c.classification.cause}" for c in cases if c.classification)
        )

    # ---- 4. Monitor recovery (10-15 minutes) -----------------------------------------------------

    async def monitor_recovery(self) -> None:
        fixed = [c for c in self.cases if c.fixed]
        if not fixed:
            return
        async with self.incident.step("4. Monitor recovery") as entry:
            for case in fixed:
                readiness = await self._poll(
                    functools.partial(self._readiness, case),
                    lambda r: r.all_ready,
                    self.t.recovery_timeout_seconds,
                    self.t.recovery_poll_seconds,
                )
                case.recovered = readiness.all_ready
                entry.note(
                    f"{case.ref}: {readiness.ready}/{readiness.wanted} pods Ready"
                    + (f"; not Ready: {'; '.join(readiness.not_ready)}" if readiness.not_ready else "")
                )
            entry.outcome = f"{sum(c.recovered for c in fixed)}/{len(fixed)} recovered"
            if self.incident.rollback_requested:
                entry.note(f"rollback requested by {self.incident.rollback_requested.by}")

    def _readiness(self, case: DeploymentCase) -> Awaitable[PodsReadiness]:
        replicas = case.description.replicas if case.description else 1
        return self.cluster.pods_readiness(ReadinessQuery(namespace=case.namespace, app=case.name, replicas=replicas))

    # ---- Verification ----------------------------------------------------------------------------

    async def verification(self) -> None:
        cases = [c for c in self.cases if c.fixed or (c.classification and c.classification.cause == "none")]
        if not cases or self.incident.rollback_requested:
            return
        async with self.incident.step("Verification") as entry:
            for case in cases:
                verdict = await self._poll(
                    functools.partial(self._verify_once, case),
                    lambda v: v is None,
                    self.t.verification_timeout_seconds,
                    self.t.verification_poll_seconds,
                )
                case.verdict = verdict or "LLMDeployment Ready and health endpoint 2xx"
                case.recovered = verdict is None
                entry.note(f"{case.ref}: {case.verdict}")
            entry.outcome = "passed" if all(c.recovered for c in cases) else "failed"

    async def _verify_once(self, case: DeploymentCase) -> str | None:
        """None when verified, else what is still wrong."""
        found = await self.cluster.list_llm_deployments(LLMDeploymentQuery(namespace=case.namespace))
        mine = next((d for d in found if d.name == case.name), None)
        if mine is None:
            return "LLMDeployment not found"
        if not mine.ready:
            return f"phase {mine.phase}"
        if not mine.health_url:
            return "no health URL published for its service"
        health = await self.cluster.check_health(
            HealthCheck(url=mine.health_url, timeout_seconds=self.t.health_timeout_seconds)
        )
        return None if health.ok else f"health failing: {health.summary}"

    # ---- Rollback --------------------------------------------------------------------------------

    async def rollback(self) -> None:
        """Restore the recorded originals when a human asks, or when the fixes did not heal."""
        failed = [c for c in self.cases if c.fixed and not c.recovered]
        wanted = [c for c in self.cases if c.fixed] if self.incident.rollback_requested else failed
        if not wanted or not self.incident.automation_allowed:
            return
        why = (
            self.incident.rollback_requested.why
            if self.incident.rollback_requested
            else "still failing after the fixes"
        )
        async with self.incident.step("Rollback") as entry:
            entry.note(why)
            for case in wanted:
                await self._restore(case, entry, f"rollback {why}" + (f": {case.verdict}" if case.verdict else ""))
            entry.outcome = f"restored {sum(len(c.restored) for c in wanted)} recorded original(s)"
        await self.incident.say(rolled_back_text(why, wanted), purpose="rollback")
        if not self.incident.rollback_requested:
            await self.incident.escalate_now(
                "still failing after SOP-004's fixes: " + "; ".join(f"{c.ref}: {c.verdict}" for c in failed)
            )

    async def _restore(self, case: DeploymentCase, entry: TimelineEntry, finding: str) -> None:
        for change in reversed(case.changes):
            if change.kind == "LLMDeployment":
                restored = await self.cluster.patch_llm_deployment(
                    LLMDeploymentPatch(
                        namespace=case.namespace, name=case.name, spec=original_spec(case, change, self.inp.resources)
                    ),
                    finding=finding,
                )
            elif change.kind == "PersistentVolumeClaim" and change.applied:
                restored = await self.cluster.replace_claim(
                    ClaimReplacement(
                        namespace=case.namespace,
                        name=change.name,
                        key=self._key(f"restore-{change.name}"),
                        spec_before=change.after,
                        spec_after=change.before,
                        replace_bound=True,
                        delete_wait_seconds=self.t.claim_delete_wait_seconds,
                    ),
                    finding=finding,
                )
            else:
                continue  # deleted pods are replaced by their ReplicaSet: nothing to restore
            if restored is None:
                return  # handed over: a human is driving now
            case.restored.append(restored)
            entry.note(f"{case.ref}: {restored.kind} {restored.name} {restored.field} restored to {restored.after}")

    # ---- the end ---------------------------------------------------------------------------------

    def conclude(self) -> None:
        if not self.incident.automation_allowed or self.incident.rollback_requested or not self.cases:
            return
        if all(c.recovered for c in self.cases):
            self.incident.resolve("SOP-004 verification: " + "; ".join(f"{c.ref} {c.verdict}" for c in self.cases))

    # ---- helpers ---------------------------------------------------------------------------------

    async def _read_scope(self) -> list[LLMDeploymentSummary] | None:
        try:
            return await self.cluster.list_llm_deployments(LLMDeploymentQuery(namespace=self.namespace))
        except FailureError:
            return None  # unknown scope: the SEVERAL_AFFECTED policy, and step 1 says why

    def _affected(self) -> list[LLMDeploymentSummary]:
        return [d for d in self.scope or [] if not d.ready]

    async def _poll(
        self, read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], seconds: float, every: float
    ) -> Any:
        """Read until `done`, `seconds` pass, a rollback is asked for or automation must stop."""
        inc = self.incident
        return await inc.poll_until(
            read,
            done,
            deadline=workflow.now() + timedelta(seconds=seconds),
            every=timedelta(seconds=every),
            ends=lambda: inc.rollback_requested is not None,
            summary="next poll",
            shortest=None,
            look_again=False,
        )

    def _target(self, case: DeploymentCase) -> DeploymentTarget:
        return DeploymentTarget(namespace=case.namespace, name=case.name, events_limit=self.inp.events_limit)

    def _key(self, purpose: str) -> str:
        return f"{workflow.info().workflow_id}/{purpose}"


# SOP-004 fixes one LLMDeployment.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=ModelDeploymentFailure,
    scope=Scope.llm_deployment(),
    alerts={
        "LLMDeploymentNotReady": Alert("P1", "SOP-004 (seed 000); seed 004 'model not loading': P1"),
    },
    drills=(
        Drill(
            "model-deploy-failure",
            "LLMDeploymentNotReady",
            "an LLMDeployment is not Ready",
            {"namespace": "production", "llmdeployment": "mixtral-8x7b"},
        ),  # as the rule labels it
    ),
    kube_access=(
        "list pods",
        "list nodes",
        "list events",
        "list services",
        "get persistentvolumeclaims",
        "list persistentvolumeclaims",
        "create persistentvolumeclaims",
        "delete persistentvolumeclaims",
        "get llmdeployments.inference.llm-d.io",
        "list llmdeployments.inference.llm-d.io",
        "patch llmdeployments.inference.llm-d.io",
    ),
)
