"""Which playbook answers an alert: an explicit `runbook` label, else the alert's name.

Nothing is silently dropped: an alert no deployed playbook claims goes to triage, which
notifies on-call with the alert and its cluster context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from settings.routes import SEVERITIES, Route
from workflows.playbooks.catalog import ALERT_SEVERITY, PLAYBOOKS, TRIAGE, playbook
from workflows.incident.models import Severity
from workflows.incident.scope import ScopeKey
from workflows.incident.severity import LABEL_SEVERITY

if TYPE_CHECKING:
    from settings import RoutingSettings


@dataclass(frozen=True)
class ClusterRoute:
    """The cluster an alert came from (settings/clusters.py) and the task queue its incident runs on."""

    name: str
    why: str  # for the log: "label cluster", "no cluster label: the default cluster"
    served: bool  # False: no worker serves it; the incident runs on the default cluster's queue and acts nowhere
    task_queue: str


@dataclass(frozen=True)
class RoutedAlert:
    runbook: str
    workflow_type: str
    severity: Severity | None
    why: str  # for the log: how the playbook was chosen
    scope: ScopeKey
    severity_why: str = ""
    cluster: ClusterRoute | None = None  # set by the intake (triggers/alertmanager.py)


class RoutingCatalog:
    """Routes alerts by name (the routes: settings/routes.py, `routing.routes` in the configuration)."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)

    @classmethod
    def from_settings(cls, routing: RoutingSettings) -> RoutingCatalog:
        """The configured routes added to (or, with `replace_defaults`, instead of) the built-in ones."""
        return cls(routing.routes_in_effect())

    def route(
        self,
        labels: Mapping[str, str],
        *,
        group_key: str | None = None,
        fingerprint: str = "",
        cluster: str | None = None,
    ) -> RoutedAlert:
        """The alert's playbook, scope and severity; `cluster` prefixes the scope key (None: the default cluster)."""
        explicit = labels.get("runbook")
        alertname = labels.get("alertname", "")
        route = self._routes.get(alertname)
        if explicit in PLAYBOOKS:
            runbook, why = explicit, "runbook label"
            route = route if route is not None and route.runbook == explicit else None
        elif route is not None:
            runbook, why = route.runbook, "alertname"
        else:
            runbook = TRIAGE
            why = f"runbook label {explicit!r} names no playbook" if explicit else "no playbook claims this alert"
        book = playbook(runbook)
        scope = book.scope.of(
            labels,
            group_key=group_key,
            fingerprint=fingerprint,
            override=route.scope_labels if route else None,
            cluster=cluster,
        )
        severity, severity_why = alert_severity(labels, route)
        return RoutedAlert(runbook, book.workflow_type, severity, why, scope, severity_why)


def alert_severity(labels: Mapping[str, str], route: Route | None = None) -> tuple[Severity | None, str]:
    """The incident's severity and why: a P0..P3 `severity` label; else the configured route's;
    else the declaring playbook's for the alert name (the seeds'); else the label's word (critical → P1, warning → P2, …);
    else None (the playbook's default)."""
    explicit = severity_from_labels(labels)
    if explicit:
        return explicit, "the alert's severity label"
    if route is not None and route.severity:
        return route.severity, "the route's severity"
    seeded = ALERT_SEVERITY.get(labels.get("alertname", ""))
    if seeded:
        return seeded
    word = labels.get("severity", "").strip().lower()
    if word in LABEL_SEVERITY:
        return LABEL_SEVERITY[word], f"severity label {word!r} (seed 001's levels)"
    return None, "the playbook's default"


def severity_from_labels(labels: Mapping[str, str]) -> Severity | None:
    """A `severity` label counts only when it is one of ours (P0..P3); `critical` etc. do not."""
    value = labels.get("severity", "").strip().upper()
    return value if value in SEVERITIES else None  # type: ignore[return-value]
