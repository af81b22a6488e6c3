"""Seed 004's "Model Not Loading" for one KServe InferenceService: diagnose, then a human.

Read `respond()` next to the seed: 1. check the predictor pods' status (and KServe's modelStatus),
2. the storage-initializer's logs (the model download), or, when the download worked and the
kserve-container itself crash-loops, the model server's own error (vLLM's KV cache, CUDA OOM), 3. the common issues: S3 access denied (IRSA role), model not found
(storageUri), disk full (node storage). Every fix is a human's (an IAM policy, a storage location, a
node's disk), so the playbook writes nothing: it escalates with the diagnosis and the seed's next
commands (4. verify S3 access, 5. check the IRSA configuration) filled in.
Scope: one InferenceService (`namespace`/`inferenceservice` labels).
"""

from __future__ import annotations

from temporalio import workflow

from workflows.incident import Alert, Drill, Incident, KServe, Playbook, PlaybookPolicy, Scope, missing_target
from workflows.playbooks.kserve.models import (
    FIRST_RESPONDER_004,
    SEED_004_CONTACTS,
    SEED_004_CONTACTS_PATCH,
    KServeIncidentInput,
)
from workflows.playbooks.kserve.diagnosis import server_diagnosis, storage_diagnosis

with workflow.unsafe.imports_passed_through():
    from activities.kserve_models import (
        InferenceServiceDescription,
        InferenceServiceRef,
        PredictorLogQuery,
        PredictorPod,
    )


POLICY = PlaybookPolicy(
    runbook="kserve-model-not-loading",
    title="Model not loading (KServe)",
    default_severity="P1",  # seed 004: "Severity: P1"
    escalation=SEED_004_CONTACTS,
    escalation_patch=SEED_004_CONTACTS_PATCH,
    first_responder=FIRST_RESPONDER_004,
    impact="a KServe model cannot load: its InferenceService serves nothing",
)

ALERTS = ("ModelServingModelNotLoading",)


