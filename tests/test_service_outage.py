"""SOP-001 end to end: the real Temporal dev server, the worker in-process, the simulated
cluster in its `service-outage` fault and the Slack Web API stand-in.

Set RUNBOOKS_SAVE_HISTORIES=1 to (re)write tests/histories/service_outage_*.json from this run, the
histories tests/test_replay.py replays against the current workflow code.
"""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import gate_asked, state_of, timeline_of
from tests.helpers.service_outage import (
    CHANNEL,
    FAST,
    OPERATOR,
    OPERATOR_NS,
    assert_healed_with_each_remedy_once,
    llm_deployments,
    outage_input,
    restarts_by_deployment,
    set_health_url,
)
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.incident.models import (
    Decision,
    RollbackRequest,
    SIGNAL_ROLLBACK,
    UPDATE_DECIDE,
)
from workflows.playbooks.service_outage.models import (
    GATE_MAINTENANCE,
    GATE_OPERATOR_ROLLBACK,
)
from workflows.playbooks.service_outage.playbook import ServiceOutage

pytestmark = pytest.mark.integration

SOP_STEPS = [
    "1. Acknowledge and communicate",
    "2. Quick health check",
    "3. Identify scope",
    "4. Apply standard fixes",
    "5. Enable maintenance mode (if needed)",
    "Verification",
]


@pytest.mark.scenario("service-outage")
async def test_sop_001_heals_the_outage(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    failed = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in llm_deployments(kube_api)}
    assert failed and all(d["status"]["phase"] != "Ready" for d in llm_deployments(kube_api))
    inp = outage_input()

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                ServiceOutage.run, inp, id=f"service-outage-{inp.alert.fingerprint}", task_queue=task_queue
            )
            report = await handle.result()
            timeline = await timeline_of(handle)
            state = await state_of(handle)
    await save_history(handle, "service_outage_heals")

    # the cluster is healed, each remedy applied exactly once, nothing else touched
    assert_healed_with_each_remedy_once(simulator, kube_api, failed)

    # the SOP's steps, in the SOP's order
    steps = [e.title for e in timeline if e.kind == "step"]
    assert steps == SOP_STEPS
    assert state.status == "resolved" and state.resolved_by == "automation"

    # Slack heard the acknowledgement, the scope, the operator logs and the resolution, in the thread
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("P0 INCIDENT: LLM service outage" in t and "Incident Commander: alice" in t for t in texts)
    assert any(f"{len(failed)} of {len(failed)} LLMDeployments not Ready" in t for t in texts)
    assert any("Operator logs" in t and "```" in t for t in texts)
    assert any("Resolved" in t for t in texts)
    first = slack_standin.messages(CHANNEL)[0]
    assert all(m.get("thread_ts") == first["ts"] for m in slack_standin.messages(CHANNEL)[1:])

    # the report lists every action with the value it replaced and the one it set
    assert len(state.changes) == 1 + len(failed)
    for change in state.changes:
        assert change.applied and change.after
        assert f"{change.namespace}/{change.name}" in report
        assert str(change.after) in report
        assert change.finding and change.finding in report  # the finding of this run that justified it
    assert "restart deployment" in report
    operator = next(c for c in state.changes if c.name == OPERATOR)
    # the pod as step 2 saw it: crash-looping, exited, or back up but not Ready between two crashes (SOP-001's "0/1 Running")
    assert "operator pod" in operator.finding and any(
        word in operator.finding for word in ("CrashLoopBackOff", "Error", "0/1 Running")
    )
    for change in state.changes:
        if change.name != OPERATOR:
            assert change.finding.startswith(f"LLMDeployment {change.namespace}/{change.name} ")


