"""Seed 004's "High Latency (P99 > 2s)" for one KServe InferenceService.

Read `respond()` next to the seed: 1. check the current latency (p99 of `inference_latency_seconds`
over the rate window, for the InferenceService's predictor), 2. check whether the replicas are
overloaded (per predictor pod: GPU utilization and request rate; the predictor's queue depth),
3. check GPU memory (vLLM's `GPU KV cache usage` in each predictor pod's log), 5. long prompts (the
same log's prompt-token throughput; seed step 5 comes before the scale-up because it only reads), then
4. scale up: `spec.predictor.minReplicas` to 3 (`kubectl patch isvc ... /spec/predictor/minReplicas`),
bounded by the free GPUs (none → a human scales the GPU node group, the `eksctl` command filled in),
recorded (before/after) and restored exactly by a rollback. Verified: p99 back under 2 s and the
predictor Ready with its replicas; otherwise escalated with the figures.

p99 under the threshold and no overloaded replica → nothing wrong found, no write. p99 high without
an overloaded replica (or `minReplicas` already 3 or more) → a human, with the figures: more replicas
would not help.

Alerts: `ModelServingHighLatency` (seed 004). Scope: one InferenceService
(`namespace`/`inferenceservice` labels).
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import ClassVar

from pydantic import ConfigDict, Field
from temporalio import workflow

from workflows.incident import (
    Alert,
    Drill,
    Incident,
    KServe,
    Playbook,
    PlaybookPolicy,
    Prometheus,
    Scope,
    missing_target,
)
from workflows.playbooks.kserve.models import (
    FIRST_RESPONDER_004,
    SEED_004_CONTACTS,
    SEED_004_CONTACTS_PATCH,
    KServeIncidentInput,
    KServeTimings,
    eksctl_scale,
)
from workflows.playbooks.kserve.rollback import restore_patches

with workflow.unsafe.imports_passed_through():
    from activities.kserve_models import (
        InferenceServiceDescription,
        InferenceServicePatch,
        InferenceServiceRef,
        PodLogLines,
        PredictorLogQuery,
    )
    from activities.kube.gpus_models import GpuAllocationQuery
    from activities.prometheus_models import InstantQuery, InstantResult


POLICY = PlaybookPolicy(
    runbook="kserve-high-latency",
    title="Model serving high latency (KServe)",
    default_severity="P1",  # seed 004: "Severity: P1"
    escalation=SEED_004_CONTACTS,
    escalation_patch=SEED_004_CONTACTS_PATCH,
    first_responder=FIRST_RESPONDER_004,
    impact="a KServe model answers slowly (p99 above 2 s)",
)

ALERTS = ("ModelServingHighLatency",)
SCALE_UP = "scale-up min replicas"
MIN_REPLICAS = "/spec/predictor/minReplicas"
_KV = re.compile(r"GPU KV cache usage: ([\d.]+)%")
_PROMPT = re.compile(r"Avg prompt throughput: ([\d.]+) tokens/s")


class KServeLatencyTimings(KServeTimings):
    """The seed's rate window and the waits on the cluster (drills shorten them: `cluster_waits`)."""

    cluster_waits: ClassVar[tuple[str, ...]] = (
        "rate_window_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
    )

    model_config = ConfigDict(extra="forbid")

    rate_window_seconds: float = Field(300, gt=0, description="the seed's rate(inference_latency_seconds_bucket[5m])")
    query_timeout_seconds: float = Field(10, gt=0, description="one PromQL query")

    def rate_window(self) -> str:
        return f"{max(2, round(self.rate_window_seconds))}s"


class KServeLatencyInput(KServeIncidentInput):
    """KServeIncidentInput plus the seed's thresholds, all defaulted."""

    p99_slo_seconds: float = Field(2.0, gt=0, description="seed 004: High Latency (P99 > 2s)")
    scale_to_min_replicas: int = Field(3, ge=1, le=100, description="seed 004 step 4: minReplicas 3")
    overloaded_percent: float = Field(
        90, gt=0, le=100, description="a replica's GPU utilization above this is overloaded"
    )
    queue_depth_threshold: float = Field(10, ge=0, description="requests waiting for the predictor")
    kv_cache_full_percent: float = Field(
        90, gt=0, le=100, description="GPU KV cache usage that counts as GPU memory full"
    )
    timings: KServeLatencyTimings = Field(default_factory=KServeLatencyTimings)


