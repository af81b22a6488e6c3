"""Seed 002 "GPU Hardware Failures", as a durable workflow: one incident per node.

Read `respond()` next to the seed's snippet:

    kubectl describe node <node-name> | grep -A 10 "nvidia.com/gpu"    -> 1. Describe the node
    kubectl exec -n production <pod-name> -- nvidia-smi               -> 2. Check GPU health
    kubectl cordon <node-name>                                        -> 3. Cordon and drain
    kubectl drain <node-name> --ignore-daemonsets --force                (after approval)

What the seed leaves to judgement is decided so: the GPU is "faulty" when nvidia-smi reports it
(double-bit ECC, retired pages pending, lost GPUs, a driver that cannot read it) or the kernel
logged a hardware XID for the node since the alert's window began (`xids.HARDWARE_XIDS`). A faulty
node is cordoned and drained only after a human approves (gate `cordon-drain`, target the node),
drained as kubectl drains (PodDisruptionBudgets respected), then handed over for repair: a reboot
or GPU replacement is a human's, never automation's. No fault found: no write.

Rollback (on request only): uncordon exactly what this incident cordoned. A failed verification does
not uncordon: that would put workloads back on the broken GPU; it escalates instead.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import Field
from temporalio import workflow

from workflows.incident import Alert, Cluster, Drill, Incident, IncidentInput, Playbook, PlaybookPolicy, Scope
from workflows.playbooks.gpu_nodes.drain import CordonAndDrain
from workflows.playbooks.gpu_nodes.visibility import probe_node
from workflows.playbooks.gpu_nodes.xids import hardware_xids
from workflows.playbooks.gpu_nodes.models import (
    GPU_NODE_ACCESS,
    GATE_CORDON_DRAIN,
    GpuTimings,
    probe_reasons,
    probe_summary,
    recorded_cordons,
)

with workflow.unsafe.imports_passed_through():
    from activities.kube.gpus_models import GpuInventoryQuery, GpuNodeInventory, NodeGpuProbe
    from activities.kube.llmdeployments_models import LLMDeploymentQuery
    from activities.kube.nodes_models import (
        NodeEvents,
        NodeEventsQuery,
        NodeHint,
        NodeQuery,
        NodeSummary,
        NodeUncordon,
    )

POLICY = PlaybookPolicy(
    runbook="gpu-hardware-failure",
    title="GPU hardware failure",
    default_severity="P1",
    escalation=None,  # the seed gives no times of its own: the severity's marks (seed 001 x seed 003)
    impact="a GPU node's hardware is failing: model pods on it crash or return errors",
    gates=(GATE_CORDON_DRAIN,),
)

# The labels an alert may name the node by, in the order Scope.node() reads them.
NODE_LABELS = ("node", "Hostname", "instance")


class GpuHardwareFailureInput(IncidentInput):
    """IncidentInput plus the seed's knobs, all defaulted. The node comes from the alert's labels
    (`node`, DCGM's `Hostname`, or `instance`) unless `node` is given."""

    node: str | None = None
    xid_lookback_minutes: float = Field(
        60, gt=0, description="hardware XIDs logged this long before the alert started count as findings"
    )
    max_temp_c: float = Field(85, gt=0, description="a GPU hotter than this is reported faulty")
    timings: GpuTimings = Field(default_factory=GpuTimings)


@workflow.defn
class GpuHardwareFailure:
    """Seed 002's response to a failing GPU on one node."""

    @workflow.init
    def __init__(self, inp: GpuHardwareFailureInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.drain = CordonAndDrain(self.incident, self.t, incident_commander=inp.incident_commander)
        labels = inp.alert.labels
        self.node = inp.node or next((labels[n] for n in NODE_LABELS if labels.get(n)), None)
        self.node_tried: list[str] = []  # what each label led to, when no node was found
        self.findings: list[str] = []  # what makes the GPU faulty (step 1's XIDs, step 2's nvidia-smi)
        self.drained = False
        self.unchecked: str | None = None  # why nvidia-smi could not be run on the node (no verdict then)

    @workflow.run
    async def run(self, inp: GpuHardwareFailureInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        """Seed 002 GPU hardware failures, top to bottom."""
        if self.inp.node is None and workflow.patched("find-node-from-exporter-labels"):
            await self.find_node()
        if self.node is None:
            await self.incident.escalate_now(
                "the alert names no node (labels node, Hostname, instance or pod): a human must find the failing GPU"
                + (f" ({'; '.join(self.node_tried)})" if self.node_tried else "")
            )
            return
        await self.describe_node()
        await self.check_gpu_health()
        if not self.findings and self.unchecked:
            # A probe that never ran proves nothing: no write, and a human is told what could not be checked.
            await self.incident.escalate_now(
                f"{self.node}: GPU health could not be checked ({self.unchecked}); no hardware XID logged"
            )
            return
        if not self.findings:
            await self.incident.nothing_wrong_found(
                f"{self.node}: nvidia-smi healthy and no hardware XID logged since "
                f"{self.inp.xid_lookback_minutes:g} min before the alert"
            )
            return
        await self.cordon_and_drain()
        verified = await self.verification()
        await self.rollback(verified)

    # ---- Which node: exporters name it in their own ways -----------------------------------------

    async def find_node(self) -> None:
        """The node the alert is about, found in the cluster from its labels (DCGM exporter in
        Kubernetes names its own pod in `Hostname`, and `instance` is that pod's IP)."""
        async with self.incident.step("Find the node") as entry:
            found = await self.cluster.find_node(NodeHint(labels=self.inp.alert.labels))
            self.node, self.node_tried = found.node, found.tried
            for line in found.tried:
                entry.note(line)
            entry.outcome = f"{found.node}, from {found.how}" if found.node else "no node found"

    # ---- 1. Describe the node: `kubectl describe node NODE | grep -A 10 nvidia.com/gpu` ----------

    async def describe_node(self) -> None:
        inc, node = self.incident, self.node
        assert node is not None
        async with inc.step("1. Describe the node") as entry:
            since = self.inp.alert.starts_at - timedelta(minutes=self.inp.xid_lookback_minutes)
            nodes, inventory, events = await asyncio.gather(
                self.cluster.list_nodes(NodeQuery()),
                self.cluster.gpu_inventory(GpuInventoryQuery()),
                self.cluster.node_events(NodeEventsQuery(node=node, since=since)),
            )
            summary = next((n for n in nodes if n.name == node), None)
            gpus = next((n for n in inventory.nodes if n.node == node), None)
            if summary is None:
                entry.outcome = f"no node named {node} in the cluster"
                await inc.say(
                    f":grey_question: No node `{node}` in the cluster: it was removed, or the alert "
                    "names it otherwise.",
                    purpose="describe-node",
                )
                return
            xids = hardware_xids(events)
            self.findings += [f"kernel logged {x}" for x in xids]
            await inc.say(self._describe(summary, gpus, events), purpose="describe-node")
            entry.note(f"conditions: {', '.join(f'{k}={v}' for k, v in summary.conditions.items()) or 'none'}")
            for e in events.events[:5]:
                entry.note(str(e))
            entry.outcome = (
                f"{node}: {gpus.allocatable if gpus else summary.gpu_allocatable}/"
                f"{gpus.capacity if gpus else summary.gpu_capacity} GPUs allocatable; "
                + (f"hardware XIDs: {', '.join(xids)}" if xids else "no hardware XID logged")
            )

    def _describe(self, node: NodeSummary, gpus: GpuNodeInventory | None, events: NodeEvents) -> str:
        conditions = ", ".join(f"{k}={v}" for k, v in node.conditions.items()) or "none reported"
        held = "".join(f"\n• `{p.namespace}/{p.name}` ({p.gpus} GPU, {p.phase})" for p in (gpus.pods if gpus else []))
        recent = "".join(f"\n• {e}" for e in events.events[:5]) or "\n• no warning events"
        capacity = (
            f"capacity {gpus.capacity}, allocatable {gpus.allocatable}, in use {gpus.in_use}"
            if gpus
            else f"capacity {node.gpu_capacity}, allocatable {node.gpu_allocatable}"
        )
        return (
            f"*`kubectl describe node {node.name}`* — nvidia.com/gpu {capacity}; "
            f"{'cordoned' if node.unschedulable else 'schedulable'}; conditions: {conditions}\n"
            f"*Pods holding its GPUs:*{held or ' none'}\n*Warning events:*{recent}"
        )

    # ---- 2. Check GPU health: nvidia-smi on the node ---------------------------------------------

    async def check_gpu_health(self) -> None:
        inc, node = self.incident, self.node
        assert node is not None
        async with inc.step("2. Check GPU health") as entry:
            probe = await self._probe("gpu-health")
            reasons = probe_reasons(probe)
            self.findings += [f"nvidia-smi: {r}" for r in reasons]
            if isinstance(probe, str) or not probe.completed:
                self.unchecked = probe_summary(probe)
            entry.note(f"nvidia-smi: {probe_summary(probe)}")
            await inc.say(
                ("*nvidia-smi* on `" + node + "`: " + (":x: " if reasons else "") + probe_summary(probe)),
                purpose="nvidia-smi",
            )
            entry.outcome = (
                ("GPU faulty: " + "; ".join(self.findings))
                if self.findings
                else f"no GPU fault on {node}: {probe_summary(probe)}"
            )

    async def _probe(self, purpose: str) -> NodeGpuProbe | str:
        assert self.node is not None
        return await probe_node(self.cluster, self.t, self.node, purpose, max_temp_c=self.inp.max_temp_c)

    # ---- 3. Cordon and drain (after approval), then hand over for repair -------------------------

    async def cordon_and_drain(self) -> None:
        inc, node = self.incident, self.node
        assert node is not None
        async with inc.step("3. Cordon and drain") as entry:
            if inc.interrupted:
                entry.outcome = inc.why_interrupted
                return
            why = "; ".join(self.findings)
            await self.drain.take_out_of_service(node, why, still_failing="has a failing GPU", entry=entry)
            self.drained = node in self.drain.cordoned
            verb = "would have cordoned and drained (shadow mode)" if inc.shadow else "cordoned and drained"
            entry.outcome = f"{verb} {node}; handed over for repair" if self.drained else f"{node} not cordoned"
            if not self.drained and not inc.interrupted:
                await inc.escalate_now(f"{node} has a failing GPU ({why}) and stays in service")

    # ---- Verification: node out of service, its workloads running elsewhere ----------------------

    async def verification(self) -> bool:
        """The node still cordoned (the drain waited for its workload pods to go) and every
        LLMDeployment Ready again on the other nodes; polled up to
        `verification_timeout_seconds`. Passing resolves the incident, the node awaiting repair."""
        inc = self.incident
        if not self.drained or inc.shadow:
            return False
        async with inc.step("Verification") as entry:
            problems = await inc.poll_until(
                self._look,
                lambda problems: not problems,
                deadline=workflow.now() + timedelta(seconds=self.t.verification_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                summary="next verification look",
            )
            entry.outcome = "passed" if not problems else "failed: " + "; ".join(problems)
            if not problems and not inc.rollback_requested:
                inc.resolve(
                    f"seed 002 GPU hardware failure: {self.node} cordoned and drained, workloads running "
                    f"elsewhere; awaiting repair approved by the incident commander "
                    f"(`kubectl uncordon {self.node}` after it)"
                )
            elif problems and not inc.interrupted:
                await inc.escalate_now(f"{self.node} cordoned and drained but: {'; '.join(problems)}")
        return not problems

    async def _look(self) -> list[str]:
        """What still keeps the fault from being contained (the drain itself waited for its pods to go)."""
        nodes, models = await asyncio.gather(
            self.cluster.list_nodes(NodeQuery()), self.cluster.list_llm_deployments(LLMDeploymentQuery())
        )
        problems = []
        if not any(n.name == self.node and n.unschedulable for n in nodes):
            problems.append(f"{self.node} is schedulable again")
        not_ready = [f"{d.namespace}/{d.name} ({d.phase})" for d in models if not d.ready]
        if not_ready:
            problems.append(f"LLMDeployments not Ready: {', '.join(not_ready)}")
        return problems

    # ---- Rollback (on request): uncordon what this incident cordoned ------------------------------

    async def rollback(self, verified: bool) -> None:
        inc, req = self.incident, self.incident.rollback_requested
        if req is None or not inc.automation_allowed:
            return
        async with inc.step("Rollback") as entry:
            entry.note(req.why)
            restored = []
            for original in recorded_cordons(inc.changes):
                done = await self.cluster.uncordon_node(
                    NodeUncordon(node=original.name, original=original.before), finding=f"rollback requested: {req.why}"
                )
                if done is None:
                    entry.outcome = "stopped: automation may not act"
                    return
                restored.append(original.name)
            entry.outcome = (
                f"uncordoned {', '.join(restored)}" if restored else "no cordon to undo"
            ) + " (evictions cannot be undone; the GPU is still faulty)"
        await inc.say(f":leftwards_arrow_with_hook: *Rollback* ({req.why}): {entry.outcome}.", purpose="rollback")


# A GPU fails on one node: one incident per node, so two failing nodes are two incidents (and the
# coordinator's cap of one cordon without approval applies across them).
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=GpuHardwareFailure,
    scope=Scope.node(),
    alerts={
        "LLMDGPUHardwareError": Alert("P1", "seed 002 GPU hardware failures; seed 004 'GPU not available': P1"),
    },
    drills=(
        Drill(
            "gpu-hardware-failure",
            "LLMDGPUHardwareError",
            "a GPU reports XID errors",
            {"namespace": "kube-system", "node": "gpu-node-2"},
        ),  # the scope: one node, as DCGM names it
    ),
    kube_access=GPU_NODE_ACCESS,
)
