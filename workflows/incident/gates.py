"""Approval gates of one incident: asked in Slack (and the CLI, the UI), answered once, by someone allowed.

A gate that gets no answer in time is "not approved" and escalates; a gate still open when the
fault goes away (every alert resolved), the incident is handed over or resolved is withdrawn,
and its Slack message says so. Decisions arrive through HumanControls (the `decide` Update).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

from workflows.incident.approval import ApprovalGate, allowed_approvers, gate_name
from workflows.incident.guard import Guard
from workflows.incident.report import duration
from workflows.incident.slack import IncidentSlack
from workflows.incident.state import IncidentState, StatusBoard
from workflows.incident.timeline import Journal


class IncidentGates:
    """The gates of one incident, by name (`gates`, shared with the board and the controls).
    `approvers` is IncidentInput.approvers; `escalate` pages the next level (a gate timed out)."""

    def __init__(
        self,
        gates: dict[str, ApprovalGate],
        approvers: dict[str, list[str]],
        approval_timeout: timedelta,
        state: IncidentState,
        guard: Guard,
        journal: Journal,
        board: StatusBoard,
        slack: IncidentSlack,
        escalate: Callable[[str], Awaitable[None]],
    ) -> None:
        self.gates = gates
        self.approvers = approvers
        self.approval_timeout = approval_timeout
        self.state = state
        self.guard = guard
        self.journal = journal
        self.board = board
        self.slack = slack
        self.escalate = escalate

    async def ask(
        self, kind: str, question: str, *, target: str | None, destructive: bool, timeout: timedelta | None
    ) -> bool:
        """See Incident.approval."""
        gate = gate_name(kind, target)
        if gate in self.gates:  # asked before (a loop in the playbook): the first answer stands
            return self.gates[gate].approved
        if not self.guard.automation_allowed or self.guard.fault_gone:
            self.journal.record("approval", f"{gate}: {question}", outcome=f"not asked: {self.guard.why_not_acting()}")
            return False
        now = workflow.now()
        wait = timeout or self.approval_timeout
        record = ApprovalGate(
            gate=gate,
            kind=kind,
            target=target,
            question=question,
            destructive=destructive,
            requested_at=now,
            deadline=now + wait,
            approvers=allowed_approvers(self.approvers, kind),
        )
        self.gates[gate] = record
        self.state.approvals.append(record)
        entry = self.journal.record("approval", f"{gate}: {question}", outcome="pending")
        entry.ended_at = None
        previous = self.state.status
        self.board.set_status("awaiting-approval")
        await self.slack.request_approval(record)
        # The gate times out at its recorded deadline, however long posting the request took.
        left = max(record.deadline - workflow.now(), timedelta(milliseconds=1))
        try:
            await workflow.wait_condition(
                lambda: not record.pending or not self.guard.automation_allowed or self.guard.fault_gone,
                timeout=left,
                timeout_summary=f"approval '{gate}' times out",
            )
        except asyncio.TimeoutError:
            record.timed_out = True
        if record.pending:
            record.withdrawn = self.guard.why_not_acting()
        entry.ended_at = record.decided_at or workflow.now()
        entry.outcome = record.outcome
        entry.by = record.decision.by if record.decision else None
        if record.decision and record.decision.comment:
            entry.note(record.decision.comment)
        if self.state.status == "awaiting-approval" and not any(g.pending for g in self.gates.values()):
            self.board.set_status(previous)
        self.board.publish()
        await self.slack.close_approval_message(record)
        if record.timed_out:
            await self.escalate(f"approval '{gate}' had no answer within {duration(wait)}")
        return record.approved

    def withdraw_open(self, why: str) -> None:
        """No open gate may still lead to a write (ask() closes each message as its wait ends)."""
        for gate in self.gates.values():
            if gate.pending:
                gate.withdrawn = why
