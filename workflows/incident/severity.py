"""Severity levels P0–P3 as the SRE documents define them.

Response/escalation times, team and channels from seed 001's `severity_levels.yaml`; the
escalation path per severity from seed 003's escalation matrix; stakeholder update cadence
from the P0 checklist (seed 000: every 15 minutes) and seed 001's protocol (30 for P1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from workflows.incident.models import Severity


@dataclass(frozen=True)
class SeverityPolicy:
    severity: Severity
    label: str
    description: str
    response_time: timedelta
    escalation_time: timedelta
    team: tuple[str, ...]
    channels: tuple[str, ...]
    escalation_path: tuple[str, ...]
    stakeholder_updates: timedelta | None  # None: no scheduled stakeholder updates

    @property
    def name(self) -> str:
        return f"{self.severity} ({self.label})"


SEVERITIES: dict[Severity, SeverityPolicy] = {
    "P0": SeverityPolicy(
        "P0",
        "Critical",
        "Complete service outage affecting all users",
        timedelta(minutes=5),
        timedelta(minutes=15),
        ("on-call-sre", "service-owner", "incident-commander"),
        ("#incidents-critical", "pager-duty"),
        ("Primary", "Secondary", "Manager", "CTO"),
        timedelta(minutes=15),
    ),
    "P1": SeverityPolicy(
        "P1",
        "High",
        "Significant service degradation affecting majority of users",
        timedelta(minutes=15),
        timedelta(minutes=30),
        ("on-call-sre", "service-owner"),
        ("#incidents-high", "slack"),
        ("Primary", "Secondary", "Team Lead"),
        timedelta(minutes=30),
    ),
    "P2": SeverityPolicy(
        "P2",
        "Medium",
        "Partial service degradation with workarounds available",
        timedelta(minutes=30),
        timedelta(hours=2),
        ("on-call-sre",),
        ("#incidents-medium",),
        ("Primary", "Team Lead"),
        None,
    ),
    "P3": SeverityPolicy(
        "P3",
        "Low",
        "Minor issues with minimal user impact",
        timedelta(hours=2),
        timedelta(hours=8),
        ("on-call-sre",),
        ("#incidents-low",),
        ("Primary (async)",),
        None,
    ),
}


def severity_policy(severity: Severity) -> SeverityPolicy:
    return SEVERITIES[severity]


# Prometheus-style severity words for alerts the seeds don't name (seed 001's table).
LABEL_SEVERITY: dict[str, Severity] = {
    "critical": "P1",
    "page": "P1",
    "high": "P1",
    "error": "P2",
    "warning": "P2",
    "medium": "P2",
    "ticket": "P3",
    "low": "P3",
    "info": "P3",
    "none": "P3",
}


def escalation_marks(severity: Severity) -> list[tuple[float, str]]:
    """Seed 001's escalation time per severity along seed 003's escalation matrix path:
    P0 every 15 min Secondary → Manager → CTO; P1 every 30 min Secondary → Team Lead; P2 Team
    Lead at 2 h; P3 none (Primary, async). Pairs of (minutes after startsAt, who is paged)."""
    policy = SEVERITIES[severity]
    every = policy.escalation_time.total_seconds() / 60
    return [(every * i, who) for i, who in enumerate(policy.escalation_path[1:], start=1)]
