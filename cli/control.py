"""What an on-call engineer does to a running incident from the terminal."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from settings import ConfigError, Settings
from cli.home import DEFAULT_HOME
from cli.settings import connect
from workflows.incident.state import IncidentState, unserved_sentence
from workflows.incident.models import (
    QUERY_STATE,
    QUERY_TIMELINE,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    Decision,
    HumanAction,
)
from workflows.incident.search import (
    ALERT_NAME,
    CLUSTER,
    ESCALATION_LEVEL,
    INCIDENT_SEVERITY,
    INCIDENT_STATUS,
    RUNBOOK,
)
from workflows.incident.timeline import TimelineEntry

_ACTIONS = {"ack": "acknowledge", "note": "note", "escalate": "escalate", "resolve": "resolve", "handover": "hand-over"}


def home_flag(home) -> str:
    """ " --home H" when H is not the default: what a printed command needs to reach the same stack."""
    return f" --home {home}" if home is not None and Path(home) != DEFAULT_HOME else ""


def cli_flags(args) -> str:
    """What a printed `runbooks approve ...` needs to reach the same stack as the command that prints it."""
    temporal = getattr(args, "temporal", None)
    return home_flag(getattr(args, "home", None)) + (f" --temporal {temporal}" if temporal else "")


def gate_commands(incident: str, gate: str, flags: str = "") -> str:
    """The two lines that answer a waiting gate, as `runbooks show` and `drill --wait` print them."""
    return (
        f"  approve: runbooks approve {incident} '{gate}' --as NAME{flags}\n"
        f"  reject:  runbooks reject {incident} '{gate}' --as NAME --comment WHY{flags}"
    )


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
        return ControlError(f"no running incident {incident!r} (`runbooks list` shows the open ones)")
    return ControlError(f"{incident}: {exc}")


# A model field -> the command-line argument that fills it, for one-line errors.
_FLAGS = {"by": "--as", "comment": "--comment", "gate": "GATE", "note": "the note", "action": "the action"}


def _model(cls: type[BaseModel], **fields) -> BaseModel:
    """`cls(**fields)`, or a ControlError naming the argument that is wrong (never a pydantic dump)."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        reasons = [
            f"{_FLAGS.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'value'}: {e['msg']}" for e in exc.errors()
        ]
        raise ControlError("; ".join(reasons)) from None


async def decide(settings: Settings, incident: str, gate: str, approved: bool, user: str, comment: str | None) -> int:
    decision = _model(Decision, gate=gate, approved=approved, by=user, comment=comment, via="cli")
    handle = (await _client(settings)).get_workflow_handle(incident)
    try:
        outcome = await handle.execute_update(UPDATE_DECIDE, decision, result_type=str)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise _explain(incident, exc) from None
    print(outcome)
    return 0


async def human_action(settings: Settings, incident: str, verb: str, user: str, note: str | None) -> int:
    action = _model(HumanAction, action=_ACTIONS[verb], by=user, note=note)
    handle = (await _client(settings)).get_workflow_handle(incident)
    try:
        outcome = await handle.execute_update(UPDATE_HUMAN_ACTION, action, result_type=str)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise _explain(incident, exc) from None
    print(outcome)
    return 0


async def show(settings: Settings, incident: str, flags: str = "") -> int:
    """Print the incident's state and timeline; `flags` (cli_flags) go into the printed commands."""
    handle = (await _client(settings)).get_workflow_handle(incident)
    try:
        state = await handle.query(QUERY_STATE, result_type=IncidentState)
        timeline = await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])
    except RPCError as exc:
        raise _explain(incident, exc) from None
    print(render_state(state, timeline, flags))
    return 0


async def list_incidents(
    settings: Settings,
    *,
    runbook: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    closed_too: bool = False,
    limit: int = 50,
    cluster: str | None = None,
) -> int:
    """Incidents from Temporal visibility (the search attributes every incident upserts), newest first.

    CLUSTER is the `Cluster` search attribute (the cluster the alert named), `-` for an incident
    opened before clusters had names. Those belong to the default cluster (where they run, as the
    worker's checks count them), so `cluster` = clusters.default lists them too."""
    clauses = ["Runbook IS NOT NULL"]
    if not closed_too:
        clauses.append('ExecutionStatus = "Running"')
    for attr, value in (("Runbook", runbook), ("IncidentSeverity", severity), ("IncidentStatus", status)):
        if value is not None:
            clauses.append(f"{attr} = {_quoted(value)}")
    if cluster is not None:
        if not cluster.strip():
            raise ControlError("--cluster needs a cluster's name")
        named = f"{CLUSTER.name} = {_quoted(cluster)}"
        default = cluster == settings.clusters.default
        clauses.append(f"({named} OR {CLUSTER.name} IS NULL)" if default else named)
    client = await _client(settings)
    rows = []
    try:
        async for wf in client.list_workflows(" AND ".join(clauses), limit=limit):
            sa = wf.typed_search_attributes
            state = sa.get(INCIDENT_STATUS) or "-"
            if wf.status != WorkflowExecutionStatus.RUNNING and wf.status != WorkflowExecutionStatus.COMPLETED:
                state += f" ({wf.status.name.lower().replace('_', '-') if wf.status else 'closed'})"
            rows.append(
                (
                    wf.id,
                    sa.get(CLUSTER) or "-",
                    sa.get(RUNBOOK) or "-",
                    sa.get(INCIDENT_SEVERITY) or "-",
                    state,
                    str(sa.get(ESCALATION_LEVEL) or 0),
                    _age(wf.start_time),
                    sa.get(ALERT_NAME) or "-",
                )
            )
    except RPCError as exc:
        raise ControlError(f"cannot list incidents: {exc}") from None
    if not rows:
        filtered = " matching" if runbook or severity or status or cluster else ""
        print(f"no {'' if closed_too else 'open '}incidents{filtered}")
        return 0
    header = ("INCIDENT", "CLUSTER", "RUNBOOK", "SEV", "STATUS", "LEVEL", "STARTED", "ALERT")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _age(started: datetime | None) -> str:
    if started is None:
        return "-"
    seconds = int((datetime.now(timezone.utc) - started).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago" if seconds < 172800 else f"{seconds // 86400}d ago"


def render_state(state: IncidentState, timeline: list[TimelineEntry], flags: str = "") -> str:
    lines = [
        f"{state.incident_id}  [{state.severity}] {state.title}  status={state.status}  escalation level={state.escalation_level}",
        f"alert: {state.alert.alertname} ({state.alert.summary})  namespace: {state.namespace or '-'}"
        f"  cluster: {state.cluster or '- (opened before clusters had names)'}",
    ]
    if state.unserved_cluster is not None:
        lines.append(f"NOT ACTING: {unserved_sentence(state.unserved_cluster)}")
    for gate in state.pending_gates:
        lines.append(f"WAITING FOR APPROVAL: gate {gate.gate!r}: {gate.question} (until {gate.deadline:%H:%M:%S}Z)")
        lines.append(gate_commands(state.incident_id, gate.gate, flags))
    lines.append("timeline:")
    for entry in timeline:
        end = f"-{entry.ended_at:%H:%M:%S}" if entry.ended_at else ""
        lines.append(f"  {entry.started_at:%H:%M:%S}{end} {entry.title}: {entry.outcome or '…'}")
    return "\n".join(lines)
