"""What an on-call engineer does to a running incident from the terminal."""

from __future__ import annotations

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from triggers.config import ConfigError, Settings
from worker.settings import connect
from workflows.incident import IncidentState
from workflows.models import QUERY_STATE, QUERY_TIMELINE, UPDATE_DECIDE, UPDATE_HUMAN_ACTION, Decision, HumanAction
from workflows.timeline import TimelineEntry

_ACTIONS = {"ack": "acknowledge", "note": "note", "escalate": "escalate", "resolve": "resolve", "handover": "hand-over"}


class ControlError(Exception):
    """Refused or impossible; the message says why in the on-call engineer's words."""


async def _client(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except ConfigError as exc:
        raise ControlError(str(exc)) from None


def _explain(incident: str, exc: Exception) -> ControlError:
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return ControlError(f"{incident}: refused: {getattr(cause, 'message', None) or cause or exc}")
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        return ControlError(f"no running incident {incident!r} (list them in the Temporal UI, or check the id)")
    return ControlError(f"{incident}: {exc}")


async def decide(settings: Settings, incident: str, gate: str, approved: bool, user: str, comment: str | None) -> int:
    decision = Decision(gate=gate, approved=approved, by=user, comment=comment, via="cli")
    handle = (await _client(settings)).get_workflow_handle(incident)
    try:
        outcome = await handle.execute_update(UPDATE_DECIDE, decision, result_type=str)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise _explain(incident, exc) from None
    print(outcome)
    return 0


async def human_action(settings: Settings, incident: str, verb: str, user: str, note: str | None) -> int:
    action = HumanAction(action=_ACTIONS[verb], by=user, note=note)
    handle = (await _client(settings)).get_workflow_handle(incident)
    try:
        outcome = await handle.execute_update(UPDATE_HUMAN_ACTION, action, result_type=str)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise _explain(incident, exc) from None
    print(outcome)
    return 0


async def show(settings: Settings, incident: str) -> int:
    handle = (await _client(settings)).get_workflow_handle(incident)
    try:
        state = await handle.query(QUERY_STATE, result_type=IncidentState)
        timeline = await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])
    except RPCError as exc:
        raise _explain(incident, exc) from None
    print(render_state(state, timeline))
    return 0


def render_state(state: IncidentState, timeline: list[TimelineEntry]) -> str:
    lines = [
        f"{state.incident_id}  [{state.severity}] {state.title}  status={state.status}  escalation level={state.escalation_level}",
        f"alert: {state.alert.alertname} ({state.alert.summary})  namespace: {state.namespace or '-'}",
    ]
    for gate in state.pending_gates:
        lines.append(f"WAITING FOR APPROVAL: gate {gate.gate!r}: {gate.question} (until {gate.deadline:%H:%M:%S}Z)")
        lines.append(f"  runbooks approve {state.incident_id} {gate.gate} --as YOU   |   runbooks reject ...")
    lines.append("timeline:")
    for entry in timeline:
        end = f"-{entry.ended_at:%H:%M:%S}" if entry.ended_at else ""
        lines.append(f"  {entry.started_at:%H:%M:%S}{end} {entry.title}: {entry.outcome or '…'}")
    return "\n".join(lines)
