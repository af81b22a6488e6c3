"""Many clusters, one Temporal (issue 20's must-show): two simulated clusters, `east` (the default)
and `west`, each with its own worker polling its own task queue, the triggers in-process serving
both, the service outage staged in each.

- Each cluster's alert writes only to that cluster (each simulator's audit log).
- An alert naming a cluster no worker serves writes nothing on either, and its incident names the
  cluster it named (state, Slack's "Not acting").
- With one cluster's worker stopped its incident waits (no workflow task ever started, nothing
  written) while the other's completes; it completes once a worker of its cluster is back.

Every wait polls with a deadline far above what the run needs; nothing asserts how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from settings import Settings
from simulator.server import SimulatedCluster
from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.fixtures_alertmanager import in_process, triggers_settings
from tests.helpers.fixtures_simulator import TEST_TIME_SCALE
from tests.helpers.incident_queries import state_of, until
from tests.helpers.service_outage import OPERATOR, OPERATOR_NS, llm_deployments, restarts_by_deployment
from tests.helpers.webhook_stack import CHANNEL, alert, notify
from worker.worker import build_worker
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction
from workflows.incident.state import IncidentState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

# Far above a run's need (SOP-001 takes seconds here): the deadline only stops a stuck test.
INCIDENT_TIMEOUT = 180.0


@dataclass
class Cluster:
    name: str
    simulator: SimulatedCluster
    kube_api: k8s.ApiClient
    task_queue: str


@contextlib.contextmanager
def simulated_clusters(tmp_path: Path, task_queue: str, names: list[str]) -> Iterator[dict[str, Cluster]]:
    """One simulator per name, each in the service outage, with its own kubeconfig and task queue."""
    with contextlib.ExitStack() as stack:
        clusters = {}
        for name in names:
            sim = stack.enter_context(
                SimulatedCluster(
                    scenario="service-outage",
                    time_scale=TEST_TIME_SCALE,
                    kubeconfig_path=tmp_path / f"{name}.kubeconfig",
                )
            )
            api = config_client(sim)
            stack.callback(api.close)
            clusters[name] = Cluster(name, sim, api, f"{task_queue}.{name}")
        yield clusters


def config_client(sim: SimulatedCluster) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(sim.kubeconfig_path))


def served(task_queue: str, clusters: dict[str, Cluster]) -> Settings:
    """The triggers' (and each worker's) configuration: east the default, east and west served."""
    return triggers_settings(
        task_queue,
        drills={"enabled": True},
        clusters={
            "label": "cluster",
            "default": "east",
            "served": {c.name: {"task_queue": c.task_queue} for c in clusters.values()},
        },
    )


@contextlib.asynccontextmanager
async def worker_of(
    client: Client, cluster: Cluster, settings: Settings, slack: AsyncWebClient, http: httpx.AsyncClient
) -> AsyncIterator[None]:
    """A worker of `cluster`: its kubeconfig, its task queue, its name."""
    async with build_worker(
        client,
        cluster.kube_api,
        slack,
        http,
        cluster.task_queue,
        slack_channel=CHANNEL,
        config=settings,
        cluster=cluster.name,
    ):
        yield


def outage_alert(cluster: str) -> dict:
    return alert("LLMDServiceDown", datetime.now(timezone.utc) - timedelta(minutes=1), cluster=cluster)


async def opened(hook: httpx.AsyncClient, client: Client, cluster: str) -> WorkflowHandle:
    (outcome,) = await notify(hook, outage_alert(cluster))
    assert outcome["action"] == "started", outcome
    return client.get_workflow_handle(outcome["incident"])


async def resolved(handle: WorkflowHandle) -> IncidentState:
    await asyncio.wait_for(handle.result(), timeout=INCIDENT_TIMEOUT)
    state = await state_of(handle)
    assert state.status == "resolved" and state.resolved_by == "automation", state.failure
    return state


def healed(cluster: Cluster) -> bool:
    return all(d["status"].get("phase") == "Ready" for d in llm_deployments(cluster.kube_api))


def operator_restarts(cluster: Cluster) -> int:
    return restarts_by_deployment(cluster.simulator).get((OPERATOR_NS, OPERATOR), 0)


async def test_each_clusters_alert_writes_only_there_and_an_unknown_cluster_writes_nowhere(
    dev_client: Client, task_queue: str, slack_standin: SlackStandIn, slack_client: AsyncWebClient, tmp_path: Path
):
    with simulated_clusters(tmp_path, task_queue, ["east", "west"]) as clusters:
        east, west = clusters["east"], clusters["west"]
        settings = served(task_queue, clusters)
        async with (
            httpx.AsyncClient() as http,
            worker_of(dev_client, east, settings, slack_client, http),
            worker_of(dev_client, west, settings, slack_client, http),
            in_process(settings, dev_client) as hook,
        ):
            # A cluster no worker serves: its incident runs on the default's queue, acts nowhere, says why.
            nowhere = await opened(hook, dev_client, "nowhere")
            assert (await nowhere.describe()).task_queue == east.task_queue
            state = await until(nowhere, lambda s: s.awaiting_human, "the unserved incident handed to a human", 60)
            assert state.cluster == "nowhere"
            assert state.unserved_cluster is not None and state.unserved_cluster.cluster == "nowhere"
            assert state.unserved_cluster.served == ["east", "west"]
            assert state.changes == []
            posts = [m["text"] for m in slack_standin.messages(CHANNEL) if "Not acting" in m["text"]]
            assert len(posts) == 1 and "'nowhere'" in posts[0] and "east, west" in posts[0], posts
            assert writes(east.simulator, dry_runs=True) == [] and writes(west.simulator, dry_runs=True) == []
            assert not healed(east) and not healed(west)

            # West's alert heals west, and writes nothing on east.
            west_incident = await opened(hook, dev_client, "west")
            assert (await west_incident.describe()).task_queue == west.task_queue
            assert (await resolved(west_incident)).cluster == "west"
            assert healed(west) and operator_restarts(west) == 1
            assert writes(east.simulator, dry_runs=True) == [] and not healed(east)

            # East's heals east, and writes nothing more on west.
            west_writes = len(west.simulator.audit())
            east_incident = await opened(hook, dev_client, "east")
            assert (await east_incident.describe()).task_queue == east.task_queue
            assert (await resolved(east_incident)).cluster == "east"
            assert healed(east) and operator_restarts(east) == 1
            assert writes(west.simulator, since=west_writes, dry_runs=True) == []

            # The unserved incident still wrote nothing anywhere; a human closes it.
            await nowhere.execute_update(
                UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="test", note="handled by hand"), result_type=str
            )
            await asyncio.wait_for(nowhere.result(), timeout=INCIDENT_TIMEOUT)
            assert (await state_of(nowhere)).changes == []


async def test_a_cluster_without_its_worker_waits_while_the_other_heals_then_heals_when_it_is_back(
    dev_client: Client, task_queue: str, slack_client: AsyncWebClient, tmp_path: Path
):
    with simulated_clusters(tmp_path, task_queue, ["east", "west"]) as clusters:
        east, west = clusters["east"], clusters["west"]
        settings = served(task_queue, clusters)
        async with httpx.AsyncClient() as http, in_process(settings, dev_client) as hook:
            async with worker_of(dev_client, west, settings, slack_client, http):
                pass  # west's worker polled its queue, and is gone
            async with worker_of(dev_client, east, settings, slack_client, http):
                west_incident = await opened(hook, dev_client, "west")
                east_incident = await opened(hook, dev_client, "east")
                assert (await resolved(east_incident)).cluster == "east"
                assert healed(east)

                # Meanwhile west's incident waited: open, its first workflow task never picked up, nothing written.
                assert (await west_incident.describe()).status == WorkflowExecutionStatus.RUNNING
                events = [e.event_type async for e in west_incident.fetch_history_events()]
                assert EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED in events
                assert EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED not in events, events
                assert writes(west.simulator, dry_runs=True) == [] and not healed(west)

            # West's worker is back: the incident that waited runs, and heals west.
            async with worker_of(dev_client, west, settings, slack_client, http):
                state = await resolved(west_incident)
            assert state.cluster == "west" and healed(west) and operator_restarts(west) == 1
