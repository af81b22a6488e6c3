"""SOP-002: High Memory Usage Response (seed 000), as a durable workflow.

Read `respond()` next to the SOP: the same steps in the same order. The SOP's rollback says
restoring batch sizes and replicas "would require storing original values": here every write
records the value it replaced (in the incident's changes, and on the object itself so a
retried write still knows it), and the rollback restores exactly those values.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow

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
)
from workflows.playbooks.high_memory.models import (
    GATE_HALVE_REPLICAS,
    RELIEF,
    ROLLBACK,
    SCALE,
    HighMemoryInput,
    MemoryVerdict,
    PodPressure,
    event_line,
    recorded_originals,
)

with workflow.unsafe.imports_passed_through():
    from activities.kube.llmdeployments_models import LLMDeploymentChange, LLMDeploymentQuery, LLMDeploymentSummary
    from activities.kube.models import PodRef
    from activities.kube.pods_models import (
        MemoryEvent,
        MemoryEventsQuery,
        MemoryLimitsQuery,
        PodDeletion,
        PodMemory,
        TopPodsQuery,
    )
    from activities.models import ClusterChange


POLICY = PlaybookPolicy(
    runbook="high-memory",
    title="LLM high memory usage",
    default_severity="P1",
    # SOP-002: 10 min if memory usage doesn't decrease, 20 min if OOM kills continue.
    escalation=EscalationPolicy.of(10, 20),
    impact="LLM serving pods near their memory limits: OOM kills and slow or failed requests",
    gates=("halve-replicas",),
)


@workflow.defn
class HighMemory:
    """SOP-002 for memory pressure on LLM serving pods."""

    @workflow.init
    def __init__(self, inp: HighMemoryInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.baseline: list[PodPressure] = []
        self.verdict: MemoryVerdict | None = None  # the last verification pass: the diagnosis when it fails
        self.events: list[MemoryEvent] = []  # step 1's memory warnings
        self.finding = ""  # what steps 1-2 found that justifies the relief (pressure, OOM kills)

    @workflow.run
    async def run(self, inp: HighMemoryInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        """SOP-002, top to bottom."""
        top = await self.identify_high_memory_pods()
        await self.check_memory_limits(top)
        if await self.nothing_wrong():
            return  # no write; the incident waits for the alert to resolve or a human
        await self.apply_immediate_relief()
        await self.scale_if_necessary()
        verified = await self.verification()
        await self.rollback(verified)

    # ---- 1. Identify high memory pods (0-3 minutes) ---------------------------------------------

    async def identify_high_memory_pods(self) -> list[PodMemory]:
        inc = self.incident
        async with inc.step("1. Identify high memory pods") as entry:
            top, events = await asyncio.gather(self._top_pods(), self._memory_events())
            self.events = events
            lines = "\n".join(f"• `{p.namespace}/{p.name}` {p.mib}Mi" for p in top) or "• no pod metrics"
            await inc.say(
                f"*Top memory consumers* (`kubectl top pods -A --sort-by=memory`):\n{lines}", purpose="top-pods"
            )
            if events:
                shown = "\n".join(f"• {event_line(e)}" for e in events[:10])
                await inc.say(f"*Memory warning events* ({len(events)}):\n{shown}", purpose="memory-events")
            entry.note("top: " + (", ".join(f"{p.namespace}/{p.name} {p.mib}Mi" for p in top[:5]) or "none"))
            entry.note(f"{len(events)} memory warning events, {sum(1 for e in events if e.oom)} of them OOM kills")
            entry.outcome = f"{len(top)} pods ranked; {len(events)} memory warning events"
        return top

    # ---- 2. Check memory limits (3-5 minutes) ---------------------------------------------------

    async def check_memory_limits(self, top: list[PodMemory]) -> None:
        inc = self.incident
        async with inc.step("2. Check memory limits") as entry:
            self.baseline = await self._with_limits(top[: self.inp.limits_of_top])
            for p in self.baseline:
                entry.note(str(p))
            near = [p for p in self.baseline if (p.percent or 0) >= self.inp.pressure_percent]
            if self.baseline:
                await inc.say(
                    "*Memory limits of the top consumers:*\n" + "\n".join(f"• {p}" for p in self.baseline),
                    purpose="limits",
                )
            threshold = f"{self.inp.pressure_percent:g}%"
            entry.outcome = f"{len(near)}/{len(self.baseline)} at or above {threshold} of their limit"

    def _over_threshold(self) -> list[PodPressure]:
        """Top pods at or above `pressure_percent` of their memory limit, highest consumer first."""
        return [p for p in self.baseline if (p.percent or 0) >= self.inp.pressure_percent]

    def _recent_ooms(self) -> list[MemoryEvent]:
        """Step 1's OOM kills seen within the SOP's quiet window (undated ones count: they may be recent)."""
        since = workflow.now() - timedelta(minutes=self.t.oom_quiet_minutes)
        return [e for e in self.events if e.oom and (e.last_seen is None or e.last_seen >= since)]

    async def nothing_wrong(self) -> bool:
        """No top pod near its limit and no recent OOM kill: no memory pressure to relieve, so no write."""
        hot, ooms = self._over_threshold(), self._recent_ooms()
        found = []
        if hot:
            found.append(f"at or above {self.inp.pressure_percent:g}% of the memory limit: " + ", ".join(map(str, hot)))
        if ooms:
            found.append(
                f"{len(ooms)} OOM kill event(s) in the last {self.t.oom_quiet_minutes:g} min, latest: "
                + event_line(ooms[0])
            )
        self.finding = "; ".join(found)
        if found:
            return False
        top = ", ".join(map(str, self.baseline[:3])) or "no pod metrics"
        await self.incident.nothing_wrong_found(
            f"no top pod at or above {self.inp.pressure_percent:g}% of its memory limit ({top}); "
            f"no OOM kill in the last {self.t.oom_quiet_minutes:g} min"
        )
        return True

    # ---- 3. Apply immediate relief (5-10 minutes) -----------------------------------------------

    async def apply_immediate_relief(self) -> None:
        inc = self.incident
        async with inc.step("3. Apply immediate relief") as entry:
            patched = 0
            for d in await self._llm_deployments():
                change = await self._change(
                    d, "serving", self.inp.relief.patch(), RELIEF, "reduce batch size", entry, finding=self.finding
                )
                if change is None:
                    entry.outcome = "stopped: automation may not act"
                    return
                patched += 1
            restarted = await self._restart_highest_consumer(entry)
            entry.outcome = (
                f"{patched} LLMDeployments set to batchSize {self.inp.relief.batch_size}, "
                f"maxConcurrency {self.inp.relief.max_concurrency}; {restarted}"
            )

    async def _restart_highest_consumer(self, entry: TimelineEntry) -> str:
        """`kubectl delete pod` of the highest consumer found in step 1 at or above the pressure threshold,
        if its controller will replace it. A pod below it is not the problem: it is left alone."""
        if not self.baseline:
            return "no pod to restart"
        hot = self._over_threshold()
        if not hot:
            entry.note(f"no top pod at or above {self.inp.pressure_percent:g}% of its limit: no pod restart")
            return "no pod above the threshold to restart"
        top = hot[0]
        where = f"{top.pod.namespace}/{top.pod.name}"
        limits = top.limits
        if limits is None or not limits.found:
            entry.note(f"{where} is already gone (replaced since it was listed)")
            return f"{where} already replaced"
        if limits.owner is None:
            # A bare pod does not come back when deleted: that is a human's call, not a restart.
            entry.note(f"{where} has no controller: deleting it would not restart it; left for a human")
            await self.incident.say(
                f":warning: `{where}` has no controller; not restarted (deleting it would lose it).", purpose="bare-pod"
            )
            return f"{where} not restarted (no controller)"
        change = await self.cluster.delete_pod(
            PodDeletion(namespace=top.pod.namespace, name=top.pod.name, uid=limits.uid),
            finding=f"highest consumer {top}, at or above {self.inp.pressure_percent:g}% of its limit",
        )
        if change is None:
            return "restart skipped: automation may not act"
        return f"{where} restarted" if change.applied else f"{where} already replaced (its rollout came first)"

    # ---- 4. Scale if necessary (10-15 minutes) --------------------------------------------------

    async def scale_if_necessary(self) -> None:
        inc, above = self.incident, self.inp.scale_above_replicas
        async with inc.step("4. Scale if necessary") as entry:
            if self.incident.interrupted:
                entry.outcome = self.incident.why_interrupted
                return
            big = [d for d in await self._llm_deployments() if (d.replicas or 0) > above]
            if not big:
                entry.outcome = f"not needed: no LLMDeployment has more than {above} replicas"
                return
            await self.incident.pause(timedelta(seconds=self.t.relief_settle_seconds), summary="next memory check")
            if self.incident.interrupted:
                entry.outcome = self.incident.why_interrupted
                return
            verdict = await self._verify_once()
            entry.note(f"after the relief: {verdict}")
            if verdict.memory_down:
                entry.outcome = "not needed: memory is down after the relief"
                return
            plan = ", ".join(f"{d.namespace}/{d.name} {d.replicas}→{(d.replicas or 0) // 2}" for d in big)
            question = f"Memory is still high after the relief ({verdict}). Halve the replicas: {plan}?"
            if not await inc.approval(GATE_HALVE_REPLICAS, question, destructive=True, timeout=self.t.approval_timeout):
                entry.outcome = "not scaled: not approved"
                return
            for d in big:
                half = (d.replicas or 0) // 2
                finding = f"memory still high after the relief ({verdict}); {d.replicas} replicas > {above}"
                if (
                    await self._change(d, "replicas", half, SCALE, "scale down replicas", entry, finding=finding)
                    is None
                ):
                    entry.outcome = "stopped: automation may not act"
                    return
            entry.outcome = f"halved: {plan}"

    # ---- Verification ---------------------------------------------------------------------------

    async def verification(self) -> bool:
        inc = self.incident
        async with inc.step("Verification") as entry:
            if not inc.automation_allowed:
                entry.outcome = "skipped: automation stopped"
                return False
            self.verdict = verdict = await self._wait_for_recovery(self.t.verification_timeout_seconds)
            entry.outcome = f"{'passed' if verdict.verified else 'failed'}: {verdict}"
            if verdict.verified and not self.incident.rollback_requested:
                inc.resolve(f"SOP-002 verification: {verdict}")
            elif self.incident.rollback_requested:
                entry.note(f"rollback requested by {self.incident.rollback_requested.by}")
        return verdict.verified

    async def _wait_for_recovery(self, seconds: float) -> MemoryVerdict:
        """Check every poll interval until memory is verified down, `seconds` pass, or a human steps in."""
        return await self.incident.poll_until(
            self._verify_once,
            lambda verdict: verdict.verified,
            deadline=workflow.now() + timedelta(seconds=seconds),
            every=timedelta(seconds=self.t.verification_poll_seconds),
            summary="next memory check",
        )

    async def _verify_once(self) -> MemoryVerdict:
        """`kubectl top pods -A --sort-by=memory | head -5` and no OOM event in the last 10 minutes."""
        since = workflow.now() - timedelta(minutes=self.t.oom_quiet_minutes)
        top, ooms = await asyncio.gather(self._top_pods(), self._memory_events(oom_only=True, since=since))
        now = await self._with_limits(top[: self.inp.limits_of_top])
        return MemoryVerdict(
            top_total_mib=sum(p.pod.mib for p in now),
            baseline_total_mib=sum(p.pod.mib for p in self.baseline),
            over_threshold=[str(p) for p in now if (p.percent or 0) >= self.inp.pressure_percent],
            recent_ooms=[event_line(e) for e in ooms],
        )

    # ---- Rollback -------------------------------------------------------------------------------

    async def rollback(self, verified: bool) -> None:
        """On request, or when verification failed: restore exactly the recorded originals."""
        inc = self.incident
        if not inc.automation_allowed or (verified and not self.incident.rollback_requested):
            return
        req = self.incident.rollback_requested
        why = req.why if req else "verification failed"
        async with inc.step("Rollback") as entry:
            entry.note(why)
            restored = 0
            for original in recorded_originals(inc.changes):
                done = await self.cluster.change_llm_deployment(
                    LLMDeploymentChange(
                        namespace=original.namespace or "",
                        name=original.name,
                        field=original.field.removeprefix("spec."),
                        value=original.before,
                        rollback=True,
                        action="rollback: restore original",
                        change_key=self._key(ROLLBACK, original.namespace or "", original.name, original.field),
                    ),
                    finding=f"rollback {why}" + (f" ({self.verdict})" if self.verdict and not req else ""),
                )
                if done is None:
                    entry.outcome = "stopped: automation may not act"
                    return
                restored += 1
            entry.outcome = f"{restored} recorded originals restored (pod restarts cannot be undone)"
        await inc.say(
            f":leftwards_arrow_with_hook: *Rollback* ({why}): {restored} recorded batch size / concurrency / replica "
            "values restored. Memory pressure is not resolved: humans take it from here.",
            purpose="rollback",
        )
        if not req:
            await inc.escalate_now(
                f"SOP-002 relief did not bring memory down and stop the OOM kills ({self.verdict}); {entry.outcome}"
            )

    # ---- helpers --------------------------------------------------------------------------------

    def _key(self, step: str, namespace: str, name: str, field: str) -> str:
        # The incident id + step + object + field: a retried write recognises its own earlier attempt.
        return f"{workflow.info().workflow_id}/{step}/{namespace}/{name}/{field}"

    async def _change(
        self,
        d: LLMDeploymentSummary,
        field: str,
        value: Any,
        step: str,
        action: str,
        entry: TimelineEntry,
        *,
        finding: str,
    ) -> ClusterChange | None:
        change = await self.cluster.change_llm_deployment(
            LLMDeploymentChange(
                namespace=d.namespace,
                name=d.name,
                field=field,
                value=value,
                action=action,
                change_key=self._key(step, d.namespace, d.name, field),
            ),
            finding=finding,
        )
        if change is not None:
            entry.note(f"{d.namespace}/{d.name} spec.{field}: {change.before} → {change.after}")
        return change

    async def _top_pods(self) -> list[PodMemory]:
        return await self.cluster.top_memory_pods(TopPodsQuery(limit=self.inp.top_pods))

    async def _memory_events(self, *, oom_only: bool = False, since: Any = None) -> list[MemoryEvent]:
        return await self.cluster.memory_events(MemoryEventsQuery(oom_only=oom_only, since=since))

    async def _with_limits(self, pods: list[PodMemory]) -> list[PodPressure]:
        if not pods:
            return []
        limits = await self.cluster.pod_memory_limits(
            MemoryLimitsQuery(pods=[PodRef(namespace=p.namespace, name=p.name) for p in pods])
        )
        return [PodPressure(pod=p, limits=lim) for p, lim in zip(pods, limits)]

    async def _llm_deployments(self) -> list[LLMDeploymentSummary]:
        return await self.cluster.list_llm_deployments(LLMDeploymentQuery())


# SOP-002 acts on the top memory consumers of the whole cluster.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=HighMemory,
    scope=Scope.cluster(),
    alerts={
        "LLMDMemoryPressure": Alert("P1", "SOP-002 (seed 000), rule severity critical: significant degradation"),
    },
    drills=(
        Drill("high-memory", "LLMDMemoryPressure", "llm-d pods near their memory limits", {"namespace": "production"}),
    ),
    kube_access=(
        "get pods",
        "delete pods",
        "list events",
        "list services",
        "list pods.metrics.k8s.io",
        "get llmdeployments.inference.llm-d.io",
        "list llmdeployments.inference.llm-d.io",
        "patch llmdeployments.inference.llm-d.io",
    ),
)
