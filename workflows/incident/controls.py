"""What humans do to an incident: approval decisions and the human actions (acknowledge, note,
escalate, hand over, resolve), from Slack, the CLI or the Temporal Web UI.

Updates are validated first: a refused decision or action leaves nothing in the history. A
signal cannot be refused, so a signal that would be refused is recorded and ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from temporalio import workflow

from workflows.incident.approval import ApprovalGate, check_decision, refuse
from workflows.incident.guard import Guard
from workflows.incident.models import Decision, HumanAction
from workflows.incident.slack import IncidentSlack
from workflows.incident.state import IncidentState, StatusBoard
from workflows.incident.timeline import Journal


class Escalate(Protocol):
    def __call__(self, reason: str, *, by_human: bool = False) -> Awaitable[None]: ...


class HumanControls:
    """The `decide` Update and the human actions. `acknowledge(by)` and `resolve(note, by=)` are the
    incident's; `escalate` pages the next level."""

    def __init__(
        self,
        gates: dict[str, ApprovalGate],
        state: IncidentState,
        guard: Guard,
        journal: Journal,
        board: StatusBoard,
        slack: IncidentSlack,
        *,
        acknowledge: Callable[[str], None],
        resolve: Callable[..., None],
        escalate: Escalate,
    ) -> None:
        self.gates = gates
        self.state = state
        self.guard = guard
        self.journal = journal
        self.board = board
        self.slack = slack
        self.acknowledge = acknowledge
        self.resolve = resolve
        self.escalate = escalate

    def validate_decision(self, decision: Decision) -> None:
        check_decision(self.gates, decision)

    def decide(self, decision: Decision) -> str:
        gate = self.gates[decision.gate]
        if not gate.pending:  # withdrawn in the same workflow task the decision arrived in
            return f"gate {gate.gate!r} not decided: {gate.outcome}"
        gate.decision = decision
        gate.decided_at = workflow.now()
        self.board.publish()
        return f"gate {gate.gate!r} {gate.outcome}"

    def validate_human_action(self, action: HumanAction) -> None:
        problem = self.human_action_problem(action)
        if problem:
            raise refuse(problem)

    def human_action_problem(self, action: HumanAction) -> str | None:
        s = self.state
        if action.action == "note":
            return None if action.note else "a note needs text"
        if self.guard.resolved:
            return f"the incident is already resolved (by {s.resolved_by})"
        if action.action == "acknowledge" and s.acknowledged_by:
            return f"already acknowledged by {s.acknowledged_by}"
        if action.action == "hand-over" and s.handed_over_to:
            return f"already handed over to {s.handed_over_to}"
        return None

    async def on_human_update(self, action: HumanAction) -> str:
        return await self.apply_human_action(action)

    async def on_human_signal(self, action: HumanAction) -> None:
        problem = self.human_action_problem(action)  # a signal can't be refused: record and ignore
        if problem:
            self.journal.record("human", f"{action.action} ignored", outcome=problem, by=action.by)
            return
        await self.apply_human_action(action)

    async def apply_human_action(self, action: HumanAction) -> str:
        by, note = action.by, action.note
        if action.action == "acknowledge":
            self.acknowledge(by)
            await self.slack.post(f":eyes: Acknowledged by *{by}*", purpose="acknowledged")
            return f"acknowledged by {by}"
        if action.action == "note":
            self.journal.record("human", "note", outcome=note, by=by)
            await self.slack.post(f":memo: *{by}*: {note}", purpose="note")
            return "note added"
        if action.action == "escalate":
            await self.escalate(f"{by} asked to escalate" + (f": {note}" if note else ""), by_human=True)
            return f"escalated to {self.state.escalated_to}"
        if action.action == "hand-over":
            self.state.handed_over_to = by
            self.journal.record("human", "handed over to humans: automation stops acting", outcome=note, by=by)
            self.board.set_status("handed-over")
            await self.slack.post(
                f":handshake: *{by}* took over; automation will not change anything from now on.", purpose="hand-over"
            )
            return f"handed over to {by}"
        self.resolve(note or f"resolved by {by}", by=by)
        return f"resolved by {by}"
