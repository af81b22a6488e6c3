"""Which cluster of the dev stack a drill rehearses on, and the clean slate it starts from there.

`runbooks dev` lists its clusters in dev.json (`clusters`: name -> kubeconfig, `task_queues`, the
default `cluster`; cli/dev_clusters.py). `runbooks drill X --cluster NAME` stages on NAME's simulator
and labels the alert with NAME (`clusters.label`), so the triggers route it to NAME's task queue;
without `--cluster` the drill is the default cluster's, its alert unlabelled, as before clusters
had names. The clean slate touches that cluster only: its open incidents, its coordinator, its
simulator; the other clusters' incidents and faults stay as they are.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from cli.control import ControlError
from settings import ClusterSettings, Settings
from settings.clusters import ServedCluster
from workflows.incident.coordination_models import coordinator_workflow_id
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction

_RPC = timedelta(seconds=10)
# How long a drill waits for the previous drills' incidents to close before terminating them.
CLOSE_TIMEOUT = 30.0


@dataclass(frozen=True)
class DrillTarget:
    """The dev stack's cluster a drill stages on: its name, kubeconfig, task queue, simulator URL (None:
    not a simulator), and the labels its alert carries to name it (none for the unnamed default)."""

    name: str
    kubeconfig: str
    task_queue: str
    simulator: str | None
    labels: dict[str, str] = field(default_factory=dict)


def drill_target(settings: Settings, dev: dict, home: Path, cluster: str | None) -> tuple[DrillTarget, Settings]:
    """The cluster `--cluster` names (None: the default), and the configuration as the dev stack runs
    its clusters (served, default, task queues: the drill's alert is routed as its triggers route it).

    Raises ControlError, before anything changes, for a cluster the stack does not run or no simulator."""
    kubeconfigs: dict[str, str] = dev.get("clusters") or {}
    if kubeconfigs:  # `runbooks dev` wrote its clusters: route as its triggers do
        queues = dev.get("task_queues") or {}
        settings = settings.model_copy(
            update={
                "clusters": ClusterSettings(
                    label=dev.get("cluster_label") or settings.clusters.label,
                    default=dev.get("cluster") or next(iter(kubeconfigs)),
                    served={n: ServedCluster(task_queue=queues.get(n)) for n in kubeconfigs},
                )
            }
        )
    elif dev.get("kubeconfig"):  # a state file from before clusters had names: one, the default
        kubeconfigs = {settings.clusters.default: dev["kubeconfig"]}
    default = settings.clusters.default
    name = cluster or default
    kubeconfig = kubeconfigs.get(name)
    if kubeconfig is None and kubeconfigs:
        raise ControlError(
            f"the dev stack in {home} runs no cluster {name!r}: it runs {', '.join(kubeconfigs)} "
            "(`runbooks dev --clusters NAME,NAME` runs others)"
        )
    if not kubeconfig or not Path(kubeconfig).exists():
        raise ControlError(
            f"no simulator found in {home}: start `runbooks dev` first (drills run on the simulated cluster)"
        )
    simulators = dev.get("simulators") or {}
    target = DrillTarget(
        name=name,
        kubeconfig=kubeconfig,
        task_queue=settings.cluster_task_queue(name),
        simulator=simulators.get(name) or (dev.get("simulator") if name == default else None),
        labels={settings.clusters.label: name} if cluster else {},
    )
    return target, settings


async def clean_slate(client: Client, dev: dict, target: DrillTarget, scenario: str) -> None:
    """Close the cluster's open incidents, forget its coordinator, reset its simulator (module doc).

    Raises ControlError when the stack is not a `runbooks dev` simulator with drills enabled."""
    if not target.simulator or not dev.get("drills_enabled", True):
        raise ControlError(
            "drills reset the cluster and the coordinator first: that needs `runbooks dev` with its "
            "simulator and drills enabled (or stage on top with --no-reset)"
        )
    from simulator.server import inject_into

    task_queue = target.task_queue
    closed = await close_open_incidents(
        client, task_queue, target.name, f"closed to rehearse {scenario} from a clean slate"
    )
    coordinator = client.get_workflow_handle(coordinator_workflow_id(task_queue))
    try:
        await coordinator.terminate(
            reason=f"drill {scenario}: holds, caps and ledger start empty, as on a fresh stack", rpc_timeout=_RPC
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # none yet, or already ended: nothing to forget
            raise ControlError(f"could not reset the coordinator: {exc}") from None
    try:
        inject_into(target.kubeconfig, "baseline")
    except Exception as exc:
        raise ControlError(f"could not reset the simulated cluster {target.name}: {exc}") from None
    which = f"closed {len(closed)} open incident(s) ({', '.join(closed)}); " if closed else ""
    print(
        f"clean slate: {which}coordinator's holds and caps forgotten; "
        f"simulated cluster {target.name} reset to its baseline",
        flush=True,
    )


async def close_open_incidents(client: Client, task_queue: str, cluster: str, note: str) -> list[str]:
    """Resolve every running incident of `cluster` on `task_queue` as "drill" and wait until each has
    closed; terminate those that do not close within CLOSE_TIMEOUT. Returns their ids. An incident for
    a cluster no worker serves runs on the default cluster's queue but is not that cluster's: it stays."""
    query = (
        f'ExecutionStatus = "Running" AND Runbook IS NOT NULL AND TaskQueue = "{task_queue}" '
        f'AND (Cluster = "{cluster}" OR Cluster IS NULL)'
    )
    ids = [w.id async for w in client.list_workflows(query, rpc_timeout=_RPC)]
    for wf_id in ids:
        handle = client.get_workflow_handle(wf_id)
        try:
            await handle.execute_update(
                UPDATE_HUMAN_ACTION,
                HumanAction(action="resolve", by="drill", note=note),
                result_type=str,
                rpc_timeout=_RPC,
            )
        except (WorkflowUpdateFailedError, RPCError):
            pass  # closing, or refused: it is terminated below if it does not close
    deadline = time.monotonic() + CLOSE_TIMEOUT
    for wf_id in ids:
        handle = client.get_workflow_handle(wf_id)
        while (await handle.describe(rpc_timeout=_RPC)).status == WorkflowExecutionStatus.RUNNING:
            if time.monotonic() > deadline:
                await handle.terminate(reason=note, rpc_timeout=_RPC)
                break
            await asyncio.sleep(0.3)
    return ids
