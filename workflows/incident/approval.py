"""Approval gates: a question only a human may answer, answered once, by someone allowed to.

A decision arrives as the `decide` Update. Its validator refuses an unknown gate, a gate
already decided (or timed out) and an approver not allowed for that gate, so a refused
decision leaves nothing in the workflow's history.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from workflows.incident.models import Decision


class ApprovalGate(BaseModel):
    gate: str  # what a decision names: the kind, or "kind:target" when the playbook asks per object
    question: str
    kind: str | None = (
        None  # stable across incidents (`maintenance-mode`, `cordon-drain`, …): approvers are set per kind
    )
    target: str | None = None  # the object the gate is about (a node, a claim, a deployment)
    destructive: bool = False
    requested_at: datetime
    deadline: datetime
    approvers: list[str] = Field(default_factory=list, description="empty: anyone may decide")
    decision: Decision | None = None
    decided_at: datetime | None = None
    timed_out: bool = False
    withdrawn: str | None = None  # why the question no longer stands (resolved, handed over)
    message_channel: str | None = None
    message_ts: str | None = None

    @property
    def pending(self) -> bool:
        return self.decision is None and not self.timed_out and self.withdrawn is None

    @property
    def approved(self) -> bool:
        return self.decision is not None and self.decision.approved

    @property
    def outcome(self) -> str:
        if self.decision is not None:
            verdict = "approved" if self.decision.approved else "rejected"
            return f"{verdict} by {self.decision.by} via {self.decision.via}"
        if self.timed_out:
            return "not approved: no answer before the deadline"
        if self.withdrawn:
            return f"withdrawn: {self.withdrawn}"
        return "pending"


def gate_name(kind: str, target: str | None) -> str:
    """The name a decision uses: `cordon-drain:gpu-node-2`, or just the kind when there is no target."""
    return f"{kind}:{target}" if target else kind


def allowed_approvers(approvers: dict[str, list[str]], kind: str) -> list[str]:
    """IncidentInput.approvers[kind], else approvers["*"]; empty (or containing "*") means anyone."""
    names = approvers.get(kind, approvers.get("*", []))
    return [] if "*" in names else list(names)


def refuse(message: str) -> ApplicationError:
    return ApplicationError(message, type="DecisionRefused", non_retryable=True)


def check_decision(gates: dict[str, ApprovalGate], decision: Decision) -> None:
    """Raise (refusing the Update) unless `decision` answers an open gate by an allowed approver."""
    gate = gates.get(decision.gate)
    if gate is None:
        open_gates = ", ".join(g.gate for g in gates.values() if g.pending) or "none"
        raise refuse(f"unknown gate {decision.gate!r}; gates waiting for a decision: {open_gates}")
    if not gate.pending:
        raise refuse(f"gate {gate.gate!r} is already decided: {gate.outcome}")
    if gate.approvers and decision.by not in gate.approvers:
        raise refuse(f"{decision.by!r} may not decide gate {gate.gate!r}; allowed: {', '.join(gate.approvers)}")
