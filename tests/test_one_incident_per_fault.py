"""One incident per fault, through the webhook with a worker acting on the simulator.

Alertmanager sends one alert per instance of a fault, sends each again every `repeat_interval`
and from both HA peers. However they arrive, they are one incident of the fault's scope: one
playbook run, one operator restart, every alert on its timeline; the incident is resolved by
alert only once the last of them resolves. And an alert that was handled before (its incident
closed, even one that retention has since removed) or that resolved before its firing arrived
never runs a playbook again: the coordinator's alert ledger knows it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import pytest_asyncio
from kubernetes import client as k8s
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from tests.helpers.audit import writes
from tests.helpers.fixtures_temporal import installed_binary
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import gate_asked, state_of, timeline_of
from tests.helpers.service_outage import (
    OPERATOR,
    OPERATOR_NS,
    llm_deployments,
    restarts_by_deployment,
    set_health_url,
)
from tests.helpers.waiting import wait_for_async
from tests.helpers.webhook_stack import alert, incident_of, notify, resolved, webhook_and_worker
from temporalio.api.enums.v1 import EventType

from workflows.incident import search
from workflows.incident.search import SEARCH_ATTRIBUTES
from workflows.playbooks.service_outage.models import GATE_MAINTENANCE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

INSTANCES = [f"10.0.4.{i}:8000" for i in range(11, 16)]


def actions(outcomes: list[dict]) -> list[str]:
    return [o["action"] for o in outcomes]


@pytest.mark.scenario("service-outage")
async def test_five_instances_of_one_outage_are_one_incident_resolved_by_the_last_alert(
    dev_client: Client, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client
):
    # One model's health endpoint stays down after the restarts, so SOP-001 is still open (at its
    # maintenance gate) when the alerts resolve.
    set_health_url(kube_api, "production", "mistral-7b", "http://127.0.0.1:9/health")
    starts = datetime.now(timezone.utc) - timedelta(minutes=1)
    alerts = [alert("LLMDServiceDown", starts, instance=i) for i in INSTANCES]  # differ only in `instance`
    incident = incident_of(task_queue, "service-outage")
    handle = dev_client.get_workflow_handle(incident)

    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        first = await notify(hook, *alerts[:2])
        second = await notify(hook, *alerts[2:])
        peer = await notify(hook, *alerts)  # the HA peer: the whole group in one notification
        run_id = (await handle.describe()).run_id

        assert sorted(actions(first)) == ["joined", "started"]
        assert actions(second) == ["joined"] * 3 and actions(peer) == ["joined"] * 5
        assert {o["incident"] for o in first + second + peer} == {incident}

        state = await gate_asked(handle, GATE_MAINTENANCE, 45)
        assert sorted(a.labels["instance"] for a in state.alerts) == INSTANCES
        assert all(a.firing for a in state.alerts)
        # The peer's five copies are the only repeats (the start's own signal is not one).
        assert [a.repeats for a in state.alerts] == [1] * 5 and state.alert_repeats == 5

        # Four of the five resolve: the fault is not gone, the incident stays open at its gate.
        assert actions(await notify(hook, *(resolved(a) for a in alerts[:4]))) == ["resolve-signalled"] * 4

        async def four_resolved():
            s = await state_of(handle)
            return s if sum(not a.firing for a in s.alerts) == 4 else None

        state = await wait_for_async(four_resolved, "four alerts resolved on the incident")
        assert state.fault_gone_at is None and state.status == "awaiting-approval"
        assert [g.gate for g in state.pending_gates] == [GATE_MAINTENANCE]

        # The fifth resolves it.
        assert actions(await notify(hook, resolved(alerts[4]))) == ["resolve-signalled"]
        await asyncio.wait_for(handle.result(), timeout=60)
        state = await state_of(handle)
        timeline = await timeline_of(handle)

    assert (await handle.describe()).run_id == run_id
    assert (await dev_client.count_workflows(f'WorkflowId = "{incident}"')).count == 1
    assert state.status == "resolved" and state.resolved_by == "alertmanager"
    assert state.fault_gone_at is not None and not any(a.firing for a in state.alerts)
    assert restarts_by_deployment(simulator)[(OPERATOR_NS, OPERATOR)] == 1, "one operator restart for five alerts"

    # The five alerts on the timeline: the one that opened it and four that joined, each naming its instance.
    opened = [
        e for e in timeline if e.kind == "alert" and e.title == "LLMDServiceDown firing: LLMDServiceDown in tests"
    ]
    joined = [e for e in timeline if e.kind == "alert" and e.title.startswith("LLMDServiceDown joined")]
    assert len(opened) == 1 and len(joined) == 4
    assert sum(any(f"instance={i}" in (e.outcome or "") for e in joined) for i in INSTANCES) == 4
    assert len([e for e in timeline if e.kind == "alert" and "resolved (from alertmanager)" in e.title]) == 5
    gone = [e for e in timeline if e.title == "every alert of the scope resolved: the fault is gone"]
    assert len(gone) == 1
    await save_history(handle, "service_outage_five_alerts_one_incident")


async def test_the_first_page_is_asked_for_in_the_incidents_first_workflow_task(
    dev_client: Client, task_queue: str, kube_api: k8s.ApiClient, slack_client
):
    """Opening an incident costs one workflow task before its Slack announcement: the alert ledger is
    asked inside that task (a local activity) and what the webhook indexed at start is not upserted
    again (bench/incident_cost.py measures what this saves)."""
    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        unknown = alert("BenchNoPlaybookForThis", datetime.now(timezone.utc))
        unknown["labels"].pop("namespace")
        outcome = await notify(hook, unknown)
        handle = dev_client.get_workflow_handle(outcome[0]["incident"])

        async def announced():
            events = (await handle.fetch_history()).events
            return events if any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED for e in events) else None

        events = await wait_for_async(announced, "the announcement posted")
        described = await handle.describe()
    assert outcome[0]["action"] == "started" and outcome[0]["incident"].startswith(f"{task_queue}.triage--")
    first_task_end = next(
        i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    second_task_end = next(
        (
            i
            for i, e in enumerate(events)
            if i > first_task_end and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        ),
        len(events),
    )
    first_task = events[first_task_end:second_task_end]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in first_task
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["post_incident"], scheduled
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in first_task
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers == ["core_local_activity"], markers  # the ledger's answer; no patch markers
    upserted = {
        key
        for e in first_task
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        for key in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    }
    assert not upserted, upserted
    assert described.typed_search_attributes.get(search.INCIDENT_SEVERITY) == "P2"  # triage's default, at start


@pytest_asyncio.fixture(loop_scope="session")
async def retention_server():
    """A dev server that deletes a closed run at once when asked (as retention does, only sooner):
    by default it waits for its transfer queue's ack level, about a minute."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES],
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", "history.transferProcessorEnsureCloseBeforeDelete=false"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def _deleted(client: Client, workflow_id: str) -> None:
    """What the namespace's retention does to a closed run: it is gone from the server."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )

    async def gone() -> bool:
        try:
            await client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            return err.status == RPCStatusCode.NOT_FOUND
        return False

    await wait_for_async(gone, f"{workflow_id} deleted")


@pytest.mark.scenario("service-outage")
async def test_a_repeat_of_an_alert_whose_incident_closed_never_runs_the_playbook_again(
    retention_server, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client
):
    dev_client: Client = retention_server.client
    outage = alert("LLMDServiceDown", datetime.now(timezone.utc) - timedelta(minutes=1))
    incident = incident_of(task_queue, "service-outage")
    handle = dev_client.get_workflow_handle(incident)

    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        assert actions(await notify(hook, outage)) == ["started"]
        await asyncio.wait_for(handle.result(), timeout=60)  # SOP-001 heals the outage and closes
        assert (await state_of(handle)).resolved_by == "automation"
        healed_writes = len(simulator.audit())
        assert restarts_by_deployment(simulator)[(OPERATOR_NS, OPERATOR)] == 1

        await _deleted(dev_client, incident)
        simulator.inject("service-outage")  # a run now would find an outage and restart the operator again
        assert any(d["status"]["phase"] != "Ready" for d in llm_deployments(kube_api))
        # Alertmanager's repeat_interval (or a replayed notification) sends the very same alert.
        assert actions(await notify(hook, outage)) == ["started"]
        await asyncio.wait_for(handle.result(), timeout=30)
        state = await state_of(handle)
        timeline = await timeline_of(handle)

    assert state.status == "resolved" and state.resolved_by == "alert ledger"
    assert "already handled by incident" in (state.resolution or "") and incident in state.resolution
    assert [e for e in timeline if e.kind in ("step", "action", "approval")] == []
    assert writes(simulator, since=healed_writes, dry_runs=True, probes=False) == [], (
        "the repeat ran the playbook again"
    )


@pytest.mark.scenario("service-outage")
async def test_a_resolved_notification_before_its_firing_leaves_nothing_acting(
    dev_client: Client, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_client
):
    outage = alert("LLMDServiceDown", datetime.now(timezone.utc) - timedelta(minutes=1))
    incident = incident_of(task_queue, "service-outage")
    handle = dev_client.get_workflow_handle(incident)

    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        # Out of order (a retry of the firing notification lands after the resolved one).
        assert actions(await notify(hook, resolved(outage))) == ["resolved-no-incident"]
        assert actions(await notify(hook, outage)) == ["started"]
        await asyncio.wait_for(handle.result(), timeout=30)
        state = await state_of(handle)
        timeline = await timeline_of(handle)

    assert state.status == "resolved" and state.resolved_by == "alert ledger"
    assert "resolved before its firing arrived" in (state.resolution or "")
    assert [e for e in timeline if e.kind in ("step", "action", "approval")] == []
    assert writes(simulator, dry_runs=True, probes=False) == [], "a resolved alert made the playbook act"
    await save_history(handle, "service_outage_resolved_before_firing")
