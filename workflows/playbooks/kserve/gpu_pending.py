"""Seed 004's "GPU Not Available" for one KServe InferenceService: find why its predictor is Pending.

Read `respond()` next to the seed: the predictor pods Pending with `nvidia.com/gpu` insufficient →
1. GPU availability (allocatable vs requested per node), 2. GPU node status, 4. pods hoarding GPUs
(GPU pods outside the serving namespaces, or not Ready), 5. node taints. 3. Scaling the GPU node
group is a human's step (it costs money and needs the cloud account): the playbook hands over with
the `eksctl scale nodegroup` command filled in (nodes today + the GPUs missing). No write.
Scope: one InferenceService (`namespace`/`inferenceservice` labels).
"""

from __future__ import annotations

import asyncio
import math

from temporalio import workflow

from workflows.incident import Alert, Drill, Incident, KServe, Playbook, PlaybookPolicy, Scope, missing_target
from workflows.playbooks.kserve.models import (
    FIRST_RESPONDER_004,
    SEED_004_CONTACTS,
    SEED_004_CONTACTS_PATCH,
    KServeIncidentInput,
    eksctl_scale,
)

with workflow.unsafe.imports_passed_through():
    from activities.kserve_models import InferenceServiceRef
    from activities.kube.gpus_models import GpuAllocationQuery


POLICY = PlaybookPolicy(
    runbook="kserve-gpu-pending",
    title="GPU not available for a KServe model",
    default_severity="P1",  # seed 004: "Severity: P1"
    escalation=SEED_004_CONTACTS,
    escalation_patch=SEED_004_CONTACTS_PATCH,
    first_responder=FIRST_RESPONDER_004,
    impact="a KServe model's predictor cannot start: no GPU for it",
)

ALERTS = ("ModelServingGPUUnavailable",)
SERVING_NAMESPACES = ("mlops-serving", "production", "llm-d-system", "kube-system")
GPUS_PER_NODE = 8  # p4de.24xlarge: seed 004's GPU node group


@workflow.defn
class KServeGpuPending:
    """Seed 004's GPU-not-available diagnosis for one InferenceService."""

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
        inc, d = self.incident, self.diagnosis
        if not self.name:
            await missing_target(inc.say, "InferenceService", steps="seed 004's GPU-not-available steps")
            return
        async with inc.step("1./2. Check GPU availability and node status") as entry:
            isvc, gpus = await asyncio.gather(
                self.kserve.describe_inference_service(InferenceServiceRef(namespace=self.namespace, name=self.name)),
                self.kserve.gpu_allocation(GpuAllocationQuery()),
            )
            pending = [p for p in isvc.pods if p.scheduling]
            entry.note(isvc.line())
            for n in gpus.nodes:
                entry.note(
                    f"{n.name}: {n.requested}/{n.allocatable} GPUs requested"
                    + ("" if n.ready == "True" else f", NotReady (Ready {n.ready}): its GPUs are not free")
                    + (", cordoned" if n.unschedulable else "")
                    + (f", taints {', '.join(n.taints)}" if n.taints else "")
                )
            entry.outcome = f"{len(pending)} predictor pod(s) Pending; {gpus.free} GPUs free on schedulable nodes"
        if not pending:
            await inc.nothing_wrong_found(f"{isvc.line()}; no predictor pod Pending; {gpus.free} GPUs free")
            return
        d.append(f"{len(pending)} predictor pod(s) Pending: {pending[0].scheduling}")
        async with inc.step("4./5. Check for GPU hoarders and node taints") as entry:
            # A pod holds GPUs only once bound to a node: a Pending one (this predictor's own) holds none.
            hoarders = [p for p in gpus.pods if p.node and (p.namespace not in SERVING_NAMESPACES or not p.ready)]
            for p in hoarders:
                line = f"{p.namespace}/{p.name} ({p.owner or 'no owner'}) holds {p.gpus} GPU(s) on {p.node}" + (
                    "" if p.ready else ", not Ready"
                )
                d.append("hoarder: " + line)
                entry.note(line)
            tainted = [n for n in gpus.nodes if n.removable_taints]
            for n in tainted:
                d.append(f"taint: {n.name} {', '.join(n.removable_taints)} (the predictor does not tolerate it)")
            for n in gpus.nodes:
                if n.ready != "True":
                    # the cluster's own taints say the node is sick: a repair, never a taint to remove
                    lifecycle = ", ".join(t for t in n.taints if t not in n.removable_taints)
                    d.append(
                        f"node: {n.name} Ready {n.ready}"
                        + (f" ({lifecycle}, set by the cluster)" if lifecycle else "")
                        + f": its {n.allocatable} GPU(s) are not free; repair the node (`kubectl describe node {n.name}`)"
                    )
            entry.outcome = f"{len(hoarders)} GPU hoarder(s), {len(tainted)} tainted GPU node(s)"
        need = sum(max(1, self._gpus_per_pod(isvc.spec)) for _ in pending)
        nodes = len(gpus.nodes) + max(1, math.ceil(max(0, need - gpus.free) / GPUS_PER_NODE))
        command = eksctl_scale(self.inp, nodes)
        d.append(f"3. scale the GPU node group (a human's step): `{command}`")
        await inc.say(
            f"*GPU not available* for {self.namespace}/{self.name} — "
            + "\n• ".join([""] + d)
            + "\nFree GPUs by "
            + ("scaling down a hoarder or removing a taint (owners' call), or by " if hoarders or tainted else "")
            + "scaling the node group.",
            purpose="diagnosis",
        )
        inc.record("action", "diagnosis handed to a human", outcome=command)
        await inc.escalate_now("GPU not available for the predictor: " + "; ".join(d))

    @staticmethod
    def _gpus_per_pod(spec: dict) -> int:
        limits = (((spec.get("predictor") or {}).get("model") or {}).get("resources") or {}).get("limits") or {}
        try:
            return int(limits.get("nvidia.com/gpu", 1))
        except (TypeError, ValueError):
            return 1


# One incident per InferenceService.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=KServeGpuPending,
    scope=Scope.inference_service(),
    alerts={
        "ModelServingGPUUnavailable": Alert(
            "P1", "seed 004 'GPU Not Available': Severity P1 (no rule in the seeds: ours)"
        ),
    },
    drills=(
        Drill(
            "kserve-gpu-pending",
            "ModelServingGPUUnavailable",
            "a KServe predictor is Pending: no GPU",
            {"namespace": "mlops-serving", "inferenceservice": "llama-3-8b"},
        ),
    ),
    kube_access=(
        "list pods",
        "list nodes",
        "list events",
        "list deployments.apps",
        "list replicasets.apps",
        "get inferenceservices.serving.kserve.io",
    ),
)
