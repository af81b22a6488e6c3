"""What humans do to an incident: approval decisions and the human actions (acknowledge, note,
escalate, hand over, resolve), from Slack, the CLI or the Temporal Web UI.

Updates are validated first: a refused decision or action leaves nothing in the history. A
signal cannot be refused, so a signal that would be refused is recorded and ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

from workflows.incident.approval import check_decision, refuse
from workflows.incident.models import Decision, HumanAction

if TYPE_CHECKING:
    from workflows.incident.incident import Incident


class HumanControls:
    def __init__(self, incident: Incident) -> None:
        self.inc = incident

    def validate_decision(self, decision: Decision) -> None:
        check_decision(self.inc.gates, decision)

    def decide(self, decision: Decision) -> str:
        gate = self.inc.gates[decision.gate]
        if not gate.pending:  # withdrawn in the same workflow task the decision arrived in
            return f"gate {gate.gate!r} not decided: {gate.outcome}"
        gate.decision = decision
        gate.decided_at = workflow.now()
        self.inc.publish()
        return f"gate {gate.gate!r} {gate.outcome}"

    def validate_human_action(self, action: HumanAction) -> None:
        problem = self.human_action_problem(action)
        if problem:
            raise refuse(problem)

    def human_action_problem(self, action: HumanAction) -> str | None:
        s = self.inc.state
        if action.action == "note":
            return None if action.note else "a note needs text"
        if self.inc.resolved:
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
            self.inc.record("human", f"{action.action} ignored", outcome=problem, by=action.by)
            return
        await self.apply_human_action(action)

    async def apply_human_action(self, action: HumanAction) -> str:
        by, note = action.by, action.note
        if action.action == "acknowledge":
            self.inc.acknowledge(by)
            await self.inc.slack.post(f":eyes: Acknowledged by *{by}*", purpose="acknowledged")
            return f"acknowledged by {by}"
        if action.action == "note":
            self.inc.record("human", "note", outcome=note, by=by)
            await self.inc.slack.post(f":memo: *{by}*: {note}", purpose="note")
            return "note added"
        if action.action == "escalate":
            await self.inc.escalations.now(f"{by} asked to escalate" + (f": {note}" if note else ""), by_human=True)
            return f"escalated to {self.inc.state.escalated_to}"
        if action.action == "hand-over":
            self.inc.state.handed_over_to = by
            self.inc.record("human", "handed over to humans: automation stops acting", outcome=note, by=by)
            self.inc.set_status("handed-over")
            await self.inc.slack.post(f":handshake: *{by}* took over; automation will not change anything from now on.", purpose="hand-over")
            return f"handed over to {by}"
        self.inc.resolve(note or f"resolved by {by}", by=by)
        return f"resolved by {by}"
