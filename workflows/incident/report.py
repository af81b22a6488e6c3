"""The incident report: markdown, the workflow's result, posted in the incident's thread."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from workflows.incident.severity import severity_policy
from workflows.incident.timeline import TimelineEntry

# How an incident's status reads in Slack and the stakeholder update.
STATUS_WORDS = {
    "open": "INVESTIGATING",
    "acknowledged": "INVESTIGATING",
    "mitigating": "MITIGATING",
    "awaiting-approval": "MITIGATING (awaiting approval)",
    "resolved": "RESOLVED",
    "handed-over": "HANDED OVER to humans",
    "failed": "AUTOMATION FAILED (humans engaged)",
}


if TYPE_CHECKING:
    from workflows.incident.state import IncidentState, PlaybookPolicy


def duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at.utcoffset() in (None, timedelta(0)) else at.isoformat()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", "<br>")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _since(start: datetime, end: datetime | None, who: str | None = None) -> str:
    if end is None:
        return "—"
    return duration(end - start) + (f" ({who})" if who else "")


def render_report(state: IncidentState, timeline: list[TimelineEntry]) -> str:
    s = state
    start = s.alert.starts_at
    if s.status == "resolved":
        outcome = f"**Resolved** by {s.resolved_by} at {clock(s.resolved_at)}: {s.resolution}"  # type: ignore[arg-type]
    else:
        outcome = f"**Not resolved** (status: {s.status})" + (f" — {s.failure}" if s.failure else "")
    lines = [
        f"# Incident report: {s.title} ({s.severity})",
        "",
        f"- Incident: `{s.incident_id}` (runbook `{s.runbook}`)",
        f"- Alert: `{s.alert.alertname}` — {s.alert.summary}"
        + (f" (namespace `{s.namespace}`)" if s.namespace else ""),
        f"- Alert started: {clock(start)}; incident opened: {clock(s.opened_at)}",
        f"- Incident Commander: {s.incident_commander}",
        f"- Outcome: {outcome}",
        f"- Highest escalation: level {s.escalation_level} ({s.escalated_to})",
        *(
            [
                f"- Scope: `{s.scope}`; {len(s.alerts)} alert(s): "
                + ", ".join(f"`{a.alertname}`" + (" (firing)" if a.firing else "") for a in s.alerts)
            ]
            if s.scope
            else []
        ),
        *(
            [
                "- **Shadow mode**: every write was a server-side dry run; the cluster did not change. "
                "The actions below are what the playbook would have done."
            ]
            if s.mode == "shadow"
            else []
        ),
        *([f"- Nothing wrong found: {s.nothing_found}"] if s.nothing_found else []),
        *[f"- **Could not tell**: {why}" for why in s.could_not_tell],
        *[f"- **Paging failed**: {f}" for f in s.paging_failures],
        "",
        "## Times (from the alert's start)",
        "",
        *_table(
            ["Measure", "Time"],
            [
                ["Time to acknowledge", _since(start, s.acknowledged_at, s.acknowledged_by)],
                ["Time to mitigate", _since(start, s.mitigated_at or s.alert_resolved_at)],
                ["Time to resolve", _since(start, s.resolved_at, s.resolved_by)],
            ],
        ),
        "",
        "## Actions",
        "",
    ]
    if s.changes:
        lines += _table(
            ["#", "Action", "Object", "Field", "Before", "After", "Result", "Because"],
            [
                [
                    i,
                    c.action,
                    f"{c.kind} {c.namespace + '/' if c.namespace else ''}{c.name}",
                    c.field,
                    c.before,
                    c.after,
                    "dry run" if c.dry_run else ("applied" if c.applied else "already in place"),
                    c.finding or "—",
                ]
                for i, c in enumerate(s.changes, 1)
            ],
        )
    else:
        lines.append("No change was made to the cluster.")
    lines += ["", "## Approvals", ""]
    if s.approvals:
        lines += _table(
            ["Gate", "Question", "Outcome", "Asked", "Decided", "Comment"],
            [
                [
                    g.gate,
                    g.question,
                    g.outcome,
                    clock(g.requested_at),
                    clock(g.decided_at) if g.decided_at else "—",
                    g.decision.comment if g.decision else "",
                ]
                for g in s.approvals
            ],
        )
    else:
        lines.append("No approval was needed.")
    lines += ["", "## Escalations", ""]
    if s.escalations:
        lines += _table(
            ["Level", "Paged", "At", "After alert start", "Why"],
            [[e.level, e.notify, clock(e.at), duration(e.at - start), e.reason] for e in s.escalations],
        )
    else:
        lines.append("No escalation was needed.")
    lines += ["", "## Timeline", ""]
    lines += _table(
        ["Start", "End", "What", "Outcome", "Details"],
        [
            [
                clock(e.started_at),
                clock(e.ended_at) if e.ended_at else "—",
                f"{e.kind}: {e.title}" + (f" ({e.by})" if e.by else ""),
                e.outcome or "",
                "\n".join(e.details),
            ]
            for e in timeline
        ],
    )
    return "\n".join(lines) + "\n"


def stakeholder_update(
    s: IncidentState, policy: PlaybookPolicy, timeline: list[TimelineEntry], *, next_update: datetime | None
) -> str:
    """Seed 001's communication template, filled in from the incident's state."""
    sev = severity_policy(s.severity)
    actions = [e for e in timeline if e.kind in ("step", "action", "approval", "escalation")][-4:]
    lines = [f"- {e.title}" + (f" ({e.outcome})" if e.outcome else " (in progress)") for e in actions]
    lines += [f"- waiting for approval: {g.question}" for g in s.pending_gates]
    return "\n".join(
        [
            f"🚨 INCIDENT UPDATE - {policy.title}",
            "",
            f"Status: {STATUS_WORDS[s.status]}",
            f"Severity: {sev.name}",
            f"Impact: {policy.impact or sev.description}",
            f"Start Time: {clock(s.alert.starts_at)}",
            "",
            "Current Actions:",
            *(lines or ["- investigating"]),
            "",
            "ETA to Resolution: not yet known",
            f"Next Update: {clock(next_update) if next_update else 'none scheduled'}",
            "",
            f"Incident Commander: @{s.incident_commander}",
        ]
    )
