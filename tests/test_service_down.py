"""Seed 001's service-down runbook end to end: the real Temporal dev server, the worker in process,
the simulated cluster with production/llm-d-decode down, the Slack stand-in.

- bad rollout: the recent revision named, nothing written before a human approves the undo, the
  Deployment rolled back once, health and an inference request pass, the fault heals;
- hung pods (no rollout): the unready pods deleted once each, no gate, healed;
- rollback on request: the undo undone, back to the recorded revision's template;
- routing: LLMModelNotResponding of one service is this playbook's, one incident per service;
  LLMDServiceDown stays SOP-001's.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

import simulator.scenarios  # noqa: F401 - registers the service-down faults (scenarios_service) first
from simulator.scenarios_service import BAD_IMAGE
from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.service_down import (
    CHANNEL,
    GATE,
    GOOD_IMAGE,
    NS,
    SERVICE,
    deployment_patches,
    down_input,
    image,
    start,
)
from tests.helpers.incident_queries import gate_asked, state_of, step_done, timeline_of
from settings.routes import default_routes
from worker.worker import build_worker
from workflows.incident.models import SIGNAL_ROLLBACK, UPDATE_DECIDE, Decision, RollbackRequest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HISTORIES = Path(__file__).parent / "histories"


def test_routing_one_service_here_the_whole_service_to_sop_001():
    routes = default_routes()
    assert (routes["LLMModelNotResponding"].runbook, routes["LLMModelNotResponding"].severity) == ("service-down", "P0")
    assert routes["LLMDServiceDown"].runbook == "service-outage"
    from workflows.playbooks.catalog import playbook

    scope = playbook("service-down").scope
    a = scope.of({"namespace": NS, "service": SERVICE, "instance": "10.0.0.1:8000"}, group_key=None, fingerprint="a")
    b = scope.of({"namespace": NS, "service": SERVICE, "instance": "10.0.0.2:8000"}, group_key=None, fingerprint="b")
    c = scope.of({"namespace": NS, "service": "llm-d-prefill"}, group_key=None, fingerprint="c")
    assert a.key == b.key == f"{NS}/{SERVICE}" and c.key != a.key


@pytest.mark.scenario("service-down:bad-rollout")
async def test_bad_rollout_is_undone_after_approval_and_validated(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    assert image(kube_api) == BAD_IMAGE
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, down_input(), task_queue)
            asked = await gate_asked(handle, GATE)
            assert deployment_patches(simulator) == [], "nothing written before the approval"
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))
            report = await handle.result()
            state = await state_of(handle)
            timeline = await timeline_of(handle)
            if os.environ.get("RUNBOOKS_SAVE_HISTORIES"):
                (HISTORIES / "service_down_bad_rollout.json").write_text((await handle.fetch_history()).to_json())

    (gate,) = asked.pending_gates
    assert "revision 2" in gate.question and BAD_IMAGE in gate.question and "--to-revision=1" in gate.question
    assert [e.title for e in timeline if e.kind == "step"] == [
        "1. Verify outage scope",
        "2. Check recent changes",
        "3. Check infrastructure health",
        "Immediate rollback",
        "Validation",
    ]
    assert state.status == "resolved" and state.resolved_by == "automation"
    assert "HTTP 200" in state.resolution and "chat/completions" in state.resolution

    # healed by the one remedy: one patch of the Deployment, its template back to revision 1's
    assert simulator.behaviour.active_faults() == []
    assert image(kube_api) == GOOD_IMAGE
    assert len(deployment_patches(simulator)) == 1
    assert not [e for e in writes(simulator) if e.resource == "pods" and e.verb == "delete"]
    (change,) = state.changes
    assert (change.action, change.field) == ("rollout undo", "spec.template")
    assert change.before == f"revision 2 (vllm={BAD_IMAGE})" and change.after == f"revision 1 (vllm={GOOD_IMAGE})"
    assert "CrashLoopBackOff" in change.finding and "revision 2" in change.finding
    assert change.before in report and change.after in report
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any("Recent changes" in t and "revision 2" in t for t in texts)


@pytest.mark.scenario("service-down:hung-pods")
async def test_hung_pods_are_deleted_once_each_without_a_gate(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, down_input(), task_queue)
            await handle.result()
            state = await state_of(handle)

    assert state.status == "resolved" and state.approvals == []
    assert simulator.behaviour.active_faults() == []
    deleted = Counter(e.name for e in writes(simulator) if e.resource == "pods" and e.verb == "delete")
    assert len(deleted) == 2 and set(deleted.values()) == {1}, deleted
    assert deployment_patches(simulator) == []
    assert {c.name for c in state.changes} == set(deleted) and all("not Ready" in c.finding for c in state.changes)


@pytest.mark.scenario("service-down:bad-rollout")
async def test_rollback_on_request_restores_the_recorded_revision(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, down_input(), task_queue)
            await gate_asked(handle, GATE)
            await handle.execute_update(UPDATE_DECIDE, Decision(gate=GATE, approved=True, by="alice"))
            await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="v0.6.4 is needed, fix forward"))

            state = await step_done(handle, "Rollback")
            await handle.terminate("test over")

    assert image(kube_api) == BAD_IMAGE, "back to the template the incident found"
    assert len(deployment_patches(simulator)) == 2
    undo, back = [c for c in state.changes if c.kind == "Deployment"]
    assert back.after.startswith("revision 2 (") and BAD_IMAGE in back.after and "rollback" in back.finding
