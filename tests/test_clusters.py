"""Many clusters, one Temporal: each alert's cluster picks its incident's task queue; a cluster no
worker serves gets an incident that acts nowhere; scope keys that differ give ids that differ; the
triggers tell on-call when a cluster's queue has no worker. (Two simulated clusters end to end:
tests/test_multi_cluster.py.)"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from settings import ConfigError, load_settings
from standins.alertmanager import am_alert, am_payload
from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.fixtures_alertmanager import AUTH, in_process, triggers_settings
from tests.helpers.fixtures_temporal import installed_binary
from tests.helpers.incident_queries import until
from tests.helpers.waiting import wait_for_async
from triggers.cluster_watch import ClusterWatch
from worker.worker import build_worker
from workflows.incident import search
from workflows.incident.models import IncidentInput
from workflows.incident.scope import scope_incident_id
from workflows.incident.search import SEARCH_ATTRIBUTES


def two_clusters(task_queue: str, **sections: Any):
    """east (the default) and west, each on a queue of this test's own."""
    served = {"east": {"task_queue": f"{task_queue}-east"}, "west": {"task_queue": f"{task_queue}-west"}}
    return triggers_settings(task_queue, clusters={"default": "east", "served": served}, **sections)


async def _post(hook: httpx.AsyncClient, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await hook.post("/alertmanager", json=am_payload(*alerts), headers=AUTH)
    assert resp.status_code == 200, resp.text
    return resp.json()["incidents"]


async def _input(client: Client, wf_id: str) -> IncidentInput:
    history = await client.get_workflow_handle(wf_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await client.data_converter.decode(started.input.payloads, [IncidentInput])
    return inp


async def test_each_alert_runs_on_its_clusters_queue_and_an_unserved_cluster_on_the_defaults(dev_client, task_queue):
    settings = two_clusters(task_queue)
    async with in_process(settings, dev_client) as hook:
        [west] = await _post(hook, am_alert("LLMDServiceDown", cluster="west"))
        [east] = await _post(hook, am_alert("LLMDServiceDown", cluster="east"))
        [unlabelled] = await _post(hook, am_alert("LLMDServiceDown"))
        [nowhere] = await _post(hook, am_alert("LLMDServiceDown", cluster="prod-eu-west"))

    # The default cluster's alerts, labelled or not, are one fault: one incident, no prefix.
    assert east["incident"] == unlabelled["incident"] == f"{task_queue}.service-outage--cluster"
    assert unlabelled["action"] == "joined"
    assert west["incident"] == f"{task_queue}.service-outage--west.cluster" and west["scope"] == "west/cluster"
    queues = {}
    for outcome, cluster in ((east, "east"), (west, "west"), (nowhere, "prod-eu-west")):
        desc = await dev_client.get_workflow_handle(outcome["incident"]).describe()
        queues[cluster] = desc.task_queue
        assert desc.typed_search_attributes.get(search.CLUSTER) == cluster
        inp = await _input(dev_client, outcome["incident"])
        assert inp.cluster == cluster
    assert queues == {"east": f"{task_queue}-east", "west": f"{task_queue}-west", "prod-eu-west": f"{task_queue}-east"}
    unserved = (await _input(dev_client, nowhere["incident"])).unserved_cluster
    assert unserved is not None and (unserved.cluster, unserved.label, unserved.served) == (
        "prod-eu-west",
        "cluster",
        ["east", "west"],
    )
    assert (await _input(dev_client, west["incident"])).unserved_cluster is None


async def test_labels_that_differ_only_in_non_ascii_or_past_120_characters_open_distinct_incidents(
    dev_client, task_queue
):
    long = "gpu-node-" + "x" * 130
    nodes = ["gpu-nöde-1", "gpu-nüde-1", "gpu-n😀de-1", long + "a", long + "b"]
    async with in_process(triggers_settings(task_queue), dev_client) as hook:
        outcomes = [(await _post(hook, am_alert("LLMDGPUHardwareError", node=n)))[0] for n in nodes]
        again = (await _post(hook, am_alert("LLMDGPUHardwareError", node=nodes[0])))[0]

    ids = [o["incident"] for o in outcomes]
    assert len(set(ids)) == len(nodes), ids
    assert all(o["action"] == "started" for o in outcomes)
    assert again["incident"] == ids[0] and again["action"] == "joined"  # the same key: the same incident
    for wf_id in ids:
        assert len(wf_id) < 200 and wf_id.isascii()
        assert (await dev_client.get_workflow_handle(wf_id).describe()).status == WorkflowExecutionStatus.RUNNING


def test_ids_spell_exact_keys_plainly_and_hash_what_they_could_not():
    assert scope_incident_id("service-outage", "cluster") == "service-outage--cluster"
    assert scope_incident_id("gpu-hardware-failure", "node/gpu-node-2") == "gpu-hardware-failure--node.gpu-node-2"
    # `/` is written `.`: a key with a `.` of its own could collide, so it is hashed.
    dotted = scope_incident_id("x", "node/a.b")
    assert dotted.startswith("x--node.a.b-") and dotted != scope_incident_id("x", "node/a/b")
    assert scope_incident_id("x", "team-a/model") != scope_incident_id("x", "team/a-model")


def test_a_worker_must_serve_a_served_cluster_and_the_default_must_be_served():
    with pytest.raises(ConfigError, match="worker.cluster 'north' is not served"):
        load_settings(
            environ={
                "RUNBOOKS_CLUSTERS__SERVED": "[east, west]",
                "RUNBOOKS_CLUSTERS__DEFAULT": "east",
                "RUNBOOKS_WORKER__CLUSTER": "north",
            }
        )
    with pytest.raises(ConfigError, match="default 'default' must be one of served"):
        load_settings(environ={"RUNBOOKS_CLUSTERS__SERVED": "[east, west]"})
    settings = load_settings(
        environ={
            "RUNBOOKS_CLUSTERS__SERVED": "[east, west]",
            "RUNBOOKS_CLUSTERS__DEFAULT": "east",
            "RUNBOOKS_WORKER__CLUSTER": "west",
        }
    )
    assert settings.worker_cluster == "west" and settings.cluster_task_queue("west") == "llm-runbooks.west"


@pytest.mark.scenario("service-outage")
async def test_an_alert_for_a_cluster_no_worker_serves_writes_nothing_and_tells_on_call(
    dev_client, task_queue, simulator, kube_api, slack_standin, slack_client
):
    """The default cluster's worker runs the incident (someone must tell on-call) but not its playbook."""
    settings = two_clusters(task_queue, drills={"enabled": True})
    before = len(simulator.audit())
    async with httpx.AsyncClient() as http:
        worker = build_worker(
            dev_client,
            kube_api,
            slack_client,
            http,
            f"{task_queue}-east",
            slack_channel="#incidents",
            config=settings,
            cluster="east",
        )
        async with worker, in_process(settings, dev_client) as hook:
            sent = am_alert("LLMDServiceDown", cluster="prod-eu-west", drill="true", time_scale="60")
            [outcome] = await _post(hook, sent)
            handle = dev_client.get_workflow_handle(outcome["incident"])

            state = await until(handle, lambda s: s.awaiting_human, "the incident to say it is not acting", 60)
            ends = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
            await _post(hook, sent | {"status": "resolved", "endsAt": ends})
            await handle.result()

    assert state.cluster == "prod-eu-west" and state.changes == []
    assert writes(simulator, since=before) == [], "nothing written on the worker's own cluster"
    posted = "\n".join(m.get("text", "") for m in slack_standin.messages("#incidents"))
    assert "cluster 'prod-eu-west' (label `cluster`) is served by no worker" in posted
    assert "served: east, west" in posted and "[prod-eu-west]" in posted


@pytest.fixture
async def quick_polls():
    """A dev server whose long polls end after 2 s, so an idle worker polls every ~2 s and a
    silence of a few seconds means no worker (production: a minute, and 150 s of silence)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES],
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", 'matching.longPollExpirationInterval="2s"'],
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def test_the_triggers_tell_on_call_when_a_cluster_has_no_worker_and_when_it_is_back(
    quick_polls: Client, slack_standin: SlackStandIn, slack_client
):
    client, tq = quick_polls, f"tq-{uuid.uuid4().hex[:8]}"
    settings = two_clusters(tq)
    settings = settings.model_copy(
        update={"clusters": settings.clusters.model_copy(update={"worker_silence_seconds": 8})}
    )
    watch = ClusterWatch(settings, lambda: _ready(client), slack_client, CollectorRegistry())
    async with Worker(client, task_queue=f"{tq}-east", workflows=[_Idle], workflow_runner=UnsandboxedWorkflowRunner()):
        async with in_process(settings, client) as hook:  # an incident of west that waits for a worker
            [waiting] = await _post(hook, am_alert("LLMDServiceDown", cluster="west"))

        async def west_gone() -> Any:
            seen = await watch.check()
            return seen if seen["west"] is False else None

        seen = await wait_for_async(west_gone, "west to count as having no worker", 60, every=1)
        assert seen["east"] is True, "east's idle worker keeps polling"
        told = [m["text"] for m in slack_standin.messages("#incidents")]
        assert len(told) == 1 and "No worker serves cluster `west`" in told[0] and f"{tq}-west" in told[0]
        assert waiting["incident"] in told[0], "the message names the incident that waits"
        await watch.check()
        assert len(slack_standin.messages("#incidents")) == 1, "told once, not at every check"
        desc = await client.get_workflow_handle(waiting["incident"]).describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING  # waits, durably

        async with Worker(
            client, task_queue=f"{tq}-west", workflows=[_Idle], workflow_runner=UnsandboxedWorkflowRunner()
        ):

            async def west_back() -> Any:
                seen = await watch.check()
                return seen if seen["west"] else None

            await wait_for_async(west_back, "west's worker to be seen", 60, every=1)
    back = [m["text"] for m in slack_standin.messages("#incidents")][1:]
    assert len(back) == 1 and "A worker serves cluster `west` again" in back[0]


async def _ready(client: Client) -> Client:
    return client


@workflow.defn(name="IdleForClusterWatch")
class _Idle:
    """Gives the watched workers something to serve."""

    @workflow.run
    async def run(self) -> None:
        return None
