"""Seed 001's High Inference Latency runbook, as a durable workflow.

Scope: the cluster. The seeds' latency and capacity rules (`LLMDHighLatency`, `LLMDGPUHighUtilization`,
…) aggregate over every llm-d server (`histogram_quantile(0.95, rate(...[5m]))`, `avg(...)`): their
alerts carry no service label, and the remedies act on llm-d's shared decode and prefill
deployments, so one incident per cluster is one per fault.

Read `respond()` next to the runbook: 1. verify the alert (p95 now, and over the last hour),
2.-4. system resources, request patterns and cache performance, then the common root cause that
fits, each with the runbook's solution:

- queue depth > 10 → scale the decode deployment (seed: 8 → 16, here ×`decode_scale_factor`);
- GPU utilization > 95 % or OOMKilled events on prefill → scale the prefill deployment (×1.5);
- cache hit ratio < 60 % → a human investigates the cache configuration, with the figures;
- cold start (model load time spikes) → POST the model's warm-up endpoint.

Scale-ups are bounded by the free GPUs and `max_replicas`, recorded (replicas before/after) and
restored exactly by a rollback. The runbook's escalation criteria (p95 > 5 s after 30 minutes, GPU
not below 90 %, queue still growing) page the next level when verification ends without recovery.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import TypeVar, cast

from temporalio import workflow

from workflows.incident import (
    Alert,
    Cluster,
    Drill,
    Incident,
    Playbook,
    PlaybookPolicy,
    Prometheus,
    Scope,
    TimelineEntry,
)
from workflows.playbooks.high_latency.models import (
    ROLLBACK,
    SCALE_DECODE,
    SCALE_PREFILL,
    Cause,
    HighLatencyInput,
    LatencyFindings,
    LatencyTimings,
    LatencyVerdict,
    PromQL,
    recorded_replicas,
)
from workflows.playbooks.model_rollback import GATE_MODEL_ROLLBACK, ModelChange, ModelRollback

with workflow.unsafe.imports_passed_through():
    from activities.http_models import WarmUpRequest
    from activities.kube.deployments_models import DeploymentRef, ScaleRequest
    from activities.kube.gpus_models import GpuInventoryQuery
    from activities.kube.pods_models import MemoryEvent, MemoryEventsQuery
    from activities.prometheus_models import InstantQuery, InstantResult, RangeQuery, RangeResult

ResultT = TypeVar("ResultT", InstantResult, RangeResult)


# step 2's seven readings at once (asyncio.gather's typing stops at six)
_Figures = tuple[
    InstantResult, InstantResult, InstantResult, InstantResult, InstantResult, InstantResult, list[MemoryEvent]
]

POLICY = PlaybookPolicy(
    runbook="high-latency",
    title="LLM high inference latency",
    default_severity="P2",  # seed 001: "Severity: P2 (Medium)"
    escalation=None,  # the runbook has criteria, not marks: the severity's marks, plus verification's criteria
    impact="LLM inference slower than its SLO (p95 above 2 s): slow responses, timeouts",
    gates=(GATE_MODEL_ROLLBACK,),  # seed 002's autoRollback trigger latencyP95 > 1000 ms: a model change in the window
)

ALERTS = (
    "LLMDHighLatency",
    "LLMHighLatency",
    "LLMHighTokenLatency",
    "LLMDGPUHighUtilization",
    "LLMHighGPUUtilization",
    "LLMDKVCacheOverflow",
)


@workflow.defn
class HighLatency:
    """Seed 001's high-latency runbook for the llm-d deployment of one cluster."""

    @workflow.init
    def __init__(self, inp: HighLatencyInput) -> None:
        self.inp = inp
        self.t: LatencyTimings = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.prometheus = Prometheus(self.incident, self.t)
        self.q = PromQL(inp.serving_namespace, self.t.rate_window())
        self.findings = LatencyFindings()
        self.causes: list[Cause] = []
        self.verdict: LatencyVerdict | None = None
        self.models = ModelRollback(
            self.incident,
            self.cluster,
            rollout_timeout_seconds=min(300.0, self.t.verification_timeout_seconds),
            rollout_poll_seconds=min(5.0, self.t.verification_poll_seconds),
            approval_timeout=self.t.approval_timeout,
        )
        self.model_changes: list[ModelChange] = []

    @workflow.run
    async def run(self, inp: HighLatencyInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        """Seed 001's runbook, top to bottom."""
        await self.verify_alert()
        await self.check_resources_and_patterns()
        await self.check_cache()
        self.causes = self.diagnose()
        # seed 002: a model version change in the window is a cause of its own
        self.model_changes = await self.models.find_in(self.inp.serving_namespace, self.inp.alert.starts_at)
        if await self.nothing_wrong():
            return
        # seed 002: a model version change in the window is rolled back first (after approval)
        models_acted = await self.roll_back_model_changes()
        acted = await self.apply_solutions() if self.causes or not models_acted else False
        acted = acted or models_acted
        if not acted:
            return  # a human takes it from here (cache, no capacity, no known cause); the diagnosis is posted
        verified = await self.verification()
        await self.rollback(verified)

    # ---- 1. Verify the alert ------------------------------------------------------------------------

    async def verify_alert(self) -> None:
        inc, f = self.incident, self.findings
        async with inc.step("1. Verify the alert") as entry:
            now = workflow.now()
            start = now - timedelta(seconds=self.t.verify_window_seconds)
            instant, window = await asyncio.gather(
                self._query(self.q.p95()),
                self._range(
                    RangeQuery(
                        expr=self.q.p95(),
                        start=start,
                        end=now,
                        step_seconds=self.t.verify_step_seconds,
                        timeout_seconds=self.t.query_timeout_seconds,
                    )
                ),
            )
            f.p95_seconds = instant.first()
            points = [v for s in window.series for v in s.values()]
            f.window_points = len(points)
            f.window_points_high = sum(1 for v in points if v > self.inp.latency_slo_seconds)
            entry.note(f"promtool query instant '{self.q.p95()}' → {f.p95_text()}")
            entry.outcome = f.figures()[0]

    # ---- 2./3. System resources and request patterns ---------------------------------------------

    async def check_resources_and_patterns(self) -> None:
        inc, f, q = self.incident, self.findings, self.q
        async with inc.step("2. Check system resources and request patterns") as entry:
            p95s, queue, gpu, memory, rate, load, ooms = cast(
                _Figures,
                await asyncio.gather(
                    self._query(q.p95_by_service()),
                    self._query(q.by_service("llm_d_queue_depth")),
                    self._query(q.by_service("llm_d_gpu_utilization")),
                    self._query(q.by_service("llm_d_memory_utilization")),
                    self._query(q.request_rate()),
                    self._query(q.by_service("llm_d_model_load_time_seconds")),
                    self.cluster.memory_events(MemoryEventsQuery(namespace=self.inp.serving_namespace, oom_only=True)),
                ),
            )
            f.p95_by_service, f.queue_depth, f.gpu_percent = p95s.by("service"), queue.by("service"), gpu.by("service")
            f.memory_percent, f.request_rate, f.model_load_seconds = (
                memory.by("service"),
                rate.by("service"),
                load.by("service"),
            )
            f.oom_kills = [f"{e.namespace}/{e.name} {e.reason} (x{e.count})" for e in ooms]
            for line in f.figures()[1:5] + f.figures()[6:]:
                entry.note(line)
            entry.outcome = f"{len(f.queue_depth)} services measured; {len(ooms)} OOMKilled events"

    # ---- 4. Check cache performance ------------------------------------------------------------------

    async def check_cache(self) -> None:
        inc, f = self.incident, self.findings
        async with inc.step("4. Check cache performance") as entry:
            ratio, evictions = await asyncio.gather(
                self._query(self.q.cache_hit_ratio()), self._query(self.q.evictions())
            )
            f.cache_hit_ratio = {k: v for k, v in ratio.by("service").items() if not math.isnan(v)}
            f.evictions_in_window = evictions.first()
            entry.outcome = f.figures()[5]
        await inc.say(
            "*High latency: what the runbook's checks found*\n" + "\n".join(f"• {line}" for line in f.figures()),
            purpose="findings",
        )

    async def roll_back_model_changes(self) -> bool:
        finding = (
            f"p95 latency {self.findings.p95_text()} (SLO {self.inp.latency_slo_seconds:g}s; seed 002 "
            "autoRollback: latencyP95 > 1000 ms)"
        )
        done = [await self.models.offer(change, finding=finding) for change in self.model_changes]
        return any(done)

    # ---- diagnosis: the common root causes ------------------------------------------------------

    def diagnose(self) -> list[Cause]:
        """The runbook's root causes that the figures show, in its order."""
        f, inp, causes = self.findings, self.inp, []
        decode, prefill = inp.decode_deployment, inp.prefill_deployment
        depth = f.queue_depth.get(decode)
        if depth is not None and depth > inp.queue_depth_threshold:
            causes.append(
                Cause(
                    kind="queue-depth",
                    service=decode,
                    evidence=f"{decode} queue depth {depth:.0f} > {inp.queue_depth_threshold:g}",
                )
            )
        gpu = f.gpu_percent.get(prefill)
        ooms = [o for o in f.oom_kills if o.split("/", 1)[-1].startswith(prefill)]
        if (gpu is not None and gpu > inp.gpu_exhausted_percent) or ooms:
            why = (
                [f"{prefill} GPU utilization {gpu:.0f}% > {inp.gpu_exhausted_percent:g}%"]
                if gpu and gpu > inp.gpu_exhausted_percent
                else []
            )
            why += [f"{len(ooms)} OOMKilled events ({ooms[0]})"] if ooms else []
            causes.append(Cause(kind="gpu-exhaustion", service=prefill, evidence="; ".join(why)))
        low = {s: r for s, r in f.cache_hit_ratio.items() if s in (decode, prefill) and r < inp.cache_hit_ratio_min}
        if low:
            causes.append(
                Cause(
                    kind="cache-misses",
                    service=min(low, key=low.__getitem__),
                    evidence=", ".join(f"{s} cache hit ratio {r:.0%}" for s, r in sorted(low.items()))
                    + f" < {inp.cache_hit_ratio_min:.0%}",
                )
            )
        for service in (prefill, decode):
            seconds = f.model_load_seconds.get(service)
            if seconds is not None and seconds > inp.cold_start_seconds:
                causes.append(
                    Cause(
                        kind="cold-start",
                        service=service,
                        evidence=f"{service} model load time {seconds:.0f}s > {inp.cold_start_seconds:g}s",
                    )
                )
        return causes

    async def nothing_wrong(self) -> bool:
        """p95 within the SLO over the window and no root cause: nothing to act on, no write."""
        f = self.findings
        if (
            self.causes
            or f.consistently_high(self.inp.consistently_high_fraction)
            or (f.p95_seconds is not None and f.p95_seconds > self.inp.latency_slo_seconds)
        ):
            return False
        if f.could_not_tell and workflow.patched("no-data-is-not-health"):
            # No fault shows, but part of the evidence is missing: that is no clean bill of health.
            await self.incident.could_not_tell(
                f.could_not_tell, checked=f"p95 latency {f.p95_text()} (SLO {self.inp.latency_slo_seconds:g}s)"
            )
            return True
        await self.incident.nothing_wrong_found(
            f"p95 latency {f.p95_text()} (SLO {self.inp.latency_slo_seconds:g}s; {f.window_points_high}/{f.window_points} "
            f"points of the window above it); no queue over {self.inp.queue_depth_threshold:g}, no GPU over "
            f"{self.inp.gpu_exhausted_percent:g}%, no cache hit ratio under {self.inp.cache_hit_ratio_min:.0%}, no cold start"
        )
        return True

    # ---- common root causes and solutions ----------------------------------------------------------

    async def apply_solutions(self) -> bool:
        """Each cause's solution; True when automation acted (verification follows)."""
        inc = self.incident
        async with inc.step("Common root causes and solutions") as entry:
            if not self.causes:
                entry.outcome = "no known root cause: handed to a human"
                await inc.say(
                    ":warning: Latency is above the SLO but none of the runbook's root causes shows "
                    f"(queue, GPU, cache, cold start). On-call, please investigate. p95 {self.findings.p95_text()}.",
                    purpose="no-cause",
                )
                return False
            acted: list[str] = []
            for cause in self.causes:
                entry.note(f"{cause.kind}: {cause.evidence}")
                if cause.kind == "cache-misses":
                    await self._hand_over_cache(cause)
                    continue
                done = await (self._warm_up(cause, entry) if cause.kind == "cold-start" else self._scale(cause, entry))
                if done:
                    acted.append(done)
            entry.outcome = "; ".join(acted) if acted else "nothing automation may do: a human takes it"
            return bool(acted)

    async def _hand_over_cache(self, cause: Cause) -> None:
        f = self.findings
        ratios = ", ".join(f"{s} {r:.0%}" for s, r in sorted(f.cache_hit_ratio.items()))
        evictions = "no data" if f.evictions_in_window is None else f"{f.evictions_in_window:.0f}"
        await self.incident.say(
            f":mag: *Cache misses* — {cause.evidence}. Cache hit ratio by service: {ratios}; KV-cache evictions in the "
            f"last {self.t.rate_window()}: {evictions}; p95 {f.p95_text()}. The runbook's solution is a human's: "
            "investigate the cache configuration (`redis-cli info stats | grep evicted`, `config get maxmemory`).",
            purpose="cache-misses",
        )
        self.incident.record("action", "cache misses: handed to a human", outcome=cause.evidence)

    async def _scale(self, cause: Cause, entry: TimelineEntry) -> str | None:
        """`kubectl scale` of decode (queue depth) or prefill (GPU exhaustion), bounded by free GPUs and the maximum."""
        inp = self.inp
        factor = inp.decode_scale_factor if cause.kind == "queue-depth" else inp.prefill_scale_factor
        step = SCALE_DECODE if cause.kind == "queue-depth" else SCALE_PREFILL
        d, gpus = await asyncio.gather(
            self.cluster.deployment_scale(DeploymentRef(namespace=inp.serving_namespace, name=cause.service)),
            self.cluster.gpu_inventory(GpuInventoryQuery()),
        )
        free = max(0, gpus.total_allocatable - gpus.total_in_use)
        wanted = min(math.ceil(d.replicas * factor), inp.max_replicas)
        target = min(wanted, d.replicas + free // d.gpus_per_pod) if d.gpus_per_pod else wanted
        entry.note(
            f"{cause.service}: {d.replicas} replicas × {factor:g} → {wanted} (max {inp.max_replicas}); "
            f"{free} free GPUs, {d.gpus_per_pod} per pod → {target}"
        )
        if target <= d.replicas:
            why = (
                f"{cause.service} cannot be scaled: {d.replicas} replicas, max {inp.max_replicas}, "
                f"{free} free GPUs for {d.gpus_per_pod} per pod"
            )
            await self.incident.say(
                f":warning: {cause.evidence}, but {why}. A human must add capacity.", purpose="no-capacity"
            )
            self.incident.record("action", f"scale {cause.service}: not possible", outcome=why)
            return None
        change = await self.cluster.scale_deployment(
            ScaleRequest(
                namespace=inp.serving_namespace,
                name=cause.service,
                replicas=target,
                change_key=self._key(step, cause.service),
            ),
            finding=f"{cause.evidence} (p95 {self.findings.p95_text()})",
        )
        if change is None:
            return None
        return f"{cause.service} scaled {change.before} → {change.after}"

    async def _warm_up(self, cause: Cause, entry: TimelineEntry) -> str | None:
        inp = self.inp
        d = await self.cluster.deployment_scale(DeploymentRef(namespace=inp.serving_namespace, name=cause.service))
        if not d.model:
            entry.note(f"{cause.service}: no --model argument found; cannot name the model to warm up")
            return None
        change = await self.cluster.warm_up_model(
            WarmUpRequest(namespace=inp.serving_namespace, service=cause.service, model=d.model), finding=cause.evidence
        )
        return None if change is None else f"{cause.service} warmed up ({d.model})"

    # ---- verification and the runbook's escalation criteria -------------------------------------

    async def verification(self) -> bool:
        inc = self.incident
        async with inc.step("Verification") as entry:
            if not inc.automation_allowed:
                entry.outcome = "skipped: automation stopped"
                return False

            async def look() -> LatencyVerdict:
                self.verdict = await self._verify_once()
                return self.verdict

            verdict = await inc.poll_until(
                look,
                lambda v: v.verified,
                deadline=workflow.now() + timedelta(seconds=self.t.verification_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                summary="next latency check",
            )
            entry.outcome = f"{'passed' if verdict.verified else 'failed'}: {verdict}"
            if verdict.verified and not inc.rollback_requested:
                inc.resolve(f"seed 001 high-latency runbook: {verdict}")
                return True
            if inc.rollback_requested:
                entry.note(f"rollback requested by {inc.rollback_requested.by}")
                return False
            criteria = self._escalation_criteria(verdict)
            await inc.escalate_now(
                "high latency not recovered after the runbook's solutions: "
                + ("; ".join(criteria) if criteria else str(verdict))
            )
        return False

    def _escalation_criteria(self, verdict: LatencyVerdict) -> list[str]:
        """Seed 001's escalation criteria this verification meets."""
        inp, met = self.inp, []
        if verdict.p95_seconds is not None and verdict.p95_seconds > inp.escalate_p95_seconds:
            met.append(f"latency remains > {inp.escalate_p95_seconds:g}s p95 ({verdict.p95_seconds:.2f}s)")
        met += [s for s in verdict.still if s.startswith(("GPU", "queue"))]
        return met

    async def _verify_once(self) -> LatencyVerdict:
        inp, kinds = self.inp, {c.kind for c in self.causes}
        p95, queue, gpu, load = await asyncio.gather(
            self._query(self.q.p95()),
            self._query(self.q.by_service("llm_d_queue_depth")),
            self._query(self.q.by_service("llm_d_gpu_utilization")),
            self._query(self.q.by_service("llm_d_model_load_time_seconds")),
        )
        still = []
        p95_now = p95.first()
        if p95_now is None or p95_now > inp.latency_slo_seconds:
            still.append(f"p95 above the {inp.latency_slo_seconds:g}s SLO")
        depth, before = (
            queue.by("service").get(inp.decode_deployment),
            self.findings.queue_depth.get(inp.decode_deployment),
        )
        if "queue-depth" in kinds and depth is not None and depth > inp.queue_depth_threshold:
            growing = " and growing despite scaling" if before is not None and depth > before else ""
            still.append(f"queue depth {depth:.0f} > {inp.queue_depth_threshold:g}{growing}")
        busy = gpu.by("service").get(inp.prefill_deployment)
        if "gpu-exhaustion" in kinds and busy is not None and busy >= inp.gpu_not_below_percent:
            still.append(f"GPU utilization {busy:.0f}% not below {inp.gpu_not_below_percent:g}%")
        cold = [
            c.service
            for c in self.causes
            if c.kind == "cold-start" and (load.by("service").get(c.service) or 0) > inp.cold_start_seconds
        ]
        still += [f"{s} still loading cold" for s in cold]
        return LatencyVerdict(p95_seconds=p95_now, still=still)

    # ---- rollback -----------------------------------------------------------------------------------

    async def rollback(self, verified: bool) -> None:
        """On request: the recorded replicas restored exactly (a warm-up cannot be undone)."""
        inc, req = self.incident, self.incident.rollback_requested
        if not inc.automation_allowed or req is None:
            return
        async with inc.step("Rollback") as entry:
            entry.note(req.why)
            restored = 0
            for original in recorded_replicas(inc.changes):
                done = await self.cluster.scale_deployment(
                    ScaleRequest(
                        namespace=original.namespace or "",
                        name=original.name,
                        replicas=int(original.before),
                        rollback=True,
                        action="rollback: restore replicas",
                        change_key=self._key(ROLLBACK, original.name),
                    ),
                    finding=f"rollback {req.why}",
                )
                if done is None:
                    entry.outcome = "stopped: automation may not act"
                    return
                restored += 1
            entry.note(f"{await self.models.rollback(req.why)} recorded model version(s) restored")
            entry.outcome = f"{restored} recorded replica counts restored"
        await inc.say(
            f":leftwards_arrow_with_hook: *Rollback* ({req.why}): {entry.outcome}. Humans take it from here.",
            purpose="rollback",
        )

    # ---- helpers ------------------------------------------------------------------------------------

    def _key(self, step: str, name: str) -> str:
        # incident id + step + object: a retried write recognises its own earlier attempt
        return f"{workflow.info().workflow_id}/{step}/{self.inp.serving_namespace}/{name}"

    async def _query(self, expr: str) -> InstantResult:
        return self._doubt(
            await self.prometheus.query_prometheus(
                InstantQuery(expr=expr, timeout_seconds=self.t.query_timeout_seconds)
            )
        )

    async def _range(self, query: RangeQuery) -> RangeResult:
        return self._doubt(await self.prometheus.query_prometheus_range(query))

    def _doubt(self, result: ResultT) -> ResultT:
        """Keep what an answer could not tell (no series, a warning): such a figure is no evidence of health."""
        if (why := result.could_not_tell()) is not None:
            self.findings.could_not_tell.append(why)
        return result


# One incident per cluster: the seeds' latency and capacity rules aggregate over every llm-d server.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=HighLatency,
    scope=Scope.cluster(),
    alerts={
        "LLMDHighLatency": Alert("P2", "seed 001 high-latency runbook: P2 (Medium)"),
        "LLMHighLatency": Alert("P2", "seed 001 P2 example 'Moderate latency increase (2-5s p95)'"),
        "LLMHighTokenLatency": Alert("P2", "seed 001 high-latency runbook: P2 (Medium)"),
        "LLMDGPUHighUtilization": Alert("P3", "seed 001 P3 example 'Capacity warnings'"),
        "LLMHighGPUUtilization": Alert("P3", "seed 001 P3 example 'Capacity warnings'"),
        "LLMDKVCacheOverflow": Alert("P3", "seed 001 P3 example 'Minor performance degradation'"),
    },
    drills=(
        Drill(
            "high-latency",
            "LLMDHighLatency",
            "p95 inference latency above 3 s",
            {"namespace": "production"},
            pending_seconds=300.0,
        ),  # LLMDHighLatency: for: 5m, as long as its rate(...[5m])
    ),
    kube_access=(
        "list pods",
        "list nodes",
        "list events",
        "get daemonsets.apps",
        "get deployments.apps",
        "patch deployments.apps",
    ),
)
