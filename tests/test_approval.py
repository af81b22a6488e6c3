"""Approval gates on the time-skipping server: approve, reject, timeout (and escalate), refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError

from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import ServerClock, incident_input, incident_worker, start
from tests.helpers.incident_playbooks import GatedFix
from tests.helpers.incident_queries import until
from workflows.incident.models import UPDATE_DECIDE, Decision
from workflows.incident.search import INCIDENT_STATUS

pytestmark = pytest.mark.timeout(60)
APPROVERS = {"scale-up": ["alice", "bob"], "*": ["ic"]}


def decide(approved: bool, by: str = "alice", gate: str = "scale-up", comment: str | None = None) -> Decision:
    return Decision(gate=gate, approved=approved, by=by, comment=comment, via="cli")


async def accepted_updates(handle) -> int:
    history = await handle.fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED for e in history.events)


async def test_approved_gate_lets_the_playbook_act_and_is_recorded(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, GatedFix, incident_input(begin, approvers=APPROVERS), task_queue)
        state = await until(handle, lambda s: s.pending_gates)
        assert state.status == "awaiting-approval"
        assert [(g.gate, g.approvers) for g in state.pending_gates] == [("scale-up", ["alice", "bob"])]
        assert (await handle.describe()).typed_search_attributes.get(INCIDENT_STATUS) == "awaiting-approval"
        answer = await handle.execute_update(UPDATE_DECIDE, decide(True, comment="go ahead"))
        assert answer == "gate 'scale-up' approved by alice via cli"
        report = await handle.result()
    request = next(p.arg for p in slack.posted if p.method == "request_approval")
    assert (request.gate, request.destructive, request.approvers) == ("scale-up", True, ["alice", "bob"])
    closed = next(p.arg for p in slack.posted if p.method == "update_message")
    assert "approved by alice" in closed.text and "go ahead" in closed.text
    assert "| scale-up | Scale llm/model to 3 replicas? | approved by alice via cli |" in report
    assert "| 1 | scale | Deployment llm/model | spec.replicas | 2 | 3 | applied |" in report


async def test_rejected_gate_changes_nothing(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, GatedFix, incident_input(begin, approvers=APPROVERS), task_queue)
        await until(handle, lambda s: s.pending_gates)
        await handle.execute_update(UPDATE_DECIDE, decide(False, by="bob", comment="not during peak"))
        report = await handle.result()
    assert "rejected by bob via cli" in report and "not during peak" in report
    assert "No change was made to the cluster." in report
    assert "Resolved** by automation" in report and "left as is" in report


async def test_unanswered_gate_is_not_approved_and_escalates(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        inp = incident_input(clock.begin, approvers=APPROVERS, approval_timeout_minutes=3)
        handle = await start(time_skipping, GatedFix, inp, task_queue)
        report = await handle.result()  # the server skips the three minutes
        [gate] = (await until(handle, lambda s: True)).approvals
    escalation = next(p for p in slack.posted if ":escalation-1" in getattr(p.arg, "key", ""))
    # the gate's own deadline, three minutes after it was asked; the page as it passes
    assert gate.deadline - gate.requested_at == timedelta(minutes=3)
    clock.assert_at([escalation.at], [0], origin=gate.deadline)
    assert "approval 'scale-up' had no answer within 3m 0s" in escalation.text
    assert "not approved: no answer before the deadline" in report
    assert "No change was made to the cluster." in report


async def test_default_timeout_is_ten_minutes(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        handle = await start(time_skipping, GatedFix, incident_input(clock.begin), task_queue)
        state = await until(handle, lambda s: s.pending_gates)
        [gate] = state.pending_gates
        assert gate.deadline - gate.requested_at == timedelta(minutes=10)
        await handle.result()
    escalation = next(p for p in slack.posted if ":escalation-1" in getattr(p.arg, "key", ""))
    clock.assert_at([escalation.at], [0], origin=gate.deadline)


@pytest.mark.parametrize(
    ("decision", "reason"),
    [
        (decide(True, gate="drain-node"), "unknown gate 'drain-node'; gates waiting for a decision: scale-up"),
        (decide(True, by="mallory"), "'mallory' may not decide gate 'scale-up'; allowed: alice, bob"),
    ],
)
async def test_validator_refuses_and_nothing_enters_history(time_skipping, task_queue, decision, reason) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, GatedFix, incident_input(begin, approvers=APPROVERS), task_queue)
        await until(handle, lambda s: s.pending_gates)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(UPDATE_DECIDE, decision)
        assert reason in str(refused.value.cause)
        state = await until(handle, lambda s: True)
        assert state.pending_gates and state.approvals[0].decision is None
        assert await accepted_updates(handle) == 0
        await handle.execute_update(UPDATE_DECIDE, decide(False))
        await handle.result()


async def test_a_decided_gate_cannot_be_decided_again(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, GatedFix, incident_input(begin, approvers=APPROVERS), task_queue)
        await until(handle, lambda s: s.pending_gates)
        await handle.execute_update(UPDATE_DECIDE, decide(False, by="bob"))
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(UPDATE_DECIDE, decide(True, by="alice"))
        assert "gate 'scale-up' is already decided: rejected by bob via cli" in str(refused.value.cause)
        report = await handle.result()
    assert await accepted_updates(handle) == 1
    assert "approved by alice" not in report
