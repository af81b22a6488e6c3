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

from temporalio import workflow
from temporalio.exceptions import FailureError

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
from workflows.playbooks.gpu_nodes.drain import CordonAndDrain
from workflows.playbooks.gpu_nodes.models import (
    GPU_NODE_ACCESS,
    CORDONED,
    GpuUnavailableInput,
    Visibility,
    probe_reasons,
    probe_summary,
    recorded_cordons,
)
from workflows.playbooks.gpu_nodes.visibility import GpuVisibilityChecks

with workflow.unsafe.imports_passed_through():
    from activities.kube.daemonsets_models import DaemonSetRestart, DaemonSetRolloutWait
    from activities.kube.gpus_models import DevicePluginHealth, GpuInventory, GpuPendingPods
    from activities.kube.nodes_models import NodeUncordon


# Incidents started before: a probe that never ran counted as clean ("nothing wrong found").

POLICY = PlaybookPolicy(
    runbook="gpu-unavailable",
    title="GPU not available",
    default_severity="P1",
    # SOP-003: 10 min if the device plugin restart doesn't work, 15 min if driver issues are detected.
    escalation=EscalationPolicy.of(10, 15),
    impact="GPU capacity lost: model pods cannot be scheduled or run on the affected GPU nodes",
    gates=("cordon-drain",),
)