class PredictorQL:
    """Seed 004's queries, over one predictor's series (`service` is the predictor Service NAME-predictor)."""

    def __init__(self, namespace: str, name: str, window: str) -> None:
        self.sel, self.w = f'{{namespace="{namespace}", service="{name}-predictor"}}', window

    def p99(self) -> str:
        return f"histogram_quantile(0.99, sum by (le) (rate(inference_latency_seconds_bucket{self.sel}[{self.w}])))"

    def gpu_by_pod(self) -> str:
        return f"max by (pod) (llm_d_gpu_utilization{self.sel})"

    def rate_by_pod(self) -> str:
        return f"sum by (pod) (rate(llm_d_requests_total{self.sel}[{self.w}]))"

    def queue_depth(self) -> str:
        return f"max(llm_d_queue_depth{self.sel})"


@workflow.defn
class KServeHighLatency:
    """Seed 004's high-latency procedure for one InferenceService."""

    @workflow.init
    def __init__(self, inp: KServeLatencyInput) -> None:
        self.inp = inp
        self.t: KServeLatencyTimings = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.kserve = KServe(self.incident, self.t)
        self.prometheus = Prometheus(self.incident, self.t)
        self.namespace, self.name = inp.target()
        self.q = PredictorQL(self.namespace, self.name or "", self.t.rate_window())
        self.isvc: InferenceServiceDescription | None = None
        self.p99: float | None = None
        self.doubts: list[str] = []  # what Prometheus could not tell about the p99
        self.overloaded: list[str] = []
        self.figures: list[str] = []

    @workflow.run
    async def run(self, inp: KServeLatencyInput) -> str:
        return await self.incident.run(self.respond)

    @workflow.query
    def findings(self) -> list[str]:
        return self.figures

    async def respond(self) -> None:
        inc = self.incident
        if not self.name:
            await missing_target(
                inc.say,
                "InferenceService",
                labels="`namespace`/`inferenceservice`",
                steps="seed 004's high-latency steps",
            )
            return
        await self.check_latency()
        isvc = self.isvc
        assert isvc is not None
        if not isvc.found:
            await inc.nothing_wrong_found(f"InferenceService {self.namespace}/{self.name} does not exist")
            return
        await self.check_replicas()
        await self.check_logs()
        await inc.say(
            f"*High latency on {self.namespace}/{self.name}: what seed 004's checks found*\n"
            + "\n".join(f"• {line}" for line in self.figures),
            purpose="findings",
        )
        if self.p99 is None and not self.overloaded and workflow.patched("no-data-is-not-health"):
            # no p99 is no finding: neither "healthy" nor a reason to scale
            await inc.could_not_tell(
                self.doubts or [f"no p99 latency for {self.namespace}/{self.name}"], checked=isvc.line()
            )
            return
        slow = self.p99 is None or self.p99 > self.inp.p99_slo_seconds
        if not slow and not self.overloaded:
            await inc.nothing_wrong_found(
                f"p99 {self._p99_text()} (threshold {self.inp.p99_slo_seconds:g}s), "
                f"no overloaded replica; {isvc.line()}"
            )
            return
        if not await self.scale_up():
            return
        await self.verification()
        await self.rollback()

    # ---- 1. Check current latency ------------------------------------------------------------------

    async def check_latency(self) -> None:
        async with self.incident.step("1. Check current latency") as entry:
            isvc, p99 = await asyncio.gather(
                self.kserve.describe_inference_service(
                    InferenceServiceRef(namespace=self.namespace, name=self.name or "")
                ),
                self._query(self.q.p99()),
            )
            self.isvc, self.p99 = isvc, p99.first()
            self.doubts = [why for why in (p99.could_not_tell(),) if why]
            entry.note(f"promtool query instant '{self.q.p99()}' → {self._p99_text()}")
            entry.note(isvc.line())
            self.figures.append(f"p99 latency {self._p99_text()} (threshold {self.inp.p99_slo_seconds:g}s)")
            entry.outcome = self.figures[-1]

    # ---- 2. Check if replicas are overloaded ---------------------------------------------------------

    async def check_replicas(self) -> None:
        inp, isvc = self.inp, self.isvc
        assert isvc is not None
        async with self.incident.step("2. Check if replicas are overloaded") as entry:
            gpu, rate, queue = await asyncio.gather(
                self._query(self.q.gpu_by_pod()), self._query(self.q.rate_by_pod()), self._query(self.q.queue_depth())
            )
            by_rate = rate.by("pod")
            for pod, busy in sorted(gpu.by("pod").items()):
                entry.note(f"{pod}: GPU {busy:.0f}%, {by_rate.get(pod, 0):.1f} req/s")
                if busy > inp.overloaded_percent:
                    self.overloaded.append(f"{pod} GPU {busy:.0f}% > {inp.overloaded_percent:g}%")
            depth = queue.first()
            if depth is not None and depth > inp.queue_depth_threshold:
                self.overloaded.append(f"queue depth {depth:.0f} > {inp.queue_depth_threshold:g}")
            ready = sum(1 for p in isvc.pods if p.pod.ready)
            self.figures.append(
                f"{ready} Ready predictor replica(s), minReplicas {isvc.min_replicas}, maxReplicas "
                f"{isvc.max_replicas}; queue depth {'no data' if depth is None else f'{depth:.0f}'}; "
                + ("overloaded: " + ", ".join(self.overloaded) if self.overloaded else "none overloaded")
            )
            entry.outcome = self.figures[-1]

    # ---- 3. Check GPU memory; 5. long prompts ----------------------------------------------------------

    async def check_logs(self) -> None:
        async with self.incident.step("3. Check GPU memory; 5. check for long prompts") as entry:
            logs = await self.kserve.predictor_logs(
                PredictorLogQuery(namespace=self.namespace, name=self.name or "", tail_lines=self.inp.log_tail_lines)
            )
            kv, prompts = _latest(logs, _KV), _latest(logs, _PROMPT)
            for pod in sorted(set(kv) | set(prompts)):
                entry.note(
                    f"{pod}: GPU KV cache usage {_pct(kv.get(pod))}, prompt throughput "
                    f"{'no data' if pod not in prompts else f'{prompts[pod]:.0f} tokens/s'}"
                )
            full = [f"{pod} {use:.0f}%" for pod, use in sorted(kv.items()) if use > self.inp.kv_cache_full_percent]
            self.figures.append(
                "GPU memory (KV cache): "
                + (", ".join(f"{p} {_pct(v)}" for p, v in sorted(kv.items())) or "no vLLM stats in the log")
                + (f"; full on {', '.join(full)}" if full else "")
            )
            entry.outcome = self.figures[-1]

    # ---- 4. Scale up if needed -------------------------------------------------------------------------

    async def scale_up(self) -> bool:
        """`minReplicas` to 3 when replicas are overloaded and GPUs are free; True when automation acted."""
        inc, inp, isvc = self.incident, self.inp, self.isvc
        assert isvc is not None
        target, current = inp.scale_to_min_replicas, isvc.min_replicas or 1
        async with inc.step("4. Scale up if needed") as entry:
            if not self.overloaded or current >= target:
                why = (
                    "no replica is overloaded: more replicas would not lower p99"
                    if not self.overloaded
                    else f"minReplicas is already {current} (seed: 3)"
                )
                entry.outcome = f"not scaled: {why}; a human takes it"
                await self._hand_over(why)
                return False
            if isvc.max_replicas is not None and isvc.max_replicas < target:
                entry.outcome = f"not scaled: maxReplicas {isvc.max_replicas} < {target}; a human decides"
                await self._hand_over(f"maxReplicas {isvc.max_replicas} is below the seed's minReplicas {target}")
                return False
            gpus = await self.kserve.gpu_allocation(GpuAllocationQuery())
            per_pod = _gpus_per_pod(isvc.spec)
            ready = sum(1 for p in isvc.pods if p.pod.ready and not p.canary)
            need = max(0, target - max(current, ready)) * per_pod
            entry.note(
                f"{need} GPU(s) needed for {target} replicas ({per_pod} per pod); {gpus.free} free on schedulable nodes"
            )
            if need > gpus.free:
                command = eksctl_scale(inp, len(gpus.nodes) + 1)
                entry.outcome = f"not scaled: {need} GPUs needed, {gpus.free} free; a human scales the node group"
                await self._hand_over(f"{need} GPU(s) needed for {target} replicas, {gpus.free} free: `{command}`")
                return False
            finding = f"p99 {self._p99_text()} > {inp.p99_slo_seconds:g}s; overloaded: {', '.join(self.overloaded)}"
            change = await self.kserve.patch_inference_service(
                InferenceServicePatch(
                    namespace=self.namespace, name=self.name or "", path=MIN_REPLICAS, value=target, action=SCALE_UP
                ),
                finding=finding,
            )
            if change is None:
                entry.outcome = f"not scaled: {inc.why_not_acting()}"
                return False
            entry.outcome = f"minReplicas {change.before} → {change.after}" + (" (dry run)" if change.dry_run else "")
            return True

    async def _hand_over(self, why: str) -> None:
        inc = self.incident
        inc.record("action", "diagnosis handed to a human", outcome=why)
        await inc.escalate_now(f"high latency on {self.namespace}/{self.name}: {why}; " + "; ".join(self.figures))

    # ---- verification and rollback ------------------------------------------------------------------

    async def verification(self) -> None:
        inc, inp = self.incident, self.inp
        if inc.shadow or not inc.automation_allowed:
            return  # a dry run changed nothing: nothing to verify
        async with inc.step("Verification") as entry:

            async def look() -> InferenceServiceDescription:
                isvc, p99 = await asyncio.gather(
                    self.kserve.describe_inference_service(
                        InferenceServiceRef(namespace=self.namespace, name=self.name or "")
                    ),
                    self._query(self.q.p99()),
                )
                self.isvc, self.p99 = isvc, p99.first()
                return isvc

            def healthy(isvc: InferenceServiceDescription) -> bool:
                ready = sum(1 for p in isvc.pods if p.pod.ready)
                return (
                    isvc.ready
                    and ready >= inp.scale_to_min_replicas
                    and self.p99 is not None
                    and self.p99 <= inp.p99_slo_seconds
                )

            isvc = await inc.poll_until(
                look,
                healthy,
                deadline=workflow.now() + timedelta(seconds=self.t.verification_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                summary="next p99 check",
                to_deadline=False,
                shortest=None,
            )
            ok, ready = healthy(isvc), sum(1 for p in isvc.pods if p.pod.ready)
            verdict = f"p99 {self._p99_text()}, {ready} Ready replica(s); {isvc.line()}"
            entry.outcome = f"{'passed' if ok else 'failed'}: {verdict}"
        if inc.rollback_requested:
            return
        if ok:
            inc.resolve(f"seed 004 high latency: {verdict}")
        else:
            await inc.escalate_now(f"p99 not back under {inp.p99_slo_seconds:g}s after the scale-up: {verdict}")

    async def rollback(self) -> None:
        """On request: the recorded `minReplicas` restored exactly."""
        inc, req = self.incident, self.incident.rollback_requested
        if req is None or not inc.automation_allowed:
            return
        async with inc.step("Rollback") as entry:
            restored = await restore_patches(
                self.kserve,
                [
                    c
                    for c in inc.changes
                    if c.kind == "InferenceService" and c.action == SCALE_UP and c.before is not None
                ],
                why=req.why,
                path=lambda c: MIN_REPLICAS,
                action="rollback: restore minReplicas",
            )
            entry.outcome = f"{restored} recorded minReplicas restored"
        await inc.say(
            f":leftwards_arrow_with_hook: *Rollback* ({req.why}): {entry.outcome}. Humans take it from here.",
            purpose="rollback",
        )

    # ---- helpers ------------------------------------------------------------------------------------

    def _p99_text(self) -> str:
        return "no data" if self.p99 is None else f"{self.p99:.2f}s"

    async def _query(self, expr: str) -> InstantResult:
        return await self.prometheus.query_prometheus(
            InstantQuery(expr=expr, timeout_seconds=self.t.query_timeout_seconds)
        )


def _latest(logs: list[PodLogLines], pattern: re.Pattern[str]) -> dict[str, float]:
    """The last value `pattern` finds in each pod's log."""
    found: dict[str, float] = {}
    for log in logs:
        for line in log.lines:
            m = pattern.search(line)
            if m:
                found[log.pod] = float(m.group(1))
    return found


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value:.0f}%"


def _gpus_per_pod(spec: dict) -> int:
    limits = (((spec.get("predictor") or {}).get("model") or {}).get("resources") or {}).get("limits") or {}
    try:
        return int(limits.get("nvidia.com/gpu", 1))
    except (TypeError, ValueError):
        return 1


# One incident per InferenceService: each has its own predictor replicas and minReplicas.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=KServeHighLatency,
    scope=Scope.inference_service(),
    alerts={
        "ModelServingHighLatency": Alert("P1", "seed 004 high latency: P1"),
    },
    drills=(
        Drill(
            "kserve-high-latency",
            "ModelServingHighLatency",
            "model serving p99 latency above 2 s",
            {"namespace": "mlops-serving", "inferenceservice": "mistral-7b"},
            pending_seconds=300.0,
        ),  # the rule's rate(...[5m])
    ),
    kube_access=(
        "list pods",
        "get pods/log",
        "list nodes",
        "list deployments.apps",
        "get inferenceservices.serving.kserve.io",
        "patch inferenceservices.serving.kserve.io",
    ),
)
