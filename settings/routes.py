"""Which playbook an alert name goes to, as configured (`routing.routes`): the `Route` model and the
built-in routes every playbook declares. Configuration only; the triggers route alerts with it
(triggers/routing.py), so settings/ imports nothing of the triggers."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflows.playbooks.catalog import ALL, PLAYBOOKS
from workflows.incident.models import Severity

SEVERITIES: tuple[str, ...] = get_args(Severity)


class Route(BaseModel):
    """One catalog entry: the playbook for an alert name, the severity it pages at, its scope labels."""

    model_config = ConfigDict(extra="forbid")

    runbook: str
    severity: Severity | None = None  # None: the seeds' severity for the alert, else the playbook's default
    scope_labels: list[str] | None = Field(
        default=None,
        min_length=1,
        description="alert labels that make the incident's scope, instead of the playbook's own",
    )

    @field_validator("runbook")
    @classmethod
    def _known_playbook(cls, runbook: str) -> str:
        if runbook not in PLAYBOOKS:
            raise ValueError(f"no playbook named {runbook!r} (known: {', '.join(sorted(PLAYBOOKS))})")
        return runbook


def default_routes() -> dict[str, Route]:
    """Every alert a playbook declares (workflows/playbooks/catalog.py), at the severity it declares."""
    routes: dict[str, Route] = {}
    for p in ALL:
        for alertname, alert in p.alerts.items():
            if alertname in routes:
                raise ValueError(
                    f"alert {alertname} is declared by two playbooks: {routes[alertname].runbook}, {p.name}"
                )
            routes[alertname] = Route(runbook=p.name, severity=alert.severity)
    return routes