@workflow.defn
class KServeModelNotLoading:
    """Seed 004's model-not-loading diagnosis for one InferenceService."""

    @workflow.init
    def __init__(self, inp: KServeIncidentInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.kserve = KServe(self.incident, self.t)
        self.namespace, self.name = inp.target()
        self.diagnosis: list[str] = []

    @workflow.run
    async def run(self, inp: KServeIncidentInput) -> str:
        return await self.incident.run(self.respond)

    @workflow.query
    def findings(self) -> list[str]:
        return self.diagnosis

    async def respond(self) -> None:
        inc = self.incident
        if not self.name:
            await missing_target(inc.say, "InferenceService", steps="seed 004's model-not-loading steps")
            return
        ref = InferenceServiceRef(namespace=self.namespace, name=self.name)
        async with inc.step("1. Check pod status") as entry:
            isvc = await self.kserve.describe_inference_service(ref)
            entry.note(isvc.line())
            failing = [p for p in isvc.pods if p.init_state or not p.pod.ready]
            for p in isvc.pods:
                entry.note(
                    f"{p.pod}"
                    + (f"; storage-initializer {p.init_state}" if p.init_state else "")
                    + (f"; {p.scheduling}" if p.scheduling else "")
                )
            entry.outcome = f"{len(failing)} of {len(isvc.pods)} predictor pods not Ready"
        if isvc.found and isvc.ready and not failing:
            await inc.nothing_wrong_found(f"{isvc.line()}; every predictor pod Ready")
            return
        # The model downloaded but the model server itself fails: its own error, not storage's.
        server_failing = [p for p in failing if not p.init_state and p.server_state]
        if server_failing and workflow.patched("kserve-model-server-diagnosis"):
            await self.diagnose_model_server(isvc, server_failing)
            return
        async with inc.step("2. Check init container logs (model download)") as entry:
            logs = await self.kserve.predictor_logs(
                PredictorLogQuery(
                    namespace=self.namespace,
                    name=self.name,
                    container="storage-initializer",
                    tail_lines=self.inp.log_tail_lines,
                )
            )
            causes = []
            for log in logs:
                cause, advice, line = storage_diagnosis(log.lines)
                causes.append(cause)
                node = next((p.pod.node for p in isvc.pods if p.pod.name == log.pod), None)
                where = f" on node {node} (`kubectl describe node {node}`)" if cause == "disk-full" and node else ""
                text = (
                    f"{log.pod}: {cause} — {advice}{where}"
                    + (f" («{line[:240]}»)" if line else "")
                    + (f" (log unavailable: {log.unavailable})" if log.unavailable else "")
                )
                self.diagnosis.append(text)
                entry.note(text)
            known = sorted({c for c in causes if c != "unknown"})
            entry.outcome = ", ".join(known) or "no known storage error"
        pending = [p for p in isvc.pods if p.scheduling]
        if pending and not known:
            self.diagnosis.append(
                f"{len(pending)} predictor pod(s) Pending: {pending[0].scheduling} (seed 004 'GPU Not Available')"
            )
        bucket = (isvc.storage_uri or "").rsplit("/", 1)[0] + "/"
        next_steps = (
            f"4. `kubectl run --rm -it s3-test --image=amazon/aws-cli -- s3 ls {bucket}`; "
            "5. `kubectl describe sa kserve-controller-manager -n kserve`"
        )
        text = (
            f"*Model not loading* — {isvc.line()}.\n"
            + "\n".join(f"• {d}" for d in self.diagnosis)
            + f"\nstorageUri: `{isvc.storage_uri}`. The fix is a human's (IAM role, storage location or node disk); "
            f"next: {next_steps}"
        )
        await inc.say(text, purpose="diagnosis")
        inc.record("action", "diagnosis handed to a human", outcome="; ".join(self.diagnosis)[:500] or None)
        await inc.escalate_now("model not loading: " + ("; ".join(self.diagnosis) or isvc.line()))

    async def diagnose_model_server(self, isvc: InferenceServiceDescription, failing: list[PredictorPod]) -> None:
        """Seed 004 "Model Not Loading" when the pod's CrashLoopBackOff is the kserve-container's: KServe's
        modelStatus.lastFailureInfo and the container's own last words (its termination message and log)
        name the error; the seed's fix for it goes to a human (the runtime's args or the GPU)."""
        inc = self.incident
        async with inc.step("2. Check the model server's log (kserve-container)") as entry:
            failure = isvc.last_failure
            if failure is not None:
                entry.note(
                    f"modelStatus {isvc.model_state} ({isvc.transition_status}): lastFailureInfo {failure.reason}"
                    + (f", exit code {failure.exit_code}" if failure.exit_code is not None else "")
                )
            logs = await self.kserve.predictor_logs(
                PredictorLogQuery(
                    namespace=self.namespace,
                    name=self.name,
                    container="kserve-container",
                    tail_lines=self.inp.log_tail_lines,
                )
            )
            by_pod = {log.pod: log.lines for log in logs}
            causes = []
            for p in failing:
                words = [*(p.server_message or "").splitlines(), *by_pod.get(p.pod.name, [])]
                words += failure.message.splitlines() if failure else []
                cause, advice, line = server_diagnosis(words)
                causes.append(cause)
                text = f"{p.pod.name}: kserve-container {p.server_state}: {cause} — {advice}" + (
                    f" («{line[:300]}»)" if line else ""
                )
                self.diagnosis.append(text)
                entry.note(text)
            entry.outcome = ", ".join(sorted(set(causes)))
        await inc.say(
            f"*Model not loading* — {isvc.line()}.\n"
            + "\n".join(f"• {d}" for d in self.diagnosis)
            + "\nThe model downloaded; the model server itself fails to start. The fix is a human's (the serving "
            f"runtime's args or the GPU): `kubectl edit isvc {self.name} -n {self.namespace}`.",
            purpose="diagnosis",
        )
        inc.record("action", "diagnosis handed to a human", outcome="; ".join(self.diagnosis)[:500] or None)
        await inc.escalate_now("model not loading (model server): " + "; ".join(self.diagnosis))


# One incident per InferenceService.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=KServeModelNotLoading,
    scope=Scope.inference_service(),
    alerts={
        "ModelServingModelNotLoading": Alert(
            "P1", "seed 004 'Model Not Loading': Severity P1 (no rule in the seeds: ours)"
        ),
    },
    drills=(
        Drill(
            "model-not-loading",
            "ModelServingModelNotLoading",
            "a KServe model does not load",
            {"namespace": "mlops-serving", "inferenceservice": "mistral-7b-v2"},
        ),
    ),
    kube_access=(
        "list pods",
        "get pods/log",
        "list events",
        "list deployments.apps",
        "get inferenceservices.serving.kserve.io",
    ),
)
