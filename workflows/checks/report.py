"""The morning report as a Slack message: Block Kit sections and fields, readable in Slack
(Slack renders no markdown tables), with a plain-text fallback for notifications.

Slack's limits kept: a header's text ≤ 150 characters, a section's fields ≤ 10 of ≤ 2000
characters each, a section's text ≤ 3000, at most 50 blocks.
"""

from __future__ import annotations

from typing import Any

from workflows.checks.models import MORNING_HEALTH_CHECK, MorningReport, ReportLine, local_time

_OK, _BAD = ":white_check_mark:", ":warning:"
_MAX_LISTED = 20


def _md(text: str, limit: int = 3000) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:limit]}


def _fields(lines: list[ReportLine]) -> list[dict[str, Any]]:
    """One section per ten lines: a field each (name in bold, detail under it)."""
    blocks = []
    for start in range(0, min(len(lines), 40), 10):
        chunk = lines[start : start + 10]
        blocks.append(
            {
                "type": "section",
                "fields": [_md(f"{_OK if line.ok else _BAD} *{line.name}*\n{line.detail}", 2000) for line in chunk],
            }
        )
    return blocks


def _count(lines: list[ReportLine], word: str) -> str:
    good = sum(1 for line in lines if line.ok)
    return f"{good} of {len(lines)} {word}" if lines else "none found"


def morning_message(report: MorningReport) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for the report."""
    when = local_time(report.checked_at, report.time_zone)
    stamp = f"{when:%a %d %b %Y %H:%M} {when.tzname()}"
    trouble = (
        sum(1 for d in report.deployments if not d.ok)
        + sum(1 for n in report.gpu_nodes if not n.ok)
        + len(report.pods_not_running)
        + len(report.open_incidents)
        + len(report.could_not_check)
    )
    verdict = (
        f"{_OK} All clear: every check passed."
        if report.healthy
        else f"{_BAD} {trouble} thing(s) need a look (listed below)."
    )
    errors = (
        f"{report.error_lines} line(s) with \"error\"\n(last lines of {report.error_lines_read_from} model(s))"
        if report.error_lines_read_from
        else "no model log could be read"
    )
    summary = [
        _md(f"*LLMDeployments*\n{_count(report.deployments, 'Ready')}"),
        _md(f"*GPU nodes*\n{_count(report.gpu_nodes, 'healthy')}"),
        _md(f"*GPUs*\n{report.gpus_allocatable} of {report.gpus_capacity} allocatable, {report.gpus_in_use} in use"),
        _md(f"*Pods not Running*\n{len(report.pods_not_running) or 'none'}"),
        _md(f"*Errors in recent logs*\n{errors}"),
        _md(f"*Open incidents*\n{len(report.open_incidents) or 'none'}"),
        _md(f"*Latency (p95, last hour)*\n{report.latency}"),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"Morning health check · {stamp}"[:150], "emoji": True},
        },
        {"type": "section", "text": _md(verdict)},
        {"type": "section", "fields": summary},
        {"type": "divider"},
        {"type": "section", "text": _md("*LLMDeployments* (`kubectl get llmdeployments -A`)")},
        *_fields(report.deployments),
        {"type": "section", "text": _md("*GPU nodes* (Ready, allocatable `nvidia.com/gpu`)")},
        *_fields(report.gpu_nodes),
    ]
    if report.pods_not_running:
        listed = "\n".join(f"• {p.name}: {p.detail}" for p in report.pods_not_running[:_MAX_LISTED])
        more = len(report.pods_not_running) - _MAX_LISTED
        blocks.append(
            {
                "type": "section",
                "text": _md("*Pods not Running*\n" + listed + (f"\n… and {more} more" if more > 0 else "")),
            }
        )
    if report.open_incidents:
        listed = "\n".join(
            f"• `{i.incident}` {i.severity or ''} {i.status or ''} ({i.alertname or i.runbook})"
            for i in report.open_incidents[:_MAX_LISTED]
        )
        blocks.append({"type": "section", "text": _md("*Open incidents*\n" + listed)})
    if report.could_not_check:
        blocks.append(
            {
                "type": "section",
                "text": _md(
                    f"{_BAD} *Could not check*\n" + "\n".join(f"• {c}" for c in report.could_not_check[:_MAX_LISTED])
                ),
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [_md(f"llm-runbooks · schedule `{MORNING_HEALTH_CHECK}` · seeds 002/003 morning checks")],
        }
    )
    text = (
        f"Morning health check {stamp}: {_count(report.deployments, 'LLMDeployments Ready')}, "
        f"{_count(report.gpu_nodes, 'GPU nodes healthy')}, {len(report.pods_not_running)} pod(s) not Running, "
        f"{len(report.open_incidents)} open incident(s). {verdict}"
    )
    return text, blocks[:50]
