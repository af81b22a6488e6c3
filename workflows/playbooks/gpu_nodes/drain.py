"""Takes one GPU node that still fails out of service, as SOP-003's "node still failing" step asks:
an approval gate per node, `kubectl cordon`, then `kubectl drain` as kubectl does it (rounds of
evictions; one a PodDisruptionBudget refuses retried until the drain timeout, then handed over to a
human naming the pods and budgets). Repair or reboot "requires approval from incident commander":
asked for in the thread, never done by automation.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from workflows.incident import Cluster, Incident, TimelineEntry
from workflows.playbooks.gpu_nodes.models import (
    GATE_CORDON_DRAIN,
    GpuTimings,
)

with workflow.unsafe.imports_passed_through():
    from activities.kube.nodes_models import (
        BlockedEviction,
        NodeCordon,
        NodeEvictionRound,
        NodeEvictionRoundResult,
        PodsGoneWait,
        RefusedEviction,
    )


class CordonAndDrain:
    """The cordon-and-drain of one incident; `cordoned` lists the nodes it took out of service."""

    def __init__(self, incident: Incident, timings: GpuTimings, *, incident_commander: str) -> None:
        self.incident = incident
        self.cluster = Cluster(incident, timings)
        self.t = timings
        self.incident_commander = incident_commander
        self.cordoned: list[str] = []  # nodes this incident cordoned (taken out of service)

    async def take_out_of_service(self, node: str, why: str, *, still_failing: str, entry: TimelineEntry) -> None:
        """Ask the `cordon-drain` gate for `node`, then cordon and drain it. `why`: the diagnosis;
        `still_failing`: how it still fails (`still fails after the device plugin restart`)."""
        inc = self.incident
        question = (
            f"{node} {still_failing} ({why}). Cordon it and drain its "
            f"workloads to the other GPU nodes (`kubectl cordon {node}` + `kubectl drain {node} "
            "--ignore-daemonsets --delete-emptydir-data`)?"
        )
        approved = await inc.approval(
            GATE_CORDON_DRAIN, question, target=node, destructive=True, timeout=self.t.approval_timeout
        )
        if not approved:
            entry.note(f"{node}: not cordoned (not approved)")
            await self._ask_for_human_repair(node, why, cordoned=False)
            return
        cordon = await self.cluster.cordon_node(
            NodeCordon(node=node, change_key=f"{workflow.info().workflow_id}/cordon/{node}", reason=why[:200]),
            finding=f"{node} {still_failing}: {why}",
        )
        if cordon is None:
            entry.note(f"{node}: {self.incident.why_interrupted}")
            return
        if cordon.before != cordon.after:
            self.cordoned.append(node)
        if not await self._drain(node, entry, finding=f"{node} cordoned, still failing: {why}"):
            return  # handed over: the thread names the pods left and the budgets
        await self._ask_for_human_repair(node, why, cordoned=True)

    async def _drain(self, node: str, entry: TimelineEntry, *, finding: str) -> bool:
        """`kubectl drain` as kubectl does it: rounds of evictions, each recorded as it happens; one a
        PodDisruptionBudget refuses is retried every 5 s until the drain timeout while the others go.
        A budget that holds for minutes (a replacement loading its model) gets this bounded wait, not
        an activity retry policy sized for glitches. Still blocked at the timeout: hand over to a human,
        naming the pods left and the budgets. False when handed over or automation stopped."""
        t = self.t
        deadline = workflow.now() + timedelta(seconds=t.drain_timeout_seconds)
        evicted: list = []
        told_blocked = False
        while True:
            step = await self.cluster.evict_node_pods(NodeEvictionRound(node=node), finding=finding)
            if step is None:
                entry.note(f"{node}: drain stopped: {self.incident.why_interrupted}")
                return False
            evicted += step.evicted_pods
            dry_run = any(c.dry_run for c in step.evicted)
            # A refusal a retry cannot change (kubectl drain gives up on that pod) ends the rounds too.
            if not step.blocked or step.refused or dry_run or self.incident.interrupted or workflow.now() >= deadline:
                break
            if not told_blocked:
                told_blocked = True
                entry.note(
                    f"{node}: evictions refused by a PodDisruptionBudget, retried every "
                    f"{t.eviction_retry_seconds:g}s for up to {t.drain_timeout_seconds:g}s: "
                    + "; ".join(str(b) for b in step.blocked)
                )
            try:
                await workflow.wait_condition(
                    lambda: self.incident.interrupted,
                    timeout=min(timedelta(seconds=t.eviction_retry_seconds), deadline - workflow.now()),
                    timeout_summary="retry evictions a PodDisruptionBudget refused",
                )
            except asyncio.TimeoutError:
                pass
        if (step.blocked or step.refused) and not self.incident.interrupted:
            await self._hand_over_blocked_drain(node, step, entry)
            return False
        gone = await self.cluster.wait_for_pods_gone(
            PodsGoneWait(
                node=node,
                pods=evicted,
                poll_seconds=t.pod_poll_seconds,
                timeout_seconds=max(1.0, (deadline - workflow.now()).total_seconds()),
            )
        )
        left = step.left + gone.left
        entry.note(f"{node}: cordoned; {len(evicted)} pods evicted" + (f"; left: {', '.join(left)}" if left else ""))
        return True

    async def _hand_over_blocked_drain(self, node: str, step: NodeEvictionRoundResult, entry: TimelineEntry) -> None:
        """The drain cannot finish: PodDisruptionBudgets still refuse at the drain timeout (429), or the
        API server refused an eviction for good (500 for a pod under two budgets, and the like). A human
        decides (wait longer, scale up, relax or merge the budgets, or delete the pod and accept the
        disruption). Automation stops acting on this incident; the evictions made stay on the record."""
        inc = self.incident
        stuck: list[BlockedEviction | RefusedEviction] = [*step.blocked, *step.refused]
        pods = ", ".join(f"{b.namespace}/{b.name}" for b in stuck)
        budgets = ", ".join(sorted({x for b in step.blocked for x in b.budgets}))
        several = sorted({r.namespace for r in step.refused if r.several_budgets})
        parts = []
        if step.blocked:
            parts.append(
                f"timed out after {self.t.drain_timeout_seconds:g}s, eviction refused by {budgets or 'a PodDisruptionBudget'}"
            )
        if several:
            parts.append("pods under more than one PodDisruptionBudget, which the eviction API does not support")
        if any(not r.several_budgets for r in step.refused):
            parts.append("evictions refused by the API server")
        reason = f"drain of {node} cannot finish: pods left {pods} ({'; '.join(parts)})"
        entry.note(reason + " — " + "; ".join(str(b) for b in stuck))
        advice = f"Pods left: {pods}." + (f" Blocking budgets: {budgets}." if budgets else "")
        if several:
            advice += (
                " Budgets covering one pod twice: " + ", ".join(f"`kubectl get pdb -n {ns}`" for ns in several) + "."
            )
        await inc.hand_over(
            reason,
            to="on-call (drain blocked)",
            advice=advice
            + "\n"
            + "\n".join(f"• {b}" for b in stuck)
            + f"\n{node} stays cordoned. A human decides: wait for the budget (`kubectl get pdb -A`), scale the "
            "workload up, relax or merge the budgets, or delete the pod and accept the disruption.",
        )

    async def _ask_for_human_repair(self, node: str, why: str, *, cordoned: bool) -> None:
        """The SOP's reboot "requires approval from incident commander": a human step, asked for here."""
        state = (
            "would have cordoned and drained (shadow mode)"
            if cordoned and self.incident.shadow
            else "cordoned and drained"
            if cordoned
            else "still in service (cordon not approved)"
        )
        await self.incident.say(
            f":wrench: *Human only — {node}* ({state}): {why}.\n"
            f"A node reboot or GPU replacement requires approval from the incident commander "
            f"(@{self.incident_commander}); automation never reboots nodes. "
            + (f"Once repaired and nvidia-smi is clean: `kubectl uncordon {node}`." if cordoned else ""),
            purpose=f"human-repair-{node}",
        )
