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
        "P0", "Critical", "Complete service outage affecting all users",
        timedelta(minutes=5), timedelta(minutes=15),
        ("on-call-sre", "service-owner", "incident-commander"), ("#incidents-critical", "pager-duty"),
        ("Primary", "Secondary", "Manager", "CTO"), timedelta(minutes=15),
    ),
    "P1": SeverityPolicy(
        "P1", "High", "Significant service degradation affecting majority of users",
        timedelta(minutes=15), timedelta(minutes=30),
        ("on-call-sre", "service-owner"), ("#incidents-high", "slack"),
        ("Primary", "Secondary", "Team Lead"), timedelta(minutes=30),
    ),
    "P2": SeverityPolicy(
        "P2", "Medium", "Partial service degradation with workarounds available",
        timedelta(minutes=30), timedelta(hours=2),
        ("on-call-sre",), ("#incidents-medium",), ("Primary", "Team Lead"), None,
    ),
    "P3": SeverityPolicy(
        "P3", "Low", "Minor issues with minimal user impact",
        timedelta(hours=2), timedelta(hours=8),
        ("on-call-sre",), ("#incidents-low",), ("Primary (async)",), None,
    ),
}


def severity_policy(severity: Severity) -> SeverityPolicy:
    return SEVERITIES[severity]


# The severity the seeds give each alert their Prometheus rules name, with where they say so.
# An alert's own P0..P3 `severity` label wins over this; a configured route's severity too.
SEED_ALERT_SEVERITY: dict[str, tuple[Severity, str]] = {
    "LLMDServiceDown": ("P0", "seed 001 service-down runbook: P0 (Critical); SOP-001 is a P0 incident"),
    "LLMModelNotResponding": ("P0", "seed 002 rule severity critical, a model down: SOP-001 outage, P0"),
    "LLMDHighErrorRate": ("P1", "seed 001 P1 example 'High error rate (>10%)'; seed 004 high error rate: P1"),
    "LLMDHighLatency": ("P2", "seed 001 high-latency runbook: P2 (Medium)"),
    "LLMHighLatency": ("P2", "seed 001 P2 example 'Moderate latency increase (2-5s p95)'"),
    "LLMHighTokenLatency": ("P2", "seed 001 high-latency runbook: P2 (Medium)"),
    "LLMDGPUHighUtilization": ("P3", "seed 001 P3 example 'Capacity warnings'"),
    "LLMHighGPUUtilization": ("P3", "seed 001 P3 example 'Capacity warnings'"),
    "LLMDKVCacheOverflow": ("P3", "seed 001 P3 example 'Minor performance degradation'"),
    "LLMDMemoryPressure": ("P1", "SOP-002 (seed 000), rule severity critical: significant degradation"),
    "LLMDGPUCapacityLost": ("P1", "SOP-003 (seed 000); seed 004 'GPU not available': P1"),
    "LLMDGPUHardwareError": ("P1", "seed 002 GPU hardware failures; seed 004 'GPU not available': P1"),
    "LLMDeploymentNotReady": ("P1", "SOP-004 (seed 000); seed 004 'model not loading': P1"),
    "ModelServingHighLatency": ("P1", "seed 004 high latency: P1"),
    "ModelServingHighErrorRate": ("P1", "seed 004 high error rate: P1"),
    "ModelServingModelNotLoading": ("P1", "seed 004 'Model Not Loading': Severity P1 (no rule in the seeds: ours)"),
    "ModelServingGPUUnavailable": ("P1", "seed 004 'GPU Not Available': Severity P1 (no rule in the seeds: ours)"),
}

# Prometheus-style severity words for alerts the seeds don't name (seed 001's table).
LABEL_SEVERITY: dict[str, Severity] = {
    "critical": "P1", "page": "P1", "high": "P1", "error": "P2", "warning": "P2", "medium": "P2",
    "ticket": "P3", "low": "P3", "info": "P3", "none": "P3",
}


def escalation_marks(severity: Severity) -> list[tuple[float, str]]:
    """Seed 001's escalation time per severity along seed 003's escalation matrix path:
    P0 every 15 min Secondary → Manager → CTO; P1 every 30 min Secondary → Team Lead; P2 Team
    Lead at 2 h; P3 none (Primary, async). Pairs of (minutes after startsAt, who is paged)."""
    policy = SEVERITIES[severity]
    every = policy.escalation_time.total_seconds() / 60
    return [(every * i, who) for i, who in enumerate(policy.escalation_path[1:], start=1)]
