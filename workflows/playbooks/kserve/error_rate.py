"""Seed 004's "High Error Rate (> 1%)" for one KServe InferenceService, with its canary rollback.

Read `respond()` next to the seed: 1. check the predictor's error logs (`--tail=100 | grep -i error`),
2. classify them by the seed's common errors (OOM, CUDA OOM, model loading; transient engine errors),
then the branch that fits:

- a canary revision live (created in the alert's window, or its pods are the ones failing) → seed 004
  "Rollback Procedures", after approval: `canaryTrafficPercent` to 0, then `storageUri` back to the
  rolled-out revision's; verified (canary gone, predictor Ready, no new errors);
- transient errors (and CUDA OOM) on the rolled-out predictor → 4. restart its pods
  (`kubectl rollout restart deployment/NAME-predictor`);
- model-loading or OOM errors without a canary → 5. redeploy, only after approval (delete + apply of
  the same spec);
- no errors and the InferenceService Ready → nothing wrong found, no write.

Alerts: `ModelServingHighErrorRate` (seed 004). `LLMDHighErrorRate` does not come here: seed 001's rule
aggregates every llm-d server (`sum(rate(llm_d_requests_total{status=~"5.."}))`, labels `service: llm-d`)
and names no InferenceService, so no KServe predictor is its scope (see docs/sop-coverage.md).
Scope: one InferenceService (`namespace`/`inferenceservice` labels).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

from workflows.incident import Alert, Cluster, Drill, Incident, KServe, Playbook, PlaybookPolicy, Scope, missing_target
from workflows.playbooks.kserve.models import (
    FIRST_RESPONDER_004,
    SEED_004_CONTACTS,
    SEED_004_CONTACTS_PATCH,
    CANARY,
    GATE_CANARY_ROLLBACK,
    GATE_REDEPLOY,
    RESTART,
    KServeIncidentInput,
)
from workflows.playbooks.kserve.rollback import restore_patches
from workflows.playbooks.kserve.diagnosis import SOLUTIONS, ErrorClass, classify, classify_line

with workflow.unsafe.imports_passed_through():
    from activities.kserve_models import (
        InferenceServiceDescription,
        InferenceServicePatch,
        InferenceServiceRedeploy,
        InferenceServiceRef,
        PodLogLines,
        PredictorLogQuery,
    )
    from activities.kube.deployments_models import RestartRequest


POLICY = PlaybookPolicy(
    runbook="kserve-error-rate",
    title="Model serving high error rate (KServe)",
    default_severity="P1",  # seed 004: "Severity: P1"
    escalation=SEED_004_CONTACTS,
    escalation_patch=SEED_004_CONTACTS_PATCH,
    first_responder=FIRST_RESPONDER_004,
    impact="requests to a KServe model fail (error rate above 1 %)",
    gates=(GATE_CANARY_ROLLBACK, GATE_REDEPLOY),
)

ALERTS = ("ModelServingHighErrorRate",)
_TRANSIENT = {"transient", "cuda-oom"}


@workflow.defn
class KServeHighErrorRate:
    """Seed 004's high-error-rate procedure for one InferenceService."""

    @workflow.init
    def __init__(self, inp: KServeIncidentInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.kserve = KServe(self.incident, self.t)
        self.namespace, self.name = inp.target()
        self.isvc: InferenceServiceDescription | None = None
        self.logs: list[PodLogLines] = []

    @workflow.run
    async def run(self, inp: KServeIncidentInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        inc = self.incident
        if not self.name:
            await missing_target(
                inc.say,
                "InferenceService",
                labels="`namespace`/`inferenceservice`",
                steps="seed 004's high-error-rate steps",
            )
            return
        await self.check_error_logs()
        stable, canary = self._errors(canary=False), self._errors(canary=True)
        isvc = self.isvc
        assert isvc is not None
        if not isvc.found:
            await inc.nothing_wrong_found(f"InferenceService {self.namespace}/{self.name} does not exist")
            return
        if isvc.canary is not None and (canary or self._canary_in_window()):
            await self.canary_rollback(canary)
        elif not stable and not canary and isvc.ready:
            await inc.nothing_wrong_found(
                f"{isvc.line()}; no error in the last {self.inp.log_tail_lines} log lines "
                f"of {len(self.logs)} predictor pod(s)"
            )
            return
        elif stable and set(stable) <= _TRANSIENT | {"http-5xx"}:
            await self.restart_predictor(stable)
        elif stable:
            await self.redeploy(stable)
        else:
            await inc.say(
                f":warning: {isvc.line()}, but its logs show no known error: a human takes it.", purpose="no-cause"
            )
            return
        await self.verification()
        await self.rollback()

    # ---- 1./2. Check error logs, classify them --------------------------------------------------------

    async def check_error_logs(self) -> None:
        async with self.incident.step("1. Check error logs") as entry:
            ref = InferenceServiceRef(namespace=self.namespace, name=self.name or "")
            isvc, self.logs = await asyncio.gather(
                self.kserve.describe_inference_service(ref),
                self.kserve.predictor_logs(
                    PredictorLogQuery(
                        namespace=self.namespace, name=self.name or "", tail_lines=self.inp.log_tail_lines
                    )
                ),
            )
            self.isvc = isvc
            entry.note(isvc.line())
            for log in self.logs:
                counts = classify(log.lines)
                first = next((line for line in log.lines if classify_line(line) not in (None, "http-5xx")), None)
                entry.note(
                    f"{log.pod}{' (canary)' if log.canary else ''}: "
                    + (", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or log.unavailable or "no errors")
                    + (f" — {first.strip()[:200]}" if first else "")
                )
            found = {**self._errors(canary=False), **self._errors(canary=True)}
            entry.outcome = "; ".join(SOLUTIONS[k] for k in sorted(found)) or "no errors in the predictor's logs"

    def _errors(self, *, canary: bool) -> dict[ErrorClass, int]:
        total: dict[ErrorClass, int] = {}
        for log in self.logs:
            if log.canary == canary:
                for kind, n in classify(log.lines).items():
                    total[kind] = total.get(kind, 0) + n
        return total

    def _canary_in_window(self) -> bool:
        started = self.isvc.canary_started_at if self.isvc else None
        if not started:
            return False
        at = datetime.fromisoformat(started.replace("Z", "+00:00"))
        return at >= self.inp.alert.starts_at - timedelta(minutes=self.inp.canary_window_minutes)

    # ---- the branches ----------------------------------------------------------------------------------

    async def canary_rollback(self, errors: dict[ErrorClass, int]) -> None:
        """Seed 004 "Rollback Procedures" 2.-3.: canary to 0 %, then storageUri back; after approval."""
        inc, isvc = self.incident, self.isvc
        assert isvc is not None and isvc.canary is not None
        previous = isvc.rolled_out_storage_uri
        why = (
            f"canary revision {isvc.canary.revision} ({isvc.storage_uri}) at {isvc.canary.percent}%"
            + (f", its pods log {', '.join(f'{k} x{v}' for k, v in sorted(errors.items()))}" if errors else "")
            + (f", created {isvc.canary_started_at} (in the alert's window)" if self._canary_in_window() else "")
        )
        async with inc.step("Rollback: canary") as entry:
            entry.note(why)
            if not previous:
                entry.outcome = "the rolled-out revision's storageUri is unknown: a human rolls back"
                await inc.escalate_now(f"canary rollback needed ({why}) but the previous storageUri is unknown")
                return
            question = (
                f"{why}. Roll back {self.namespace}/{self.name}: canaryTrafficPercent → 0, then storageUri "
                f"{isvc.storage_uri} → {previous}?"
            )
            if not await inc.approval(
                GATE_CANARY_ROLLBACK, question, target=self.name, destructive=True, timeout=self.t.approval_timeout
            ):
                entry.outcome = "not approved: nothing changed"
                return
            for path, value, action in (
                ("/spec/predictor/canaryTrafficPercent", 0, "canary traffic to 0"),
                ("/spec/predictor/model/storageUri", previous, "storageUri back to the previous"),
            ):
                change = await self.kserve.patch_inference_service(
                    InferenceServicePatch(
                        namespace=self.namespace,
                        name=self.name or "",
                        path=path,
                        value=value,  # type: ignore[arg-type]
                        action=f"{CANARY}: {action}",
                    ),
                    finding=why,
                )
                if change is None:
                    entry.outcome = f"stopped before '{action}': {inc.why_not_acting()}"
                    return
            entry.outcome = f"canary at 0 % and storageUri back to {previous}"

    async def restart_predictor(self, errors: dict[ErrorClass, int]) -> None:
        """Seed 004 step 4: `kubectl rollout restart deployment/NAME-predictor` for transient errors."""
        inc, isvc = self.incident, self.isvc
        assert isvc is not None
        finding = "predictor logs " + ", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) + ": transient errors"
        async with inc.step("4. Restart pods (transient error)") as entry:
            stable = [d for d in isvc.predictor_deployments if not d.endswith("-canary")]
            for name in stable:
                change = await self.cluster.restart_deployment(
                    RestartRequest(
                        namespace=self.namespace,
                        name=name,
                        restarted_at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                        restarted_by=f"{workflow.info().workflow_id}/{RESTART}",
                    ),
                    finding=finding,
                )
                if change is None:
                    entry.outcome = f"not restarted: {inc.why_not_acting()}"
                    return
            entry.outcome = f"restarted {', '.join(stable)}"

    async def redeploy(self, errors: dict[ErrorClass, int]) -> None:
        """Seed 004 step 5: model corrupted (loading errors) → delete and re-apply the InferenceService, after approval."""
        inc = self.incident
        found = ", ".join(f"{k} x{v}" for k, v in sorted(errors.items()))
        hints = "; ".join(SOLUTIONS[k] for k in sorted(errors) if k in SOLUTIONS)  # type: ignore[index]
        async with inc.step("5. Redeploy (model corrupted)") as entry:
            entry.note(f"{found}: {hints}")
            question = (
                f"The predictor of {self.namespace}/{self.name} logs {found} ({hints}). Redeploy it "
                "(kubectl delete isvc + apply of the same spec)?"
            )
            if not await inc.approval(
                GATE_REDEPLOY, question, target=self.name, destructive=True, timeout=self.t.approval_timeout
            ):
                entry.outcome = "not approved: nothing changed"
                return
            change = await self.kserve.redeploy_inference_service(
                InferenceServiceRedeploy(namespace=self.namespace, name=self.name or ""),
                finding=f"predictor logs {found}",
            )
            entry.outcome = "redeployed" if change is not None else f"not redeployed: {inc.why_not_acting()}"

    # ---- verification and rollback ------------------------------------------------------------------------

    async def verification(self) -> None:
        inc = self.incident
        if not inc.changes or not inc.automation_allowed:
            return
        async with inc.step("Verification") as entry:
            ref = InferenceServiceRef(namespace=self.namespace, name=self.name or "")

            async def look() -> tuple[InferenceServiceDescription, dict[ErrorClass, int]]:
                isvc, logs = await asyncio.gather(
                    self.kserve.describe_inference_service(ref),
                    self.kserve.predictor_logs(
                        PredictorLogQuery(
                            namespace=self.namespace, name=self.name or "", tail_lines=self.inp.log_tail_lines
                        )
                    ),
                )
                return isvc, {k: v for log in logs for k, v in classify(log.lines).items()}

            def healthy(found: tuple[InferenceServiceDescription, dict[ErrorClass, int]]) -> bool:
                isvc, errors = found
                return isvc.ready and isvc.canary is None and not errors and all(p.pod.ready for p in isvc.pods)

            isvc, errors = found = await inc.poll_until(
                look,
                healthy,
                deadline=workflow.now() + timedelta(seconds=self.t.verification_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                summary="next predictor check",
                to_deadline=False,
                shortest=None,
            )
            ok = healthy(found)
            entry.outcome = f"{'passed' if ok else 'failed'}: {isvc.line()}" + (f"; errors {errors}" if errors else "")
        if ok and not inc.rollback_requested:
            inc.resolve(f"seed 004 high error rate: {isvc.line()}; no errors in the predictor's logs")
        elif not ok and not inc.rollback_requested:
            await inc.escalate_now(f"error rate not recovered: {entry.outcome}")

    async def rollback(self) -> None:
        """On request: every recorded InferenceService patch restored, newest first (a restart cannot be undone)."""
        inc, req = self.incident, self.incident.rollback_requested
        if req is None or not inc.automation_allowed:
            return
        async with inc.step("Rollback") as entry:
            restored = await restore_patches(
                self.kserve,
                [c for c in inc.changes if c.kind == "InferenceService" and c.action.startswith(CANARY)],
                why=req.why,
                path=lambda c: "/" + c.field.replace(".", "/"),
                action="rollback: restore",
            )
            entry.outcome = f"{restored} recorded InferenceService field(s) restored"


# One incident per InferenceService: each has its own predictor, revisions and canary.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=KServeHighErrorRate,
    scope=Scope.inference_service(),
    alerts={
        "ModelServingHighErrorRate": Alert("P1", "seed 004 high error rate: P1"),
    },
    drills=(
        Drill(
            "high-error-rate",
            "ModelServingHighErrorRate",
            "model serving error rate above 1%",
            {"namespace": "mlops-serving", "inferenceservice": "mistral-7b"},
        ),
        Drill(
            "canary-rollback",
            "ModelServingHighErrorRate",
            "model serving error rate above 1% (canary)",
            {"namespace": "mlops-serving", "inferenceservice": "mistral-7b"},
        ),
    ),
    kube_access=(
        "list pods",
        "get pods/log",
        "list events",
        "list deployments.apps",
        "get inferenceservices.serving.kserve.io",
        "patch inferenceservices.serving.kserve.io",
        "create inferenceservices.serving.kserve.io",
        "delete inferenceservices.serving.kserve.io",
    ),
)
