"""Which playbook answers an alert: an explicit `runbook` label, else the alert's name.

Nothing is silently dropped: an alert no deployed playbook claims goes to triage, which
notifies on-call with the alert and its cluster context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, get_args

from pydantic import BaseModel, ConfigDict, field_validator

from workflows.catalog import PLAYBOOKS, TRIAGE, workflow_type
from workflows.models import Severity

SEVERITIES: tuple[str, ...] = get_args(Severity)


class Route(BaseModel):
    """One catalog entry: the playbook for an alert name, and the severity it pages at."""

    model_config = ConfigDict(extra="forbid")

    runbook: str
    severity: Severity | None = None  # None: the playbook's default

    @field_validator("runbook")
    @classmethod
    def _known_playbook(cls, runbook: str) -> str:
        if runbook not in PLAYBOOKS:
            raise ValueError(f"no playbook named {runbook!r} (known: {', '.join(sorted(PLAYBOOKS))})")
        return runbook


# Alert names from the seed SOPs' Prometheus rules. Entries whose playbook has not
# landed yet stay here and route to triage until it does (`default_routes` skips them).
DEFAULT_ROUTES: dict[str, tuple[str, Severity | None]] = {
    "LLMDServiceDown": ("service-outage", "P0"),
    "LLMModelNotResponding": ("service-outage", "P0"),
    "LLMDMemoryPressure": ("high-memory", "P1"),
    "LLMDeploymentNotReady": ("model-deploy-failure", "P1"),
    "LLMDGPUCapacityLost": ("gpu-unavailable", "P1"),
    # Seed 002's GPU hardware failure: SOP-003's probe finds the faulty GPU, then cordon + drain.
    "LLMDGPUHardwareError": ("gpu-unavailable", "P1"),
}


def default_routes() -> dict[str, Route]:
    return {name: Route(runbook=rb, severity=sev) for name, (rb, sev) in DEFAULT_ROUTES.items() if rb in PLAYBOOKS}


@dataclass(frozen=True)
class RoutedAlert:
    runbook: str
    workflow_type: str
    severity: Severity | None
    why: str  # for the log: how the playbook was chosen


class RoutingCatalog:
    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)

    def route(self, labels: Mapping[str, str]) -> RoutedAlert:
        severity = severity_from_labels(labels)
        explicit = labels.get("runbook")
        if explicit in PLAYBOOKS:
            return RoutedAlert(explicit, workflow_type(explicit), severity, "runbook label")
        alertname = labels.get("alertname", "")
        route = self._routes.get(alertname)
        if route is not None:
            return RoutedAlert(route.runbook, workflow_type(route.runbook), severity or route.severity, "alertname")
        why = f"runbook label {explicit!r} names no playbook" if explicit else "no playbook claims this alert"
        return RoutedAlert(TRIAGE, workflow_type(TRIAGE), severity, why)


def severity_from_labels(labels: Mapping[str, str]) -> Severity | None:
    """A `severity` label counts only when it is one of ours (P0..P3); `critical` etc. do not."""
    value = labels.get("severity", "").strip().upper()
    return value if value in SEVERITIES else None  # type: ignore[return-value]
