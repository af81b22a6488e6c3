"""Paused Deployments behave as the API server, the deployment controller and kubectl make them.

- the simulator holds a paused Deployment's template (no new ReplicaSet, Progressing Unknown
  DeploymentPaused) and real kubectl refuses its restart and undo, as against a real cluster;
- the activities refuse the same way (`DeploymentPaused`, nothing written) and `rollout status`
  reads paused at once instead of waiting out its timeout;
- seed 001's service-down rollback of a paused Deployment: approved, refused, handed over, never
  "rolled back".
"""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube.deployments import KubeDeployments
from activities.kube.deployments_models import RestartRequest, RolloutUndo, RolloutWait
import simulator.scenarios  # noqa: F401 - registers the service-down faults (scenarios_service) first
from simulator.scenarios_service import BAD_IMAGE
from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.incident_queries import gate_asked, until
from tests.helpers.waiting import wait_for
from tests.helpers.service_down import CHANNEL, GATE, GOOD_IMAGE, NS, SERVICE, down_input, image, start
from worker.worker import build_worker
from workflows.incident.models import UPDATE_DECIDE, Decision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def pause(kube_api: k8s.ApiClient) -> None:
    k8s.AppsV1Api(kube_api).patch_namespaced_deployment(SERVICE, NS, {"spec": {"paused": True}})


def replica_sets(kube_api: k8s.ApiClient) -> set[str]:
    return {rs.metadata.name for rs in k8s.AppsV1Api(kube_api).list_namespaced_replica_set(NS).items}


def progressing(kube_api: k8s.ApiClient) -> tuple[str, str] | None:
    status = k8s.AppsV1Api(kube_api).read_namespaced_deployment_status(SERVICE, NS).status
    found = next((c for c in status.conditions or [] if c.type == "Progressing"), None)
    return (found.status, found.reason) if found else None


@pytest.mark.scenario("service-down:bad-rollout")
def test_a_paused_deployment_holds_its_template_and_kubectl_refuses_restart_and_undo(kube_api, kubectl):
    before = replica_sets(kube_api)
    kubectl("rollout", "pause", f"deployment/{SERVICE}", "-n", NS)
    assert wait_for(lambda: progressing(kube_api) == ("Unknown", "DeploymentPaused"), "the paused condition")
    kubectl("set", "image", f"deployment/{SERVICE}", f"vllm={GOOD_IMAGE}", "-n", NS)
    restart = kubectl("rollout", "restart", f"deployment/{SERVICE}", "-n", NS, check=False)
    undo = kubectl("rollout", "undo", f"deployment/{SERVICE}", "-n", NS, check=False)
    assert restart.returncode != 0 and "paused" in restart.stderr, restart.stderr
    assert undo.returncode != 0 and "paused" in undo.stderr, undo.stderr
    assert replica_sets(kube_api) == before, "no new ReplicaSet while paused"
    assert progressing(kube_api) == ("Unknown", "DeploymentPaused")

    kubectl("rollout", "resume", f"deployment/{SERVICE}", "-n", NS)
    assert wait_for(lambda: replica_sets(kube_api) - before, "the held template's ReplicaSet once resumed")


@pytest.mark.scenario("service-down:bad-rollout")
def test_the_activities_refuse_a_paused_deployment_and_rollout_status_reads_paused(simulator, kube_api):
    pause(kube_api)
    since = len(simulator.audit())
    deployments, env = KubeDeployments(kube_api), ActivityEnvironment()
    restart = RestartRequest(namespace=NS, name=SERVICE, restarted_at="2026-12-08T01:00:00Z", restarted_by="t/1")
    with pytest.raises(ApplicationError) as restart_refused:
        env.run(deployments.restart_deployment, restart)
    with pytest.raises(ApplicationError) as undo_refused:
        env.run(deployments.rollout_undo, RolloutUndo(namespace=NS, name=SERVICE, to_revision=1))
    for refused in (restart_refused.value, undo_refused.value):
        assert refused.type == "DeploymentPaused" and refused.non_retryable
        assert "is paused" in refused.message and "rollout resume" in refused.message
    assert writes(simulator, since=since) == [], "nothing written to a paused Deployment"
    assert image(kube_api) == BAD_IMAGE

    status = env.run(
        deployments.wait_for_rollout, RolloutWait(namespace=NS, name=SERVICE, timeout_seconds=600, poll_seconds=0.2)
    )
    assert status.paused and not status.complete and "paused" in status.message
    assert status.waited_seconds < 600, "a paused rollout is reported, not waited out"


@pytest.mark.scenario("service-down:bad-rollout")
async def test_an_approved_undo_of_a_paused_deployment_hands_over_and_never_says_rolled_back(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    pause(kube_api)
    since = len(simulator.audit())
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, down_input(), task_queue)
            await gate_asked(handle, GATE)
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))

            state = await until(
                handle, lambda s: s.status == "handed-over", "the hand-over of the paused Deployment", 30
            )
            await handle.terminate("test over")

    assert image(kube_api) == BAD_IMAGE and writes(simulator, since=since, name=SERVICE) == []
    assert state.failure is None and state.changes == []
    assert state.handed_over_to and "paused" in state.escalations[-1].reason
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert not [t for t in texts if "rolled back" in t], "nothing rolled"
    told = [t for t in texts if "Handed over" in t]
    assert told and "paused" in told[0] and "rollout resume" in told[0]