@workflow.defn
class GpuUnavailable:
    """SOP-003 for GPU nodes that stop advertising or serving their GPUs."""

    @workflow.init
    def __init__(self, inp: GpuUnavailableInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Cluster(self.incident, self.t)
        self.gpu_nodes: list[str] = []
        self.driver_faults: dict[str, list[str]] = {}  # node -> nvidia-smi's reasons (step 2)
        self.unchecked: dict[str, str] = {}  # node -> why nvidia-smi could not run there (step 2)
        self.condemned: dict[str, list[str]] = {}  # node -> reasons it still fails after the restart
        self.visibility: Visibility | None = None  # the last look: the diagnosis when it fails
        self.inventory: GpuInventory | None = None  # step 1's findings: what justifies (or rules out) a write
        self.plugin: DevicePluginHealth | None = None
        self.pending: GpuPendingPods | None = None
        self.plugin_restarted = False
        self.checks = GpuVisibilityChecks(self.incident, inp, self.t)
        self.drain = CordonAndDrain(self.incident, self.t, incident_commander=inp.incident_commander)

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
            checks = self.checks
            inventory, plugin, pending = await asyncio.gather(checks.inventory(), checks.plugin(), checks.pending())
            self.inventory, self.plugin, self.pending = inventory, plugin, pending
            self.gpu_nodes = [n.node for n in inventory.nodes]
            nodes = (
                "\n".join(
                    f"• `{n.node}` nvidia.com/gpu capacity {n.capacity}, allocatable {n.allocatable}, "
                    f"in use {n.in_use}" + (f" — {'; '.join(n.problems)}" if n.problems else "")
                    for n in inventory.nodes
                )
                or "• no GPU node matches the selector"
            )
            pods = (
                "\n".join(
                    f"• `{p.name}` on {p.node}: {p.reason or p.phase}, {p.restarts} restarts" for p in plugin.pods
                )
                or "• none"
            )
            waiting = "".join(f"\n• `{p.namespace}/{p.name}` ({p.gpus} GPU): {p.message}" for p in pending.pods[:10])
            await inc.say(
                f"*GPU capacity* (`kubectl get nodes -o custom-columns=NAME:.metadata.name,GPU:.status.capacity`):\n"
                f"{nodes}\n*Device plugin* `{plugin.namespace}/{plugin.daemonset}`: desired {plugin.desired}, "
                f"ready {plugin.ready}, updated {plugin.updated}\n{pods}\n"
                f"*Pods waiting for GPUs:* {len(pending.pods)}{waiting}",
                purpose="scope",
            )
            for n in inventory.nodes:
                entry.note(
                    f"{n.node}: capacity {n.capacity}, allocatable {n.allocatable}"
                    + (f" ({'; '.join(n.problems)})" if n.problems else "")
                )
            entry.note("device plugin: " + ("; ".join(plugin.problems) or "healthy"))
            entry.outcome = (
                f"{inventory.total_allocatable}/{inventory.total_capacity} GPUs allocatable on "
                f"{len(inventory.nodes)} GPU nodes; {len(inventory.nodes_with_problems)} nodes with "
                f"problems; device plugin {'healthy' if plugin.healthy else 'unhealthy'}; "
                f"{len(pending.pods)} pods waiting for GPUs"
            )

    # ---- 2. Check driver status (3-6 minutes) ----------------------------------------------------

    async def check_driver_status(self) -> None:
        inc = self.incident
        async with inc.step("2. Check driver status") as entry:
            probes = await asyncio.gather(*(self.checks.probe(n, "driver-check") for n in self.gpu_nodes))
            lines = []
            for node, probe in zip(self.gpu_nodes, probes):
                reasons = probe_reasons(probe)
                if reasons:
                    self.driver_faults[node] = reasons
                if isinstance(probe, str) or not probe.completed:
                    self.unchecked[node] = probe_summary(probe)
                entry.note(f"{node}: {probe_summary(probe)}")
                lines.append(f"• `{node}`: {':x: ' if reasons else ''}{probe_summary(probe)}")
            await inc.say(
                "*Driver check* (`nvidia-smi` on each GPU node):\n" + ("\n".join(lines) or "• no GPU node"),
                purpose="driver-check",
            )
            entry.outcome = (
                f"nvidia-smi fails on {', '.join(self.driver_faults)}"
                if self.driver_faults
                else f"nvidia-smi could not run on {', '.join(self.unchecked)}"
                if self.unchecked
                else f"nvidia-smi healthy on all {len(self.gpu_nodes)} GPU nodes"
            )

    def _gpus_missing(self) -> list[str]:
        """Step 1's lost GPUs per node (a cordon is someone's decision, not a lost GPU)."""
        nodes = self.inventory.nodes if self.inventory else []
        return [
            f"{n.node}: {'; '.join(p for p in n.problems if p != CORDONED)}"
            for n in nodes
            if any(p != CORDONED for p in n.problems)
        ]

    def _plugin_finding(self) -> str | None:
        """Why restarting the device plugin could help: its pods unhealthy or GPUs missing (None: neither)."""
        found = []
        if self.plugin is not None and not self.plugin.healthy:
            found.append(
                f"device plugin {self.plugin.namespace}/{self.plugin.daemonset}: {'; '.join(self.plugin.problems)}"
            )
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
        if self._plugin_finding() or self.driver_faults:
            return False
        if self.unchecked:
            # A probe that never ran (refused, no pod) proves nothing: no write, and not "clean" either.
            await self.incident.escalate_now(
                "GPU health could not be checked: " + "; ".join(f"{n}: {why}" for n, why in self.unchecked.items())
            )
            return True
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
            if self.incident.interrupted:
                entry.outcome = self.incident.why_interrupted
                return
            finding = self._plugin_finding()
            if finding is None:
                # nvidia-smi fails on a node that still advertises its GPUs: a driver or GPU fault a
                # plugin restart cannot fix; step 4 re-probes it and may take it out of service.
                entry.outcome = "not needed: device plugin healthy and every GPU advertised"
                return
            change = await self.cluster.restart_daemonset(
                DaemonSetRestart(
                    namespace=ds.namespace,
                    name=ds.daemonset,
                    restarted_at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                    restarted_by=f"{workflow.info().workflow_id}/restart-device-plugin",
                ),
                finding=finding,
            )
            if change is None:
                entry.outcome = "skipped: automation may not act"
                return
            self.plugin_restarted = True
            status = await self.cluster.wait_for_daemonset_rollout(
                DaemonSetRolloutWait(
                    namespace=ds.namespace,
                    name=ds.daemonset,
                    timeout_seconds=self.t.plugin_rollout_timeout_seconds,
                    poll_seconds=self.t.rollout_poll_seconds,
                )
            )
            entry.note(f"rollout: {status.message} after {status.waited_seconds:g}s")
            await inc.say(
                f":arrows_counterclockwise: Device plugin restarted; rollout: {status.message}",
                purpose="plugin-restart",
            )
            entry.outcome = f"restarted; {status.message}"

    # ---- 4. Verify GPU visibility (8-10 minutes) -------------------------------------------------

    async def verify_gpu_visibility(self) -> list[str]:
        """Capacity back and a GPU test pod passing; returns the nodes still failing."""
        inc = self.incident
        async with inc.step("4. Verify GPU visibility") as entry:
            await self._reprobe_driver_faults(entry)

            async def look() -> Visibility:
                self.visibility = await self._look()
                return self.visibility

            def settled(v: Visibility) -> bool:
                # Nothing more will come back by itself once only condemned nodes fail.
                return v.ok or (set(v.failing_nodes) <= set(self.condemned) and not v.cluster_problems)

            v = await inc.poll_until(
                look,
                settled,
                deadline=workflow.now() + timedelta(seconds=self.t.visibility_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                summary="next GPU visibility check",
            )
            failing = self._nodes_to_take_out(v)
            entry.outcome = f"{'GPUs visible' if v.ok else 'still failing'}: {v}"
            await inc.say(
                (":white_check_mark: " if v.ok else ":x: ") + f"*GPU visibility after the restart:* {v}",
                purpose="visibility",
            )
        return failing

    async def _reprobe_driver_faults(self, entry: TimelineEntry) -> None:
        """nvidia-smi again on the nodes that failed it: the restart fixes plugins, not drivers or GPUs."""
        nodes = list(self.driver_faults)
        probes = await asyncio.gather(*(self.checks.probe(n, "after-restart") for n in nodes))
        for node, probe in zip(nodes, probes):
            reasons = probe_reasons(probe)
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
                if self.incident.interrupted:
                    entry.note(f"{node}: {self.incident.why_interrupted}")
                    break
                await self.drain.take_out_of_service(
                    node, self._diagnosis(node), still_failing=self._still_failing, entry=entry
                )
            verb = "would have cordoned and drained (shadow mode)" if inc.shadow else "cordoned and drained"
            entry.outcome = f"{verb}: {', '.join(self.drain.cordoned)}" if self.drain.cordoned else "no node cordoned"

    # ---- Verification -------------------------------------------------------------------------

    async def verification(self) -> bool:
        """The SOP's checks (capacity on every GPU node, plugin pods running) and the models it is all
        for: every LLMDeployment Ready. Polled while recovery can still come (GPUs back, or the failing
        nodes drained); otherwise one look, for the diagnosis."""
        inc, poll = self.incident, timedelta(seconds=self.t.verification_poll_seconds)
        async with inc.step("Verification") as entry:
            if self.incident.interrupted:
                entry.outcome = self.incident.why_interrupted
                return False
            if self.drain.cordoned:
                await inc.pause(
                    poll, summary="next GPU visibility check"
                )  # the drained pods' controllers recreate them on the other nodes
            if self.drain.cordoned or (self.visibility is not None and self.visibility.ok):
                self.visibility = await self._wait_for_recovery(self.t.verification_timeout_seconds)
            else:
                self.visibility = await self._look(models=True)
            v = self.visibility
            entry.outcome = f"{'passed' if v.ok else 'failed'}: {v}"
            if v.ok and not self.incident.rollback_requested:
                out = (
                    (
                        f"; {', '.join(self.drain.cordoned)} cordoned and drained, awaiting repair approved by the "
                        "incident commander (uncordon by hand after it)"
                    )
                    if self.drain.cordoned
                    else ""
                )
                inc.resolve(f"SOP-003 verification: {v}{out}")
        return v.ok

    async def _wait_for_recovery(self, seconds: float) -> Visibility:
        return await self.incident.poll_until(
            lambda: self._look(models=True),
            lambda v: v.ok,
            deadline=workflow.now() + timedelta(seconds=seconds),
            every=timedelta(seconds=self.t.verification_poll_seconds),
            summary="next GPU visibility check",
        )

    # ---- Rollback -------------------------------------------------------------------------------

    async def rollback(self, verified: bool) -> None:
        """On request, or when verification failed: uncordon exactly the nodes this incident cordoned."""
        inc = self.incident
        if not inc.automation_allowed or (verified and not self.incident.rollback_requested):
            return
        req = self.incident.rollback_requested
        if not req and not recorded_cordons(inc.changes):  # nothing of ours to undo: humans take it from here
            await inc.escalate_now(f"SOP-003 did not restore GPU availability: {self.visibility}")
            return
        why = req.why if req else "verification failed"
        async with inc.step("Rollback") as entry:
            entry.note(why)
            restored = []
            for original in recorded_cordons(inc.changes):
                try:
                    done = await self.cluster.uncordon_node(
                        NodeUncordon(node=original.name, original=original.before),
                        finding=f"rollback {why}" + (f" ({self.visibility})" if self.visibility and not req else ""),
                    )
                except FailureError as err:
                    entry.note(f"{original.name} not uncordoned: {err}")
                    continue
                if done is None:
                    entry.outcome = "stopped: automation may not act"
                    return
                restored.append(original.name)
            self.drain.cordoned = [n for n in self.drain.cordoned if n not in restored]
            entry.outcome = (
                f"uncordoned {', '.join(restored)}" if restored else "no cordon to undo"
            ) + " (evictions and the plugin restart cannot be undone)"
        await inc.say(
            f":leftwards_arrow_with_hook: *Rollback* ({why}): {entry.outcome}. GPU availability is not "
            "restored: humans take it from here.",
            purpose="rollback",
        )
        if not req:
            await inc.escalate_now(f"SOP-003 did not restore GPU availability ({self.visibility}); {entry.outcome}")

    # ---- helpers --------------------------------------------------------------------------------

    @property
    def _after_restart(self) -> str:
        return "device plugin restart did not restore" if self.plugin_restarted else "nvidia-smi still fails on"

    @property
    def _still_failing(self) -> str:
        return "still fails after the device plugin restart" if self.plugin_restarted else "still fails nvidia-smi"

    async def _look(self, *, models: bool = False) -> Visibility:
        """One look at GPU visibility (`models`: every LLMDeployment Ready too); cordoned nodes are out of service."""
        return await self.checks.look(out_of_service=self.drain.cordoned, condemned=self.condemned, models=models)

    def _diagnosis(self, node: str) -> str:
        reasons = self.condemned.get(node) or (self.visibility.node_problems.get(node) if self.visibility else None)
        return "; ".join(reasons or ["no GPUs advertised"])


# SOP-003 restarts the cluster's device plugin and cordons nodes one by one: one incident per cluster,
# so one LLMDGPUCapacityLost per node restarts the plugin once.
PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=GpuUnavailable,
    scope=Scope.cluster(),
    alerts={
        "LLMDGPUCapacityLost": Alert("P1", "SOP-003 (seed 000); seed 004 'GPU not available': P1"),
    },
    drills=(
        Drill(
            "gpu-unavailable",
            "LLMDGPUCapacityLost",
            "GPU nodes report no allocatable nvidia.com/gpu",
            {"namespace": "kube-system"},
        ),
    ),
    kube_access=(*GPU_NODE_ACCESS, "get daemonsets.apps", "patch daemonsets.apps"),
)
