"""SOP-003: GPU Not Available Response (seed 000), as a durable workflow.

Read `respond()` next to the SOP: the same steps in the same order. What the SOP leaves to
judgement is decided here so: a node whose nvidia-smi probe fails (driver, ECC, lost GPUs), or
that alone lacks GPUs after the device plugin restart, is "still failing"; a human approves
cordoning and draining it (one gate per node), and its reboot or repair "requires approval from
incident commander", so automation asks for it in the thread and never reboots anything. The
rollback uncordons exactly the nodes this incident cordoned, back to their recorded
spec.unschedulable; evictions and the plugin restart cannot be undone.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.exceptions import FailureError

from workflows.approval import gate_name
from workflows.escalation import EscalationPolicy
from workflows.incident import Incident, PlaybookPolicy
from workflows.registry import Playbook
from workflows.scope import Scope
from workflows.models import IncidentInput, SopTimings
from workflows.timeline import TimelineEntry

with workflow.unsafe.imports_passed_through():
    from activities.gpu_models import (
        DevicePluginHealth,
        DevicePluginQuery,
        GpuInventory,
        GpuInventoryQuery,
        GpuPendingPods,
        GpuPendingPodsQuery,
        GpuTestPodRequest,
        GpuTestPodResult,
        NodeGpuProbe,
        NodeGpuProbeRequest,
    )
    from activities.gpu_remediation_models import (
        DaemonSetRestart,
        DaemonSetRolloutStatus,
        DaemonSetRolloutWait,
        NodeCordon,
        NodeDrain,
        NodeDrainResult,
        NodeEvictionRound,
        NodeEvictionRoundResult,
        NodeUncordon,
        PodsGone,
        PodsGoneWait,
    )
    from activities.kube_models import LLMDeploymentQuery, LLMDeploymentSummary
    from activities.models import ClusterChange

POLICY = PlaybookPolicy(
    runbook="gpu-unavailable",
    title="GPU not available",
    default_severity="P1",
    # SOP-003: 10 min if the device plugin restart doesn't work, 15 min if driver issues are detected.
    escalation=EscalationPolicy.of(10, 15),
    impact="GPU capacity lost: model pods cannot be scheduled or run on the affected GPU nodes",
    gates=("cordon-drain",),
)

CORDONED = "node cordoned"  # GpuChecks' word for a cordoned node: not a GPU visibility problem


GATE_CORDON_DRAIN = "cordon-drain"  # the gate's kind (approvers are set per kind); its target is the node
# workflow.patched ids: gates named kind:target (incidents started before keep `cordon-drain-<node>`),
# and writes only on findings (incidents started before restart the plugin whatever step 1 found).
GATE_KINDS = "gate-kinds"
ACT_ON_FINDINGS = "act-on-findings"
# ... and the drain as rounds of evictions, each recorded as it happens (incidents started before: one activity).
DRAIN_AS_KUBECTL = "drain-evictions-as-kubectl"


def cordon_gate(node: str) -> str:
    """The approval gate for cordoning and draining one node, as a decision names it."""
    return gate_name(GATE_CORDON_DRAIN, node)


def _legacy_cordon_gate(node: str) -> str:
    """The gate's name before it had a kind and a target: what saved histories' decisions name."""
    return f"cordon-drain-{node}"


class GpuTimings(SopTimings):
    """How long SOP-003 waits, polls and allows each call; SOP values by default, shorter for drills."""

    # Probe and test pod timeouts stay: they bound one pod (and its activeDeadlineSeconds), not a wait.
    cluster_waits = ("plugin_rollout_timeout_seconds", "rollout_poll_seconds", "pod_poll_seconds",
                     "visibility_timeout_seconds", "verification_timeout_seconds", "verification_poll_seconds",
                     "drain_timeout_seconds", "eviction_retry_seconds")

    model_config = ConfigDict(extra="forbid")

    plugin_rollout_timeout_seconds: float = Field(180, gt=0, description="kubectl rollout status --timeout=180s")
    rollout_poll_seconds: float = Field(5, gt=0)
    probe_timeout_seconds: float = Field(120, gt=0, description="one nvidia-smi probe pod, start to finish")
    test_pod_timeout_seconds: float = Field(120, gt=0, description="the gpu-test pod, start to finish")
    pod_poll_seconds: float = Field(2, gt=0, description="how often probe and test pods are looked at")
    visibility_timeout_seconds: float = Field(
        120, gt=0, description="step 4: how long the GPUs get to come back after the plugin restart")
    verification_timeout_seconds: float = Field(
        300, gt=0, description="bounded wait for a verified recovery after cordoning and draining")
    verification_poll_seconds: float = Field(15, gt=0)
    drain_timeout_seconds: float = Field(300, gt=0, description="kubectl drain --timeout")
    eviction_retry_seconds: float = Field(
        5, gt=0, description="kubectl drain: wait before retrying evictions a PodDisruptionBudget refused")


class GpuUnavailableInput(IncidentInput):
    """IncidentInput plus SOP-003's knobs, all defaulted: a plain IncidentInput starts it too."""

    gpu_node_selector: str | None = Field(
        None, description="label selector of the GPU nodes; None: the worker's (nvidia.com/gpu.present=true)")
    device_plugin: DevicePluginQuery = Field(default_factory=DevicePluginQuery)
    test_gpus: int = Field(1, ge=1, description="kubectl run gpu-test --limits='nvidia.com/gpu=1'")
    max_temp_c: float = Field(85, gt=0, description="a GPU hotter than this is reported faulty")
    timings: GpuTimings = Field(default_factory=GpuTimings)


