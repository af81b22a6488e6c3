"""When things break: a bug in a playbook body, and a Slack that takes no page.

A playbook body that raises anything (not only a Temporal failure) must fail its step, mark the
incident failed and escalate in the same workflow task, never leave the task retrying forever.
A page Slack refuses after every retry is still an escalation: the level moves, the incident
says "paging failed", and the worker counts it for Prometheus.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import ClusterChange, writes_kept_on_failure
from activities.slack import SlackActivities
from standins.alertmanager import free_port
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import escalation_pages, incident_input
from tests.helpers.incident_playbooks import FailingFix, RaisesKeyError, TouchRequest, WaitForHumans
from tests.helpers.incident_queries import timeline_of, until
from tests.helpers.waiting import wait_for_async
from standins.slack import SlackStandIn
from workflows.incident.models import EscalationStep


async def test_a_bug_in_the_playbook_fails_the_incident_and_escalates(
    time_skipping: WorkflowEnvironment, task_queue: str
) -> None:
    slack = RecordingSlack()
    begin = await time_skipping.get_current_time()
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[RaisesKeyError],
        activities=slack.activities,
        disable_eager_activity_execution=True,
    ):
        handle = await time_skipping.client.start_workflow(
            RaisesKeyError.run, incident_input(begin), id=f"incident-{uuid.uuid4().hex[:12]}", task_queue=task_queue
        )
        # Automation failed: the incident waits for a human, so look before it ends.
        with time_skipping.auto_time_skipping_disabled():
            state = await until(handle, lambda s: s.status == "failed" and s.escalation_level == 1, "failed and paged")
            # the state shows the level as the page is sent; the page itself is the Slack activity, a moment later
            await wait_for_async(lambda: escalation_pages(slack), "the level-1 page")
        timeline = await timeline_of(handle)
        await handle.terminate("test over")

    assert state.failure == "KeyError: 'replica'"
    assert state.escalations[0].reason == "automation failed: KeyError: 'replica'"
    step = next(e for e in timeline if e.title == "Read the operator's settings")
    assert step.outcome == "failed: 'replica'"
    assert [p.arg.text.split("*")[1] for p in escalation_pages(slack)] == ["Escalation to Senior SRE"]


async def test_slack_down_still_escalates_records_paging_failed_and_counts_it(
    time_skipping: WorkflowEnvironment, task_queue: str, slack_standin: SlackStandIn
) -> None:
    slack_standin.fail_every(500)
    metrics_port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}")))
    client = await Client.connect(
        time_skipping.client.service_client.config.target_host, runtime=runtime, data_converter=pydantic_data_converter
    )
    slack = SlackActivities(
        AsyncWebClient(token="xoxb-test", base_url=slack_standin.base_url), default_channel="#incidents"
    )
    begin = await time_skipping.get_current_time()
    steps = [
        EscalationStep(after_minutes=1, notify="Senior SRE", level=1),
        EscalationStep(after_minutes=2, notify="Engineering team", level=2),
    ]
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[WaitForHumans],
        activities=[slack.post_incident, slack.post_in_thread, slack.request_approval, slack.update_message],
        disable_eager_activity_execution=True,
    ):
        handle = await client.start_workflow(
            WaitForHumans.run,
            incident_input(begin, escalation=steps),
            id=f"incident-{uuid.uuid4().hex[:12]}",
            task_queue=task_queue,
        )
        await time_skipping.sleep(timedelta(minutes=10))  # both marks pass; every Slack retry fails
        with time_skipping.auto_time_skipping_disabled():
            state = await until(handle, lambda s: len(s.paging_failures) == 2, "two paging failures")
            meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        await handle.terminate("test over")

    assert state.escalation_level == 2 and [e.level for e in state.escalations] == [1, 2]
    assert state.paging_failures[0].startswith("level 1 (Senior SRE)")
    assert "**paging failed**: level 1 (Senior SRE)" in meta.current_details
    counted = [line for line in scraped.splitlines() if line.startswith("runbooks_paging_failures")]
    assert counted and counted[0].endswith(" 2"), scraped[-2000:]
    assert len(slack_standin.calls()) > 2  # Slack was asked (and retried), it said 500


@activity.defn(name="touch_forbidden")
async def scale_two_then_forbidden(req: TouchRequest) -> list[ClusterChange]:
    """Stands in for a multi-write activity (delete_failed_pods, replace_claim): two writes, then a refusal."""
    made: list[ClusterChange] = []
    with writes_kept_on_failure(made, f"scale {req.name} and its canary"):
        for name in (req.name, f"{req.name}-canary"):
            made.append(
                ClusterChange(
                    action="scale",
                    kind="Deployment",
                    namespace="llm",
                    name=name,
                    field="spec.replicas",
                    before=1,
                    after=req.value,
                )
            )
        raise ApplicationError(f"deployments.apps {req.name!r} is forbidden", non_retryable=True)


async def test_writes_made_before_an_activity_failed_are_on_the_record(
    time_skipping: WorkflowEnvironment, task_queue: str
) -> None:
    slack = RecordingSlack()
    begin = await time_skipping.get_current_time()
    async with Worker(
        time_skipping.client,
        task_queue=task_queue,
        workflows=[FailingFix],
        activities=[*slack.activities, scale_two_then_forbidden],
        disable_eager_activity_execution=True,
    ):
        handle = await time_skipping.client.start_workflow(
            FailingFix.run, incident_input(begin), id=f"incident-{uuid.uuid4().hex[:12]}", task_queue=task_queue
        )
        with time_skipping.auto_time_skipping_disabled():
            state = await until(handle, lambda s: s.status == "failed", "failed")
        timeline = await timeline_of(handle)
        await handle.terminate("test over")

    assert [(c.name, c.before, c.after) for c in state.changes] == [("model", 1, 1), ("model-canary", 1, 1)]
    assert state.failure == "deployments.apps 'model' is forbidden"  # the root cause, for on-call
    recorded = [e for e in timeline if e.kind == "action" and e.title.startswith("scale Deployment")]
    assert len(recorded) == 2 and all("made before the activity failed" in e.details for e in recorded)