@pytest.mark.scenario("service-outage")
async def test_sop_001_maintenance_mode_and_rollback_after_approval(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    """The restarts don't bring one model's health endpoint back: maintenance mode and the
    operator revert happen only once approved, and the maintenance page goes once service is back."""
    client: Client = temporal_dev.client
    failed = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in llm_deployments(kube_api)}
    healthy_url = set_health_url(kube_api, "production", "mistral-7b", "http://127.0.0.1:9/health")  # refused
    timings = FAST.model_copy(update={"restart_grace_seconds": 4, "verification_timeout_seconds": 4})
    inp = outage_input(timings=timings, operator_previous_image="llm-d/operator:v0.4.0", approvers={"*": ["alice"]})

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                ServiceOutage.run, inp, id=f"service-outage-{inp.alert.fingerprint}", task_queue=task_queue
            )
            await gate_asked(handle, GATE_MAINTENANCE)
            assert not [e for e in writes(simulator) if e.resource == "ingresses"], "not before approval"
            await handle.execute_update(
                UPDATE_DECIDE, Decision(gate=GATE_MAINTENANCE, approved=True, by="alice", via="cli")
            )

            await gate_asked(handle, GATE_OPERATOR_ROLLBACK)
            ingress = k8s.NetworkingV1Api(kube_api).read_namespaced_ingress("maintenance-mode", "default")
            assert ingress.metadata.annotations["nginx.ingress.kubernetes.io/default-backend"] == "maintenance-service"
            set_health_url(kube_api, "production", "mistral-7b", healthy_url)  # the network team's fix lands
            await handle.execute_update(
                UPDATE_DECIDE, Decision(gate=GATE_OPERATOR_ROLLBACK, approved=True, by="alice", comment="go", via="cli")
            )
            report = await handle.result()
            state = await state_of(handle)
    await save_history(handle, "service_outage_maintenance_and_rollback")

    assert state.status == "resolved"
    assert restarts_by_deployment(simulator) == {(OPERATOR_NS, OPERATOR): 1, **{key: 1 for key in failed}}
    written = [(e.resource, e.verb) for e in writes(simulator) if e.resource != "services"]
    assert written.count(("ingresses", "create")) == 1 and written.count(("ingresses", "delete")) == 1
    image = (
        k8s.AppsV1Api(kube_api).read_namespaced_deployment(OPERATOR, OPERATOR_NS).spec.template.spec.containers[0].image
    )
    assert image == "llm-d/operator:v0.4.0"
    with pytest.raises(k8s.ApiException):
        k8s.NetworkingV1Api(kube_api).read_namespaced_ingress("maintenance-mode", "default")

    actions = [(c.action, c.name, c.before, c.after) for c in state.changes if c.action != "restart deployment"]
    assert actions[0][:2] == ("apply ingress", "maintenance-mode") and actions[0][2] is None
    assert actions[1] == ("set image", OPERATOR, "llm-d/operator:v0.5.0", "llm-d/operator:v0.4.0")
    assert actions[2][:2] == ("delete ingress", "maintenance-mode") and actions[2][3] is None
    assert [(g.gate, g.decision.by) for g in state.approvals] == [
        (GATE_MAINTENANCE, "alice"),
        (GATE_OPERATOR_ROLLBACK, "alice"),
    ]
    assert "llm-d/operator:v0.4.0" in report and "maintenance-mode" in report


@pytest.mark.scenario("service-outage")
async def test_rollback_on_request_skips_maintenance_and_reverts_the_operator_after_approval(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    healthy_url = set_health_url(kube_api, "production", "mistral-7b", "http://127.0.0.1:9/health")
    timings = FAST.model_copy(update={"restart_grace_seconds": 60})  # still waiting when the request comes
    inp = outage_input(timings=timings, operator_previous_image="llm-d/operator:v0.4.0")

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                ServiceOutage.run, inp, id=f"service-outage-{inp.alert.fingerprint}", task_queue=task_queue
            )
            await wait_for_async(lambda: len(restarts_by_deployment(simulator)) == 4, "the four restarts")
            await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="bob", reason="v0.5.0 is bad"))
            await gate_asked(handle, GATE_OPERATOR_ROLLBACK)
            set_health_url(kube_api, "production", "mistral-7b", healthy_url)
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE_OPERATOR_ROLLBACK, approved=True, by="alice"))
            await handle.result()
            state = await state_of(handle)
            timeline = await timeline_of(handle)
    await save_history(handle, "service_outage_rollback_on_request")

    assert state.status == "resolved"
    assert [g.gate for g in state.approvals] == [GATE_OPERATOR_ROLLBACK], "no maintenance mode once rollback is asked"
    assert not [e for e in writes(simulator) if e.resource == "ingresses"]
    assert [(c.action, c.before, c.after) for c in state.changes if c.action == "set image"] == [
        ("set image", "llm-d/operator:v0.5.0", "llm-d/operator:v0.4.0")
    ]
    rollback = next(e for e in timeline if e.kind == "step" and e.title == "Rollback")
    assert any("requested by bob" in d for d in rollback.details)


async def test_a_succeeded_pod_in_the_operator_namespace_is_not_an_unhealthy_operator(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    """In the field, a finished hook pod in llm-d-system (Succeeded, 0/1 Ready) made SOP-001 restart a healthy operator."""
    client: Client = temporal_dev.client
    core = k8s.CoreV1Api(kube_api)
    hook = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "llm-d-crd-upgrade", "namespace": OPERATOR_NS, "labels": {"app": "llm-d-crd-upgrade"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeName": "gpu-node-1",
            "containers": [{"name": "upgrade", "image": "llm-d/operator:v0.5.0", "command": ["nvidia-smi"]}],
        },
    }
    core.create_namespaced_pod(OPERATOR_NS, hook)

    def finished() -> bool:
        return core.read_namespaced_pod("llm-d-crd-upgrade", OPERATOR_NS).status.phase == "Succeeded"

    await wait_for_async(finished, "the hook pod to finish")
    before = len(simulator.audit())
    inp = outage_input()
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(
                ServiceOutage.run, inp, id=f"service-outage-{inp.alert.fingerprint}", task_queue=task_queue
            )

            async def looked() -> IncidentState | None:
                state = await state_of(handle)
                return state if state.nothing_found else None

            state = await wait_for_async(looked, "nothing wrong found", timeout=60)
            await handle.terminate("test over")

    assert simulator.audit()[before:] == [], "no write: the Succeeded pod is not an unhealthy operator pod"
    assert state.changes == [] and "llm-d-crd-upgrade 0/1 Succeeded" in state.nothing_found