class Visibility(BaseModel):
    """One look at GPU visibility: what is wrong per GPU node, and cluster-wide."""

    node_problems: dict[str, list[str]] = Field(description="GPU node -> what is wrong with it (empty: fine)")
    cluster_problems: list[str] = Field(
        default_factory=list, description="plugin missing, GPU test, pods waiting for GPUs, models not Ready")
    models_checked: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.node_problems) and not self.failing_nodes and not self.cluster_problems

    @property
    def failing_nodes(self) -> list[str]:
        return [n for n, problems in self.node_problems.items() if problems]

    def __str__(self) -> str:
        if not self.node_problems:
            return "no schedulable GPU node found"
        if self.ok:
            return (f"GPU capacity on all {len(self.node_problems)} GPU nodes, device plugin pods running, "
                    "GPU test pod passed, no pod waiting for GPUs"
                    + (", every LLMDeployment Ready" if self.models_checked else ""))
        parts = [f"{n}: {'; '.join(p)}" for n, p in self.node_problems.items() if p]
        return " | ".join(parts + self.cluster_problems)


@workflow.defn
class GpuUnavailable:
    """SOP-003 for GPU nodes that stop advertising or serving their GPUs."""

    @workflow.init
    def __init__(self, inp: GpuUnavailableInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.gpu_nodes: list[str] = []
        self.driver_faults: dict[str, list[str]] = {}  # node -> nvidia-smi's reasons (step 2)
        self.condemned: dict[str, list[str]] = {}  # node -> reasons it still fails after the restart
        self.cordoned: list[str] = []  # nodes this incident cordoned (taken out of service)
        self.visibility: Visibility | None = None  # the last look: the diagnosis when it fails
        self.inventory: GpuInventory | None = None  # step 1's findings: what justifies (or rules out) a write
        self.plugin: DevicePluginHealth | None = None
        self.pending: GpuPendingPods | None = None
        self.plugin_restarted = False
        self._tests = 0  # numbers GPU test pods, so each look runs its own (a retry adopts its own)

    @workflow.run
    async def run(self, inp: GpuUnavailableInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        """SOP-003, top to bottom."""
        await self.verify_problem_scope()
        await self.check_driver_status()
        if await self.nothing_wrong():
            return  # no write; the incident waits for the alert to resolve or a human
        await self.restart_device_plugin()
        failing = await self.verify_gpu_visibility()
        await self.cordon_and_drain(failing)
        verified = await self.verification()
        await self.rollback(verified)

    # ---- 1. Verify problem scope (0-3 minutes) ---------------------------------------------------

    async def verify_problem_scope(self) -> None:
        inc = self.incident
        async with inc.step("1. Verify problem scope") as entry:
            inventory, plugin, pending = await asyncio.gather(self._inventory(), self._plugin(), self._pending())
            self.inventory, self.plugin, self.pending = inventory, plugin, pending
            self.gpu_nodes = [n.node for n in inventory.nodes]
            nodes = "\n".join(f"• `{n.node}` nvidia.com/gpu capacity {n.capacity}, allocatable {n.allocatable}, "
                              f"in use {n.in_use}" + (f" — {'; '.join(n.problems)}" if n.problems else "")
                              for n in inventory.nodes) or "• no GPU node matches the selector"
            pods = "\n".join(f"• `{p.name}` on {p.node}: {p.reason or p.phase}, {p.restarts} restarts"
                             for p in plugin.pods) or "• none"
            waiting = "".join(f"\n• `{p.namespace}/{p.name}` ({p.gpus} GPU): {p.message}" for p in pending.pods[:10])
            await inc.say(
                f"*GPU capacity* (`kubectl get nodes -o custom-columns=NAME:.metadata.name,GPU:.status.capacity`):\n"
                f"{nodes}\n*Device plugin* `{plugin.namespace}/{plugin.daemonset}`: desired {plugin.desired}, "
                f"ready {plugin.ready}, updated {plugin.updated}\n{pods}\n"
                f"*Pods waiting for GPUs:* {len(pending.pods)}{waiting}",
                purpose="scope",
            )
            for n in inventory.nodes:
                entry.note(f"{n.node}: capacity {n.capacity}, allocatable {n.allocatable}"
                           + (f" ({'; '.join(n.problems)})" if n.problems else ""))
            entry.note("device plugin: " + ("; ".join(plugin.problems) or "healthy"))
            entry.outcome = (f"{inventory.total_allocatable}/{inventory.total_capacity} GPUs allocatable on "
                             f"{len(inventory.nodes)} GPU nodes; {len(inventory.nodes_with_problems)} nodes with "
                             f"problems; device plugin {'healthy' if plugin.healthy else 'unhealthy'}; "
                             f"{len(pending.pods)} pods waiting for GPUs")

    # ---- 2. Check driver status (3-6 minutes) ----------------------------------------------------

    async def check_driver_status(self) -> None:
        inc = self.incident
        async with inc.step("2. Check driver status") as entry:
            probes = await asyncio.gather(*(self._probe(n, "driver-check") for n in self.gpu_nodes))
            lines = []
            for node, probe in zip(self.gpu_nodes, probes):
                reasons = _probe_reasons(probe)
                if reasons:
                    self.driver_faults[node] = reasons
                entry.note(f"{node}: {_probe_summary(probe)}")
                lines.append(f"• `{node}`: {':x: ' if reasons else ''}{_probe_summary(probe)}")
            await inc.say("*Driver check* (`nvidia-smi` on each GPU node):\n" + ("\n".join(lines) or "• no GPU node"),
                          purpose="driver-check")
            entry.outcome = (f"nvidia-smi fails on {', '.join(self.driver_faults)}" if self.driver_faults
                             else f"nvidia-smi healthy on all {len(self.gpu_nodes)} GPU nodes")

    def _gpus_missing(self) -> list[str]:
        """Step 1's lost GPUs per node (a cordon is someone's decision, not a lost GPU)."""
        nodes = self.inventory.nodes if self.inventory else []
        return [f"{n.node}: {'; '.join(p for p in n.problems if p != CORDONED)}" for n in nodes
                if any(p != CORDONED for p in n.problems)]

    def _plugin_finding(self) -> str | None:
        """Why restarting the device plugin could help: its pods unhealthy or GPUs missing (None: neither)."""
        found = []
        if self.plugin is not None and not self.plugin.healthy:
            found.append(f"device plugin {self.plugin.namespace}/{self.plugin.daemonset}: {'; '.join(self.plugin.problems)}")
        if self.inventory is not None and self._gpus_missing():
            found.append(f"{self._gpu_count()}; {'; '.join(self._gpus_missing())}")
        return "; ".join(found) or None

    def _gpu_count(self) -> str:
        """`12/24 GPUs allocatable`: of the GPUs the nodes have (GPU feature discovery's count, else capacity)."""
        nodes = self.inventory.nodes if self.inventory else []
        have = sum(max(n.capacity, n.expected_gpus or 0) for n in nodes)
        return f"{sum(n.allocatable for n in nodes)}/{have} GPUs allocatable"

    async def nothing_wrong(self) -> bool:
        """Every GPU node advertising all its GPUs, the device plugin healthy and nvidia-smi clean: no lost
        GPU to act on, so no write (pods waiting for GPUs then means the GPUs are in use, not lost)."""
        if self._plugin_finding() or self.driver_faults or not workflow.patched(ACT_ON_FINDINGS):
            return False
        waiting = len(self.pending.pods) if self.pending else 0
        await self.incident.nothing_wrong_found(
            f"{self._gpu_count()} on {len(self.gpu_nodes)} GPU nodes; device plugin pods healthy; "
            "nvidia-smi clean on every GPU node"
            + (f"; {waiting} pods waiting for GPUs (all GPUs in use: capacity, not lost GPUs)" if waiting else "")
        )
        return True

    # ---- 3. Restart device plugin (6-8 minutes) --------------------------------------------------

    async def restart_device_plugin(self) -> None:
        inc, ds = self.incident, self.inp.device_plugin
        async with inc.step("3. Restart device plugin") as entry:
            if self._interrupted():
                entry.outcome = self._why_interrupted()
                return
            finding = self._plugin_finding()
            if finding is None and workflow.patched(ACT_ON_FINDINGS):
                # nvidia-smi fails on a node that still advertises its GPUs: a driver or GPU fault a
                # plugin restart cannot fix; step 4 re-probes it and may take it out of service.
                entry.outcome = "not needed: device plugin healthy and every GPU advertised"
                return
            change: ClusterChange | None = await inc.act(
                "restart_daemonset",
                DaemonSetRestart(namespace=ds.namespace, name=ds.daemonset,
                                 restarted_at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 restarted_by=f"{workflow.info().workflow_id}/restart-device-plugin"),
                summary=f"kubectl rollout restart ds {ds.daemonset} -n {ds.namespace}",
                timeout=self._kube_timeout, result_type=ClusterChange, finding=finding,
            )
            if change is None:
                entry.outcome = "skipped: automation may not act"
                return
            self.plugin_restarted = True
            wait = DaemonSetRolloutWait(namespace=ds.namespace, name=ds.daemonset,
                                        timeout_seconds=self.t.plugin_rollout_timeout_seconds,
                                        poll_seconds=self.t.rollout_poll_seconds)
            status: DaemonSetRolloutStatus = await inc.check(
                "wait_for_daemonset_rollout", wait,
                summary=f"kubectl rollout status ds {ds.daemonset} -n {ds.namespace} "
                        f"--timeout={wait.timeout_seconds:g}s",
                timeout=timedelta(seconds=wait.timeout_seconds) + self._kube_timeout,
                heartbeat_timeout=self._kube_timeout, result_type=DaemonSetRolloutStatus,
            )
            entry.note(f"rollout: {status.message} after {status.waited_seconds:g}s")
            await inc.say(f":arrows_counterclockwise: Device plugin restarted; rollout: {status.message}",
                          purpose="plugin-restart")
            entry.outcome = f"restarted; {status.message}"

    # ---- 4. Verify GPU visibility (8-10 minutes) -------------------------------------------------

    async def verify_gpu_visibility(self) -> list[str]:
        """Capacity back and a GPU test pod passing; returns the nodes still failing."""
        inc = self.incident
        async with inc.step("4. Verify GPU visibility") as entry:
            await self._reprobe_driver_faults(entry)
            deadline = workflow.now() + timedelta(seconds=self.t.visibility_timeout_seconds)
            while True:
                self.visibility = v = await self._look()
                # Nothing more will come back by itself once only condemned nodes fail.
                settled = set(v.failing_nodes) <= set(self.condemned) and not v.cluster_problems
                if v.ok or settled or self._interrupted() or workflow.now() >= deadline:
                    break
                await self._pause(min(timedelta(seconds=self.t.verification_poll_seconds), deadline - workflow.now()))
            failing = self._nodes_to_take_out(v)
            entry.outcome = f"{'GPUs visible' if v.ok else 'still failing'}: {v}"
            await inc.say((":white_check_mark: " if v.ok else ":x: ") + f"*GPU visibility after the restart:* {v}",
                          purpose="visibility")
        return failing

    async def _reprobe_driver_faults(self, entry: TimelineEntry) -> None:
        """nvidia-smi again on the nodes that failed it: the restart fixes plugins, not drivers or GPUs."""
        nodes = list(self.driver_faults)
        probes = await asyncio.gather(*(self._probe(n, "after-restart") for n in nodes))
        for node, probe in zip(nodes, probes):
            reasons = _probe_reasons(probe)
            if reasons:
                self.condemned[node] = reasons
            entry.note(f"{node} after the restart: {'; '.join(reasons) or 'nvidia-smi healthy now'}")

    def _nodes_to_take_out(self, v: Visibility) -> list[str]:
        """Nodes nvidia-smi condemns, and nodes failing alone; when every node lacks GPUs it is the
        plugin or the cluster, not the nodes, and draining them all would only make it worse."""
        some_fine = any(not problems for problems in v.node_problems.values())
        return [n for n in v.failing_nodes if n in self.condemned or some_fine]

    # ---- Node still failing: cordon and drain (SOP rollback: reboot needs the IC) ---------------

    async def cordon_and_drain(self, failing: list[str]) -> None:
        inc = self.incident
        if not failing:
            return  # GPUs back, or lost on every node: not a node to take out (verification says which)
        async with inc.step("Node still failing: cordon and drain") as entry:
            diagnosis = "; ".join(f"{n}: {self._diagnosis(n)}" for n in failing)
            await inc.escalate_now(f"{self._after_restart} {', '.join(failing)} ({diagnosis})")
            for node in failing:
                if self._interrupted():
                    entry.note(f"{node}: {self._why_interrupted()}")
                    break
                await self._take_out_of_service(node, entry)
            entry.outcome = (f"cordoned and drained: {', '.join(self.cordoned)}" if self.cordoned
                             else "no node cordoned")

    async def _take_out_of_service(self, node: str, entry: TimelineEntry) -> None:
        inc, why = self.incident, self._diagnosis(node)
        question = (f"{node} {self._still_failing} ({why}). Cordon it and drain its "
                    f"workloads to the other GPU nodes (`kubectl cordon {node}` + `kubectl drain {node} "
                    "--ignore-daemonsets --delete-emptydir-data`)?")
        if workflow.patched(GATE_KINDS):
            approved = await inc.approval(GATE_CORDON_DRAIN, question, target=node, destructive=True,
                                          timeout=self._approval_timeout)
        else:
            approved = await inc.approval(_legacy_cordon_gate(node), question, destructive=True,
                                          timeout=self._approval_timeout)
        if not approved:
            entry.note(f"{node}: not cordoned (not approved)")
            await self._ask_for_human_repair(node, why, cordoned=False)
            return
        cordon: ClusterChange | None = await inc.act(
            "cordon_node", NodeCordon(node=node, change_key=f"{workflow.info().workflow_id}/cordon/{node}",
                                      reason=why[:200]),
            summary=f"kubectl cordon {node}", timeout=self._kube_timeout, result_type=ClusterChange,
            finding=f"{node} {self._still_failing}: {why}",
        )
        if cordon is None:
            entry.note(f"{node}: {self._why_interrupted()}")
            return
        if cordon.before != cordon.after:
            self.cordoned.append(node)
        if workflow.patched(DRAIN_AS_KUBECTL):
            if not await self._drain(node, entry, finding=f"{node} cordoned, still failing: {why}"):
                return  # handed over: the thread names the pods left and the budgets
        else:
            drained: NodeDrainResult | None = await inc.act(
                "drain_node", NodeDrain(node=node, timeout_seconds=self.t.drain_timeout_seconds,
                                        poll_seconds=self.t.pod_poll_seconds),
                summary=f"kubectl drain {node} --ignore-daemonsets --delete-emptydir-data",
                timeout=timedelta(seconds=self.t.drain_timeout_seconds) + self._kube_timeout,
                heartbeat_timeout=self._kube_timeout, result_type=NodeDrainResult,
                finding=f"{node} cordoned, still failing: {why}",
            )
            if drained is not None:
                entry.note(f"{node}: cordoned; {len(drained.evicted)} pods evicted"
                           + (f"; left: {', '.join(drained.left)}" if drained.left else ""))
        await self._ask_for_human_repair(node, why, cordoned=True)

    async def _drain(self, node: str, entry: TimelineEntry, *, finding: str) -> bool:
        """`kubectl drain` as kubectl does it: rounds of evictions, each recorded as it happens; one a
        PodDisruptionBudget refuses is retried every 5 s until the drain timeout while the others go.
        A budget that holds for minutes (a replacement loading its model) gets this bounded wait, not
        an activity retry policy sized for glitches. Still blocked at the timeout: hand over to a human,
        naming the pods left and the budgets. False when handed over or automation stopped."""
        inc, t = self.incident, self.t
        deadline = workflow.now() + timedelta(seconds=t.drain_timeout_seconds)
        evicted: list = []
        told_blocked = False
        while True:
            step: NodeEvictionRoundResult | None = await inc.act(
                "evict_node_pods", NodeEvictionRound(node=node),
                summary=f"kubectl drain {node} --ignore-daemonsets --delete-emptydir-data: evict",
                timeout=self._kube_timeout, result_type=NodeEvictionRoundResult, finding=finding,
            )
            if step is None:
                entry.note(f"{node}: drain stopped: {self._why_interrupted()}")
                return False
            evicted += step.evicted_pods
            dry_run = any(c.dry_run for c in step.evicted)
            if not step.blocked or dry_run or self._interrupted() or workflow.now() >= deadline:
                break
            if not told_blocked:
                told_blocked = True
                entry.note(f"{node}: evictions refused by a PodDisruptionBudget, retried every "
                           f"{t.eviction_retry_seconds:g}s for up to {t.drain_timeout_seconds:g}s: "
                           + "; ".join(str(b) for b in step.blocked))
            try:
                await workflow.wait_condition(
                    self._interrupted,
                    timeout=min(timedelta(seconds=t.eviction_retry_seconds), deadline - workflow.now()),
                    timeout_summary="retry evictions a PodDisruptionBudget refused")
            except asyncio.TimeoutError:
                pass
        if step.blocked and not self._interrupted():
            await self._hand_over_blocked_drain(node, step, entry)
            return False
        gone: PodsGone = await inc.check(
            "wait_for_pods_gone", PodsGoneWait(node=node, pods=evicted, poll_seconds=t.pod_poll_seconds,
                                               timeout_seconds=max(1.0, (deadline - workflow.now()).total_seconds())),
            summary=f"kubectl drain {node}: wait for the evicted pods to be deleted",
            timeout=timedelta(seconds=t.drain_timeout_seconds) + self._kube_timeout,
            heartbeat_timeout=self._kube_timeout, result_type=PodsGone,
        )
        left = step.left + gone.left
        entry.note(f"{node}: cordoned; {len(evicted)} pods evicted" + (f"; left: {', '.join(left)}" if left else ""))
        return True

    async def _hand_over_blocked_drain(self, node: str, step: NodeEvictionRoundResult, entry: TimelineEntry) -> None:
        """The drain timed out on PodDisruptionBudgets: a human decides (wait longer, scale up, relax the
        budget, or delete the pod and accept the disruption). Automation stops acting on this incident."""
        inc = self.incident
        pods = ", ".join(f"{b.namespace}/{b.name}" for b in step.blocked)
        budgets = ", ".join(sorted({x for b in step.blocked for x in b.budgets})) or "a PodDisruptionBudget"
        reason = (f"drain of {node} timed out after {self.t.drain_timeout_seconds:g}s: pods left {pods}, "
                  f"their eviction refused by {budgets}")
        entry.note(reason + " — " + "; ".join(str(b) for b in step.blocked))
        await inc.say(
            f":handshake: *Handed over — drain of {node} blocked.* Pods left: {pods}. Blocking budgets: {budgets}.\n"
            + "\n".join(f"• {b}" for b in step.blocked)
            + f"\n{node} stays cordoned. A human decides: wait for the budget (`kubectl get pdb -A`), scale the "
              "workload up, relax the budget, or delete the pod and accept the disruption. Automation will not "
              "change anything in this incident from now on.",
            purpose=f"drain-blocked-{node}")
        await inc.escalate_now(reason)
        inc.state.handed_over_to = "on-call (drain blocked by PodDisruptionBudget)"
        inc.set_status("handed-over")

    async def _ask_for_human_repair(self, node: str, why: str, *, cordoned: bool) -> None:
        """The SOP's reboot "requires approval from incident commander": a human step, asked for here."""
        state = "cordoned and drained" if cordoned else "still in service (cordon not approved)"
        await self.incident.say(
            f":wrench: *Human only — {node}* ({state}): {why}.\n"
            f"A node reboot or GPU replacement requires approval from the incident commander "
            f"(@{self.inp.incident_commander}); automation never reboots nodes. "
            + (f"Once repaired and nvidia-smi is clean: `kubectl uncordon {node}`." if cordoned else ""),
            purpose=f"human-repair-{node}",
        )

    # ---- Verification -------------------------------------------------------------------------

    async def verification(self) -> bool:
        """The SOP's checks (capacity on every GPU node, plugin pods running) and the models it is all
        for: every LLMDeployment Ready. Polled while recovery can still come (GPUs back, or the failing
        nodes drained); otherwise one look, for the diagnosis."""
        inc, poll = self.incident, timedelta(seconds=self.t.verification_poll_seconds)
        async with inc.step("Verification") as entry:
            if self._interrupted():
                entry.outcome = self._why_interrupted()
                return False
            if self.cordoned:
                await self._pause(poll)  # the drained pods' controllers recreate them on the other nodes
            if self.cordoned or (self.visibility is not None and self.visibility.ok):
                self.visibility = await self._wait_for_recovery(self.t.verification_timeout_seconds)
            else:
                self.visibility = await self._look(models=True)
            v = self.visibility
            entry.outcome = f"{'passed' if v.ok else 'failed'}: {v}"
            if v.ok and not self.incident.rollback_requested:
                out = (f"; {', '.join(self.cordoned)} cordoned and drained, awaiting repair approved by the "
                       "incident commander (uncordon by hand after it)") if self.cordoned else ""
                inc.resolve(f"SOP-003 verification: {v}{out}")
        return v.ok

    async def _wait_for_recovery(self, seconds: float) -> Visibility:
        deadline = workflow.now() + timedelta(seconds=seconds)
        while True:
            v = await self._look(models=True)
            if v.ok or self._interrupted() or workflow.now() >= deadline:
                return v
            await self._pause(min(timedelta(seconds=self.t.verification_poll_seconds), deadline - workflow.now()))

    async def _look(self, *, models: bool = False) -> Visibility:
        """`kubectl get nodes` GPU capacity, the plugin's pods, pods waiting for GPUs, the GPU test pod
        and (`models`) every LLMDeployment Ready; nodes this incident cordoned are out of service."""
        inventory, plugin, pending, llmds = await asyncio.gather(
            self._inventory(), self._plugin(), self._pending(), self._llm_deployments() if models else _nothing())
        nodes = [n for n in inventory.nodes if n.node not in self.cordoned]
        problems = {n.node: [p for p in n.problems if p != CORDONED] for n in nodes}
        for pod in plugin.pods:
            if not pod.ready and pod.node in problems:
                problems[pod.node].append(f"device plugin pod {pod.name} {pod.reason or pod.phase}")
        for node, reasons in self.condemned.items():
            if node in problems:
                problems[node] += reasons
        cluster: list[str] = []
        if not plugin.found:
            cluster += plugin.problems
        if pending.pods:
            cluster.append(f"{len(pending.pods)} pods waiting for nvidia.com/gpu: "
                           + ", ".join(f"{p.namespace}/{p.name}" for p in pending.pods[:5]))
        not_ready = [f"{d.namespace}/{d.name} ({d.phase})" for d in llmds if not d.ready]
        if not_ready:
            cluster.append(f"LLMDeployments not Ready: {', '.join(not_ready)}")
        free = max((n.allocatable - n.in_use for n in nodes if not n.unschedulable), default=0)
        if free >= self.inp.test_gpus:  # else the test pod could only wait out its timeout
            test = await self._gpu_test()
            if test:
                cluster.append(test)
        else:
            cluster.append(f"GPU test pod not run: no schedulable GPU node has {self.inp.test_gpus} free GPUs")
        return Visibility(node_problems=problems, cluster_problems=cluster, models_checked=models)

    async def _gpu_test(self) -> str | None:
        """`kubectl run gpu-test --limits='nvidia.com/gpu=N' -- nvidia-smi`: None when it passed."""
        self._tests += 1
        req = GpuTestPodRequest(incident_id=workflow.info().workflow_id, purpose=f"verify-{self._tests}",
                                gpus=self.inp.test_gpus, timeout_seconds=self.t.test_pod_timeout_seconds,
                                poll_seconds=self.t.pod_poll_seconds)
        try:
            result: GpuTestPodResult = await self.incident.check(
                "gpu_test_pod", req, summary=f"kubectl run gpu-test --limits='nvidia.com/gpu={req.gpus}' -- nvidia-smi",
                timeout=timedelta(seconds=req.timeout_seconds) + self._kube_timeout,
                heartbeat_timeout=self._kube_timeout, result_type=GpuTestPodResult,
            )
        except FailureError as err:
            return f"GPU test pod could not run: {err}"
        if result.succeeded and (result.report is None or result.report.healthy):
            return None
        if not result.scheduled:
            return f"GPU test pod not scheduled: {result.scheduling_message or result.problem or result.phase}"
        reasons = result.report.reasons if result.report else [result.problem or result.phase]
        return f"GPU test pod on {result.node} failed: {'; '.join(reasons)}"

    # ---- Rollback -------------------------------------------------------------------------------

    async def rollback(self, verified: bool) -> None:
        """On request, or when verification failed: uncordon exactly the nodes this incident cordoned."""
        inc = self.incident
        if not inc.automation_allowed or (verified and not self.incident.rollback_requested):
            return
        req = self.incident.rollback_requested
        if not req and not _cordons(inc.changes):  # nothing of ours to undo: humans take it from here
            await inc.escalate_now(f"SOP-003 did not restore GPU availability: {self.visibility}")
            return
        why = (f"requested by {req.by}" + (f": {req.reason}" if req.reason else "")) if req else "verification failed"
        async with inc.step("Rollback") as entry:
            entry.note(why)
            restored = []
            for original in _cordons(inc.changes):
                try:
                    done = await inc.act(
                        "uncordon_node", NodeUncordon(node=original.name, original=original.before),
                        summary=f"kubectl uncordon {original.name}", timeout=self._kube_timeout,
                        result_type=ClusterChange,
                        finding=f"rollback {why}" + (f" ({self.visibility})" if self.visibility and not req else ""),
                    )
                except FailureError as err:
                    entry.note(f"{original.name} not uncordoned: {err}")
                    continue
                if done is None:
                    entry.outcome = "stopped: automation may not act"
                    return
                restored.append(original.name)
            self.cordoned = [n for n in self.cordoned if n not in restored]
            entry.outcome = (f"uncordoned {', '.join(restored)}" if restored else "no cordon to undo") + \
                " (evictions and the plugin restart cannot be undone)"
        await inc.say(f":leftwards_arrow_with_hook: *Rollback* ({why}): {entry.outcome}. GPU availability is not "
                      "restored: humans take it from here.", purpose="rollback")
        if not req:
            await inc.escalate_now(f"SOP-003 did not restore GPU availability ({self.visibility}); {entry.outcome}")

    # ---- helpers --------------------------------------------------------------------------------

    @property
    def _kube_timeout(self) -> timedelta:
        return timedelta(seconds=self.t.kube_call_timeout_seconds)

    @property
    def _approval_timeout(self) -> timedelta | None:
        minutes = self.t.approval_timeout_minutes
        return timedelta(minutes=minutes) if minutes else None

    @property
    def _after_restart(self) -> str:
        return "device plugin restart did not restore" if self.plugin_restarted else "nvidia-smi still fails on"

    @property
    def _still_failing(self) -> str:
        return "still fails after the device plugin restart" if self.plugin_restarted else "still fails nvidia-smi"

    def _interrupted(self) -> bool:
        return self.incident.rollback_requested is not None or not self.incident.automation_allowed

    def _why_interrupted(self) -> str:
        return "skipped: rollback requested" if self.incident.rollback_requested else "skipped: automation stopped"

    async def _pause(self, duration: timedelta) -> None:
        """A durable wait that a rollback request or a hand-over cuts short."""
        try:
            await workflow.wait_condition(self._interrupted, timeout=max(duration, timedelta(seconds=1)),
                                          timeout_summary="next GPU visibility check")
        except asyncio.TimeoutError:
            pass

    def _diagnosis(self, node: str) -> str:
        reasons = self.condemned.get(node) or (self.visibility.node_problems.get(node) if self.visibility else None)
        return "; ".join(reasons or ["no GPUs advertised"])

    async def _probe(self, node: str, purpose: str) -> NodeGpuProbe | str:
        """nvidia-smi on `node`; a probe that cannot run is reported, not fatal (it condemns nothing)."""
        req = NodeGpuProbeRequest(incident_id=workflow.info().workflow_id, node=node, purpose=purpose,
                                  timeout_seconds=self.t.probe_timeout_seconds, poll_seconds=self.t.pod_poll_seconds,
                                  max_temp_c=self.inp.max_temp_c)
        try:
            return await self.incident.check(
                "probe_node_gpus", req, summary=f"kubectl debug node/{node} -- chroot /host nvidia-smi",
                timeout=timedelta(seconds=req.timeout_seconds) + self._kube_timeout,
                heartbeat_timeout=self._kube_timeout, result_type=NodeGpuProbe,
            )
        except FailureError as err:
            return f"probe could not run: {err}"

    async def _inventory(self) -> GpuInventory:
        return await self.incident.check(
            "gpu_inventory", GpuInventoryQuery(node_selector=self.inp.gpu_node_selector),
            summary="kubectl get nodes -o custom-columns=NAME:.metadata.name,GPU:.status.capacity.nvidia\\.com/gpu",
            timeout=self._kube_timeout, result_type=GpuInventory,
        )

    async def _plugin(self) -> DevicePluginHealth:
        ds = self.inp.device_plugin
        return await self.incident.check(
            "device_plugin_health", ds,
            summary=f"kubectl get ds,pods -n {ds.namespace} ({ds.daemonset}, -l {ds.pod_selector})",
            timeout=self._kube_timeout, result_type=DevicePluginHealth,
        )

    async def _llm_deployments(self) -> list[LLMDeploymentSummary]:
        return await self.incident.check(
            "list_llm_deployments", LLMDeploymentQuery(), summary="kubectl get llmdeployments -A",
            timeout=self._kube_timeout, result_type=list[LLMDeploymentSummary],
        )

    async def _pending(self) -> GpuPendingPods:
        return await self.incident.check(
            "gpu_pending_pods", GpuPendingPodsQuery(),
            summary="pods FailedScheduling for Insufficient nvidia.com/gpu", timeout=self._kube_timeout,
            result_type=GpuPendingPods,
        )


async def _nothing() -> list[LLMDeploymentSummary]:
    return []


def _probe_reasons(probe: NodeGpuProbe | str) -> list[str]:
    """Why nvidia-smi condemns the node; a probe that could not run condemns nothing."""
    if isinstance(probe, str) or not probe.completed:
        return []
    return probe.reasons


def _probe_summary(probe: NodeGpuProbe | str) -> str:
    if isinstance(probe, str):
        return probe
    if not probe.completed:
        return f"probe did not finish: {probe.problem}"
    if probe.reasons:
        return "; ".join(probe.reasons)
    return f"{len(probe.report.gpus) if probe.report else 0} GPUs healthy"


def _cordons(changes: list[ClusterChange]) -> list[ClusterChange]:
    """The cordons this incident made (before != after), newest first, each node once."""
    first: dict[str, ClusterChange] = {}
    for c in changes:
        if c.kind == "Node" and c.action == "cordon node" and c.before != c.after and not c.dry_run:
            first.setdefault(c.name, c)
    return list(reversed(first.values()))


# SOP-003 restarts the cluster's device plugin and cordons nodes one by one: one incident per cluster,
# so one LLMDGPUCapacityLost per node restarts the plugin once.
PLAYBOOK = Playbook(policy=POLICY, workflow=GpuUnavailable, scope=Scope.cluster(), alerts={"LLMDGPUCapacityLost": "P1", "LLMDGPUHardwareError": "P1"})
