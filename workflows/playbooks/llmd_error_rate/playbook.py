"""Seed 001's `LLMDHighErrorRate` (its runbook_url: llm-d/high-error-rate), with seed 002's model rollback.

Scope: the cluster. The rule aggregates every llm-d server (`sum(rate(llm_d_requests_total{status=~"5.."}[5m]))
/ sum(rate(llm_d_requests_total[5m])) * 100 > 5`, labels `service: llm-d`): its alert names no model, so one
incident per cluster is one per fault, and the playbook finds which servers fail.

Read `respond()` top to bottom:
1. verify the error rate: the rule's ratio, and the same per (namespace, service) — a service above seed
   002's autoRollback trigger (`errorRate: >1%`) is failing;
2. what changed: per failing service, its LLMDeployment's model version change in the window (seed
   002's rollback), else a rollout of its Deployment in the window (seed 001 "check recent changes");
3. per failing service: a model version change → `ModelRollback` (gate `model-rollback`, the patch of
   spec.model.version, rollout status, verified); a rollout without a version change → said with its
   revision and handed to a human (`kubectl rollout undo` is service-down's, with its own checks); no
   change → a human, with the per-service figures;
4. verification: the ratio below the rule's threshold and no service failing, polled; else escalate.
A cluster where nothing fails → nothing wrong found, no write. A rollback on request patches the
recorded versions back.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from workflows.incident import Alert, Cluster, Drill, Incident, Playbook, PlaybookPolicy, Prometheus, Scope
from workflows.playbooks.llmd_error_rate.models import (
    ErrorRatePromQL,
    ErrorRateTimings,
    LLMDErrorRateInput,
    by_service,
    percent,
)
from workflows.playbooks.model_rollback import GATE_MODEL_ROLLBACK, ModelChange, ModelRollback
from workflows.playbooks.service_down.models import recent_rollout

with workflow.unsafe.imports_passed_through():
    from activities.kube.deployments_models import DeploymentRef, Revision
    from activities.kube.llmdeployments_models import LLMDeploymentQuery
    from activities.prometheus_models import InstantQuery, InstantResult


POLICY = PlaybookPolicy(
    runbook="llmd-high-error-rate",
    title="llm-d high error rate",
    default_severity="P1",  # seed 001's rule says critical; its P1 example: "High error rate (>10%)"
    escalation=None,  # the severity's marks
    impact="inference requests to llm-d fail (5xx above 5 % of all requests)",
    gates=(GATE_MODEL_ROLLBACK,),
)

ALERTS = ("LLMDHighErrorRate",)

Key = tuple[str, str]


@workflow.defn
class LLMDHighErrorRate:
    """LLMDHighErrorRate for the llm-d servers of one cluster."""

    @workflow.init
    def __init__(self, inp: LLMDErrorRateInput) -> None:
        self.inp = inp
        self.t: ErrorRateTimings = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.prometheus = Prometheus(self.incident, self.t)
        self.q = ErrorRatePromQL(self.t.rate_window())
        self.models = ModelRollback(
            self.incident,
            self.cluster,
            window_minutes=inp.change_window_minutes,
            rollout_timeout_seconds=self.t.rollout_timeout_seconds,
            rollout_poll_seconds=self.t.rollout_poll_seconds,
            approval_timeout=self.t.approval_timeout,
        )
        self.overall: float | None = None
        self.doubts: list[str] = []
        self.services: dict[Key, float] = {}
        self.changes: dict[Key, ModelChange] = {}
        self.rollouts: dict[Key, tuple[Revision, Revision]] = {}

    @workflow.run
    async def run(self, inp: LLMDErrorRateInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        await self.verify_error_rate()
        if await self.nothing_wrong():
            return
        await self.find_changes()
        acted = await self.act_on_changes()
        if acted:
            await self.verification()
        await self.rollback()

    @property
    def failing(self) -> dict[Key, float]:
        return {k: v for k, v in self.services.items() if v > self.inp.service_error_percent}

    # ---- 1. Verify the error rate -----------------------------------------------------------------

    async def verify_error_rate(self) -> None:
        async with self.incident.step("1. Verify the error rate") as entry:
            overall, per_service = await asyncio.gather(
                self._query(self.q.cluster()), self._query(self.q.per_service())
            )
            self.overall, self.services = overall.first(), by_service(per_service)
            # what Prometheus could not tell (no series, warnings): no evidence of health
            self.doubts = [why for why in (overall.could_not_tell(), per_service.could_not_tell()) if why]
            entry.note(f"promtool query instant '{self.q.cluster()}' → {percent(self.overall)}")
            for line in self._figures():
                entry.note(line)
            entry.outcome = (
                f"5xx {percent(self.overall)} of all llm-d requests (rule: > {self.inp.error_rate_percent:g} %); "
                f"{len(self.failing)} service(s) above {self.inp.service_error_percent:g} %"
            )
            await self.incident.say(
                f"*llm-d error rate:* {entry.outcome}\n" + "\n".join(f"• {line}" for line in self._figures()),
                purpose="figures",
            )

    async def nothing_wrong(self) -> bool:
        if self.failing or (self.overall is not None and self.overall > self.inp.error_rate_percent):
            return False
        if self.doubts and workflow.patched("no-data-is-not-health"):
            await self.incident.could_not_tell(
                self.doubts, checked=f"5xx {percent(self.overall)} of all llm-d requests"
            )
            return True
        await self.incident.nothing_wrong_found(
            f"5xx {percent(self.overall)} of all llm-d requests (rule: > {self.inp.error_rate_percent:g} %); no service "
            f"above {self.inp.service_error_percent:g} %"
        )
        return True

    # ---- 2. What changed ----------------------------------------------------------------------------

    async def find_changes(self) -> None:
        since = self.inp.alert.starts_at - timedelta(minutes=self.inp.change_window_minutes)
        async with self.incident.step("2. Check recent changes") as entry:
            models = {(m.namespace, m.name): m for m in await self.cluster.list_llm_deployments(LLMDeploymentQuery())}
            for key in sorted(self.failing):
                summary = models.get(key)
                change = await self.models.find(summary, self.inp.alert.starts_at) if summary else None
                if change:
                    self.changes[key] = change
                    entry.note(str(change))
                    continue
                history = await self.cluster.rollout_history(DeploymentRef(namespace=key[0], name=key[1]))
                found = recent_rollout(history, since)
                if found:
                    self.rollouts[key] = found
                    entry.note(
                        f"deployment/{key[1]} -n {key[0]} rolled out {found[0]} at {found[0].created:%H:%M:%S} UTC"
                    )
                else:
                    entry.note(
                        f"{key[0]}/{key[1]}: no model version change or rollout in the "
                        f"{self.inp.change_window_minutes:g} min before the alert"
                    )
            entry.outcome = (
                f"{len(self.changes)} model version change(s), {len(self.rollouts)} other rollout(s) in the "
                f"{self.inp.change_window_minutes:g} min before the alert"
            )

    # ---- 3. Act on what changed ------------------------------------------------------------------

    async def act_on_changes(self) -> bool:
        """Model rollbacks first (seed 002); True when at least one went through (verification follows)."""
        acted, humans = False, []
        for key, change in sorted(self.changes.items()):
            if await self.models.offer(change, finding=self._finding(key)):
                acted = True
            elif self.incident.automation_allowed and not self.incident.interrupted:
                humans.append(f"{change.ref}: model rollback to {change.target} not done")
        for key, (current, previous) in sorted(self.rollouts.items()):
            humans.append(
                f"{key[0]}/{key[1]} ({self._finding(key)}): deployment/{key[1]} rolled out {current} at "
                f"{current.created:%H:%M:%S} UTC; before it {previous} (`kubectl rollout undo "
                f"deployment/{key[1]} -n {key[0]} --to-revision={previous.revision}`)"
            )
        humans += [
            f"{k[0]}/{k[1]} ({self._finding(k)}): no recent change found"
            for k in sorted(self.failing)
            if k not in self.changes and k not in self.rollouts
        ]
        if humans and not self.incident.interrupted:
            await self.incident.say(":warning: *Human needed* — " + "; ".join(humans), purpose="no-cause")
            await self.incident.escalate_now("llm-d error rate: " + "; ".join(humans))
        return acted

    # ---- 4. Verification --------------------------------------------------------------------------

    async def verification(self) -> None:
        inc = self.incident
        async with inc.step("Verification") as entry:
            watched = set(self.changes)

            async def look() -> tuple[float | None, dict[Key, float]]:
                overall, per_service = await asyncio.gather(
                    self._query(self.q.cluster()), self._query(self.q.per_service())
                )
                return overall.first(), by_service(per_service)

            def recovered(figures: tuple[float | None, dict[Key, float]]) -> bool:
                now, services = figures
                still = {k: v for k, v in services.items() if k in watched and v > self.inp.service_error_percent}
                return not still and now is not None and now <= self.inp.error_rate_percent

            figures = await inc.poll_until(
                look,
                recovered,
                deadline=workflow.now() + timedelta(seconds=self.t.verification_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                summary="next error-rate check",
            )
            now, services = figures
            ok = recovered(figures)
            said = f"5xx {percent(now)} of all llm-d requests; " + (
                ", ".join(f"{k[0]}/{k[1]} {percent(services.get(k))}" for k in sorted(watched)) or "no service watched"
            )
            entry.outcome = ("passed: " if ok else "failed: ") + said
            if ok and not inc.rollback_requested and not self.rollouts and not (set(self.failing) - watched):
                inc.resolve(f"seed 002 model rollback verified: {said}")
            elif not ok and not self.incident.interrupted:
                await inc.escalate_now(f"llm-d error rate not down after the model rollback: {said}")

    # ---- rollback on request -------------------------------------------------------------------------

    async def rollback(self) -> None:
        inc, req = self.incident, self.incident.rollback_requested
        if req is None or not self.models.done or not inc.automation_allowed:
            return
        async with inc.step("Rollback") as entry:
            restored = await self.models.rollback(req.why)
            entry.outcome = f"{restored} recorded model version(s) restored"
        await inc.say(
            f":leftwards_arrow_with_hook: *Rollback* ({req.why}): {entry.outcome}. Humans take it from here.",
            purpose="rollback",
        )

    # ---- helpers ----------------------------------------------------------------------------------

    def _figures(self) -> list[str]:
        return [
            f"{ns}/{svc}: 5xx {percent(v)}" + (" — failing" if v > self.inp.service_error_percent else "")
            for (ns, svc), v in sorted(self.services.items(), key=lambda kv: -kv[1])
        ]

    def _finding(self, key: Key) -> str:
        return (
            f"5xx {percent(self.services.get(key))} of {key[0]}/{key[1]}'s requests, {percent(self.overall)} "
            f"of all llm-d requests (LLMDHighErrorRate > {self.inp.error_rate_percent:g} %)"
        )

    async def _query(self, expr: str) -> InstantResult:
        return await self.prometheus.query_prometheus(
            InstantQuery(expr=expr, timeout_seconds=self.t.query_timeout_seconds)
        )


# One incident per cluster: the seed's rule aggregates every llm-d server.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=LLMDHighErrorRate,
    scope=Scope.cluster(),
    alerts={
        "LLMDHighErrorRate": Alert("P1", "seed 001 P1 example 'High error rate (>10%)'; seed 004 high error rate: P1"),
    },
    drills=(
        Drill(
            "model-rollback",
            "LLMDHighErrorRate",
            "llm-d error rate above 5 % of requests",
            {"namespace": "production"},
            pending_seconds=300.0,
        ),  # the rule's rate(...[5m]); seed 002's model rollback is the remedy it meets
    ),
    kube_access=(
        "list services",
        "get deployments.apps",
        "list replicasets.apps",
        "list llmdeployments.inference.llm-d.io",
        "patch llmdeployments.inference.llm-d.io",
    ),
)
