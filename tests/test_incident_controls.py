"""Human controls, search attributes, timeline and current details on the time-skipping server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from activities.kube.models import PodSummary
from activities.kube.pods_models import PodQuery
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import ServerClock, incident_input, incident_worker, start, update_admitted
from tests.helpers.incident_playbooks import ActEveryFiveMinutes, FailingFix, RegisterInRun, WaitForHumans
from tests.helpers.incident_queries import timeline_of, until
from tests.helpers.waiting import wait_for_async
from workflows.incident import search
from workflows.playbooks.catalog import workflow_type
from workflows.incident.models import (
    SIGNAL_ALERT_REPEATED,
    SIGNAL_ALERT_RESOLVED,
    SIGNAL_HUMAN_ACTION,
    UPDATE_HUMAN_ACTION,
    AlertRepeated,
    AlertResolved,
    EscalationStep,
    HumanAction,
)
from workflows.playbooks.triage.playbook import Triage

pytestmark = pytest.mark.timeout(60)


def act(action: str, by: str = "alice", note: str | None = None) -> HumanAction:
    return HumanAction(action=action, by=by, note=note)  # type: ignore[arg-type]


async def test_update_right_after_start_is_not_lost(time_skipping, task_queue) -> None:
    """The update rides in the first workflow task: handlers must exist before run() starts."""
    slack = RecordingSlack()
    begin = await time_skipping.get_current_time()
    handle = await start(time_skipping, WaitForHumans, incident_input(begin), task_queue)
    early = await start(time_skipping, RegisterInRun, incident_input(begin), task_queue)
    # No worker yet: once the server holds both updates, each rides in its workflow's first task.
    ack = asyncio.create_task(handle.execute_update(UPDATE_HUMAN_ACTION, act("acknowledge"), id="ack"))
    too_early = asyncio.create_task(early.execute_update(UPDATE_HUMAN_ACTION, act("acknowledge"), id="ack"))
    await update_admitted(time_skipping, handle, "ack")
    await update_admitted(time_skipping, early, "ack")
    async with incident_worker(time_skipping, task_queue, slack):
        assert await ack == "acknowledged by alice"
        with pytest.raises(WorkflowUpdateFailedError) as lost:
            await too_early
        assert "expected but not found" in str(lost.value.cause)
        for h in (handle, early):
            await h.execute_update(UPDATE_HUMAN_ACTION, act("resolve", note="done"))
        # Nothing here needs virtual time. Awaiting a result lets the server's clock run for every
        # workflow on it, so waiting on one while the other was open fired its escalation marks.
        with time_skipping.auto_time_skipping_disabled():
            for h in (handle, early):
                await h.result()


async def test_search_attributes_and_current_details_stay_current(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, incident_input(begin, namespace="llm"), task_queue)
        await until(handle, lambda s: s.slack_thread is not None)
        sa = (await handle.describe()).typed_search_attributes
        assert [
            sa.get(k)
            for k in (
                search.RUNBOOK,
                search.INCIDENT_SEVERITY,
                search.INCIDENT_STATUS,
                search.ALERT_NAME,
                search.ESCALATION_LEVEL,
                search.TARGET_NAMESPACE,
            )
        ] == ["test-outage", "P0", "open", "LLMDServiceDown", 0, "llm"]
        await handle.execute_update(UPDATE_HUMAN_ACTION, act("acknowledge"))
        await time_skipping.sleep(timedelta(minutes=16))
        sa = (await handle.describe()).typed_search_attributes
        assert (sa.get(search.INCIDENT_STATUS), sa.get(search.ESCALATION_LEVEL)) == ("acknowledged", 1)
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "**P0 Test outage** — acknowledged" in meta.current_details
        assert "escalation: level 1, Senior SRE" in meta.current_details
        await handle.execute_update(UPDATE_HUMAN_ACTION, act("resolve", by="bob", note="restarted by hand"))
        report = await handle.result()
        assert (await handle.describe()).typed_search_attributes.get(search.INCIDENT_STATUS) == "resolved"
    assert "| Time to acknowledge | " in report and "(alice)" in report
    assert "Resolved** by bob" in report and "restarted by hand" in report
    assert slack.matching("Resolved* by bob: restarted by hand")
    assert slack.texts()[-1].startswith("# Incident report: Test outage (P0)")  # the report goes to the thread


async def test_acknowledge_note_and_refusals(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, incident_input(begin), task_queue)
        await handle.execute_update(UPDATE_HUMAN_ACTION, act("acknowledge"))
        with pytest.raises(WorkflowUpdateFailedError) as again:
            await handle.execute_update(UPDATE_HUMAN_ACTION, act("acknowledge", by="bob"))
        assert "already acknowledged by alice" in str(again.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(UPDATE_HUMAN_ACTION, act("note"))  # a note needs text
        await handle.execute_update(UPDATE_HUMAN_ACTION, act("note", by="bob", note="operator logs show OOM"))
        await handle.signal(SIGNAL_HUMAN_ACTION, act("acknowledge", by="carol"))  # signals can't be refused
        await handle.signal(SIGNAL_ALERT_REPEATED, AlertRepeated(received_at=begin))
        await handle.signal(SIGNAL_ALERT_REPEATED, AlertRepeated(received_at=begin))
        state = await until(handle, lambda s: s.alert_repeats == 2)
        assert (state.status, state.acknowledged_by) == ("acknowledged", "alice")
        timeline = await timeline_of(handle)
        titles = [(e.kind, e.title, e.outcome, e.by) for e in timeline]
        assert ("human", "note", "operator logs show OOM", "bob") in titles
        assert ("human", "acknowledge ignored", "already acknowledged by alice", "carol") in titles
        assert any(e.title == "alert notification repeated" and e.outcome.startswith("2 repeat(s)") for e in timeline)
        assert slack.matching("*bob*: operator logs show OOM")
        await handle.signal(SIGNAL_HUMAN_ACTION, act("resolve", note="done"))
        await handle.result()


async def test_hand_over_stops_automation_but_not_escalation(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, ActEveryFiveMinutes, incident_input(begin), task_queue)
        await until(handle, lambda s: len(s.changes) == 1)
        answer = await handle.execute_update(UPDATE_HUMAN_ACTION, act("hand-over", by="dave", note="I have it"))
        assert answer == "handed over to dave"
        await time_skipping.sleep(timedelta(minutes=16))
        state = await until(handle, lambda s: s.escalation_level == 1)
        assert (state.status, len(state.changes)) == ("handed-over", 1)
        timeline = await timeline_of(handle)
        skipped = [e.title for e in timeline if e.kind == "action" and (e.outcome or "").startswith("skipped")]
        assert skipped == ["scale to 2", "scale to 3"]
        steps = [e for e in timeline if e.kind == "step"]
        assert all(e.ended_at and e.ended_at >= e.started_at and e.outcome == "done" for e in steps)
        await handle.execute_update(UPDATE_HUMAN_ACTION, act("resolve", by="dave", note="rolled back by hand"))
        report = await handle.result()
    assert report.count("| scale | Deployment llm/model |") == 1
    assert "skipped: handed over to dave" in report


async def test_failed_automation_marks_failed_and_escalates_at_once(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        handle = await start(time_skipping, FailingFix, incident_input(clock.begin), task_queue)
        state = await until(handle, lambda s: s.status == "failed" and s.escalation_level == 1, "failed and paged")
        assert "forbidden" in state.failure
        # the state shows the level as the page is sent; the page itself is the Slack activity, a moment later
        escalation = await wait_for_async(
            lambda: next((p for p in slack.posted if ":escalation-1" in getattr(p.arg, "key", "")), None), "the page"
        )
        clock.assert_at([escalation.at], [0])  # at once: no timer between the failure and the page
        await handle.execute_update(UPDATE_HUMAN_ACTION, act("resolve", note="fixed RBAC"))
        report = await handle.result()
    assert "failed: deployments.apps 'model' is forbidden" in report


@activity.defn(name="list_pods")
async def fake_list_pods(query: PodQuery) -> list[PodSummary]:
    return [
        PodSummary(
            namespace=query.namespace or "",
            name="vllm-0",
            phase="Running",
            ready=False,
            ready_containers=0,
            containers=1,
            restarts=7,
            reason="CrashLoopBackOff",
        ),
        PodSummary(
            namespace=query.namespace or "",
            name="vllm-1",
            phase="Running",
            ready=True,
            ready_containers=1,
            containers=1,
            restarts=0,
        ),
    ]


async def test_triage_notifies_with_context_and_ends_when_the_alert_resolves(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack, activities=[fake_list_pods]):
        begin = await time_skipping.get_current_time()
        # P0: triage has no SOP marks of its own, so the severity's apply (seed 001: 15 min; seed 003: Secondary).
        inp = incident_input(begin, runbook="triage", namespace="llm", severity="P0")
        handle = await start(time_skipping, Triage, inp, task_queue)
        await until(handle, lambda s: s.current_step == "Wait for the alert to resolve")
        await time_skipping.sleep(timedelta(minutes=16))  # unresolved: escalates at the P0 mark
        await handle.signal(SIGNAL_ALERT_RESOLVED, AlertResolved(ends_at=await time_skipping.get_current_time()))
        report = await handle.result()
    texts = slack.texts()
    assert any("No playbook handles `LLMDServiceDown`" in t and "`namespace=llm`" in t for t in texts)
    assert any("`vllm-0` 0/1 CrashLoopBackOff restarts=7" in t for t in texts)
    assert len(slack.matching("Escalation to Secondary")) == 1
    assert "Resolved** by automation" in report and "the alert resolved in Alertmanager" in report


async def test_bad_escalation_input_fails_the_incident_with_a_reason(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        steps = [
            EscalationStep(after_minutes=10, notify="Senior SRE", level=1),
            EscalationStep(after_minutes=10, notify="Engineering team", level=2),
        ]
        handle = await start(time_skipping, WaitForHumans, incident_input(begin, escalation=steps), task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "invalid escalation in the incident input: escalation marks must rise" in str(failed.value.cause)
    assert slack.posted == []  # nothing was said or done


def test_catalog_maps_runbooks_to_workflow_types() -> None:
    assert workflow_type("service-outage") == "ServiceOutage"
    assert workflow_type("triage") == Triage.__name__
    with pytest.raises(ValueError, match="no playbook named 'nope'; known: "):
        workflow_type("nope")
