"""Approval gates of one incident: asked in Slack (and the CLI, the UI), answered once, by someone allowed.

A gate that gets no answer in time is "not approved" and escalates; a gate still open when the
fault goes away (every alert resolved), the incident is handed over or resolved is withdrawn,
and its Slack message says so. Decisions arrive through HumanControls (the `decide` Update).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

from workflows.incident.approval import ApprovalGate, allowed_approvers, gate_name
from workflows.incident.report import duration

if TYPE_CHECKING:
    from workflows.incident.incident import Incident


class IncidentGates:
    def __init__(self, incident: Incident, approval_timeout: timedelta) -> None:
        self.inc = incident
        self.approval_timeout = approval_timeout

    async def ask(
        self, kind: str, question: str, *, target: str | None, destructive: bool, timeout: timedelta | None
    ) -> bool:
        """See Incident.approval."""
        gate = gate_name(kind, target)
        if gate in self.inc.gates:  # asked before (a loop in the playbook): the first answer stands
            return self.inc.gates[gate].approved
        if not self.inc.automation_allowed or self.inc.fault_gone:
            self.inc.record("approval", f"{gate}: {question}", outcome=f"not asked: {self.inc.why_not_acting()}")
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
            approvers=allowed_approvers(self.inc.input.approvers, kind),
        )
        self.inc.gates[gate] = record
        self.inc.state.approvals.append(record)
        entry = self.inc.record("approval", f"{gate}: {question}", outcome="pending")
        entry.ended_at = None
        previous = self.inc.state.status
        self.inc.set_status("awaiting-approval")
        await self.inc.slack.request_approval(record)
        # The gate times out at its recorded deadline, however long posting the request took.
        left = max(record.deadline - workflow.now(), timedelta(milliseconds=1))
        try:
            await workflow.wait_condition(
                lambda: not record.pending or not self.inc.automation_allowed or self.inc.fault_gone,
                timeout=left,
                timeout_summary=f"approval '{gate}' times out",
            )
        except asyncio.TimeoutError:
            record.timed_out = True
        if record.pending:
            record.withdrawn = self.inc.why_not_acting()
        entry.ended_at = record.decided_at or workflow.now()
        entry.outcome = record.outcome
        entry.by = record.decision.by if record.decision else None
        if record.decision and record.decision.comment:
            entry.note(record.decision.comment)
        if self.inc.state.status == "awaiting-approval" and not any(g.pending for g in self.inc.gates.values()):
            self.inc.set_status(previous)
        self.inc.publish()
        await self.inc.slack.close_approval_message(record)
        if record.timed_out:
            await self.inc.escalate_now(f"approval '{gate}' had no answer within {duration(wait)}")
        return record.approved

    def withdraw_open(self, why: str) -> None:
        """No open gate may still lead to a write (ask() closes each message as its wait ends)."""
        for gate in self.inc.gates.values():
            if gate.pending:
                gate.withdrawn = why
