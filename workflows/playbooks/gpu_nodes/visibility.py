"""SOP-003's reads, which its steps repeat: GPU capacity per node, the device plugin, pods waiting for
GPUs, nvidia-smi on a node, the GPU test pod, LLMDeployments; and `look()`, one look at GPU visibility
built from them. Each is a read through workflows/incident/calls.py (standard timeouts, kubectl summaries); a
probe or test pod that cannot run is reported as a problem, never raised.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import FailureError

from workflows.incident import Cluster, Incident, failure_text
from workflows.playbooks.gpu_nodes.models import CORDONED, GpuTimings, GpuUnavailableInput, Visibility

with workflow.unsafe.imports_passed_through():
    from activities.kube.gpus_models import (
        DevicePluginHealth,
        GpuInventory,
        GpuInventoryQuery,
        GpuPendingPods,
        GpuPendingPodsQuery,
        GpuTestPodRequest,
        NodeGpuProbe,
        NodeGpuProbeRequest,
    )
    from activities.kube.llmdeployments_models import LLMDeploymentQuery, LLMDeploymentSummary


class GpuVisibilityChecks:
    """The reads of one incident (see the module docstring); GPU test pods are numbered per incident."""

    def __init__(self, incident: Incident, inp: GpuUnavailableInput, timings: GpuTimings) -> None:
        self.incident = incident
        self.cluster = Cluster(incident, timings)
        self.inp = inp
        self.t = timings
        self._tests = 0  # numbers GPU test pods, so each look runs its own (a retry adopts its own)

    async def look(
        self, *, out_of_service: list[str], condemned: dict[str, list[str]], models: bool = False
    ) -> Visibility:
        """`kubectl get nodes` GPU capacity, the plugin's pods, pods waiting for GPUs, the GPU test pod
        and (`models`) every LLMDeployment Ready. `out_of_service`: the nodes this incident cordoned, not
        looked at; `condemned`: node -> why nvidia-smi still fails it, added to its problems."""
        inventory, plugin, pending, llmds = await asyncio.gather(
            self.inventory(), self.plugin(), self.pending(), self.llm_deployments() if models else _nothing()
        )
        nodes = [n for n in inventory.nodes if n.node not in out_of_service]
        problems = {n.node: [p for p in n.problems if p != CORDONED] for n in nodes}
        for pod in plugin.pods:
            if not pod.ready and pod.node in problems:
                problems[pod.node].append(f"device plugin pod {pod.name} {pod.reason or pod.phase}")
        for node, reasons in condemned.items():
            if node in problems:
                problems[node] += reasons
        cluster: list[str] = []
        if not plugin.found:
            cluster += plugin.problems
        if pending.pods:
            cluster.append(
                f"{len(pending.pods)} pods waiting for nvidia.com/gpu: "
                + ", ".join(f"{p.namespace}/{p.name}" for p in pending.pods[:5])
            )
        not_ready = [f"{d.namespace}/{d.name} ({d.phase})" for d in llmds if not d.ready]
        if not_ready:
            cluster.append(f"LLMDeployments not Ready: {', '.join(not_ready)}")
        free = max((n.allocatable - n.in_use for n in nodes if not n.unschedulable), default=0)
        if free >= self.inp.test_gpus:  # else the test pod could only wait out its timeout
            test = await self.gpu_test()
            if test:
                cluster.append(test)
        else:
            cluster.append(f"GPU test pod not run: no schedulable GPU node has {self.inp.test_gpus} free GPUs")
        return Visibility(node_problems=problems, cluster_problems=cluster, models_checked=models)

    async def gpu_test(self) -> str | None:
        """`kubectl run gpu-test --limits='nvidia.com/gpu=N' -- nvidia-smi`: None when it passed."""
        self._tests += 1
        req = GpuTestPodRequest(
            incident_id=workflow.info().workflow_id,
            purpose=f"verify-{self._tests}",
            gpus=self.inp.test_gpus,
            timeout_seconds=self.t.test_pod_timeout_seconds,
            poll_seconds=self.t.pod_poll_seconds,
        )
        try:
            result = await self.cluster.gpu_test_pod(req)
        except FailureError as err:
            return f"GPU test pod could not run: {failure_text(err)}"
        if result.succeeded and (result.report is None or result.report.healthy):
            return None
        if not result.scheduled:
            return f"GPU test pod not scheduled: {result.scheduling_message or result.problem or result.phase}"
        reasons = result.report.reasons if result.report else [result.problem or result.phase]
        return f"GPU test pod on {result.node} failed: {'; '.join(reasons)}"

    async def probe(self, node: str, purpose: str) -> NodeGpuProbe | str:
        """nvidia-smi on `node`; a probe that cannot run is reported, not fatal (it condemns nothing)."""
        return await probe_node(self.cluster, self.t, node, purpose, max_temp_c=self.inp.max_temp_c)

    async def inventory(self) -> GpuInventory:
        return await self.cluster.gpu_inventory(GpuInventoryQuery(node_selector=self.inp.gpu_node_selector))

    async def plugin(self) -> DevicePluginHealth:
        return await self.cluster.device_plugin_health(self.inp.device_plugin)

    async def llm_deployments(self) -> list[LLMDeploymentSummary]:
        return await self.cluster.list_llm_deployments(LLMDeploymentQuery())

    async def pending(self) -> GpuPendingPods:
        return await self.cluster.gpu_pending_pods(GpuPendingPodsQuery())


async def _nothing() -> list[LLMDeploymentSummary]:
    return []


async def probe_node(
    cluster: Cluster, timings: GpuTimings, node: str, purpose: str, *, max_temp_c: float
) -> NodeGpuProbe | str:
    """nvidia-smi in a pod pinned to `node` (`purpose` names the pod within the incident). A probe that
    cannot run is returned as the sentence saying why (for the timeline), never raised: it condemns
    nothing, and proves nothing either."""
    req = NodeGpuProbeRequest(
        incident_id=workflow.info().workflow_id,
        node=node,
        purpose=purpose,
        timeout_seconds=timings.probe_timeout_seconds,
        poll_seconds=timings.pod_poll_seconds,
        max_temp_c=max_temp_c,
    )
    try:
        return await cluster.probe_node_gpus(req)
    except FailureError as err:
        return f"probe could not run: {failure_text(err)}"
