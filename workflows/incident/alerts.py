"""The alerts of one incident's scope: which joined, which repeat, which resolved.

Alertmanager sends every alert of a fault (one per instance, node or pod) and sends each again
every `repeat_interval` and from both HA peers. All of them land here through the
`alert_firing` signal (sent with the start, so two webhook calls cannot race into two
incidents). An alert is known by its fingerprint; the same fingerprint with a later `startsAt`
is the same alert firing again. The fault is gone when every alert has resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from temporalio import workflow

from workflows.incident.state import IncidentState, ScopeAlert
from workflows.incident.models import Alert, AlertFiring, AlertResolved
from workflows.incident.report import clock
from workflows.incident.timeline import TimelineEntry

Arrival = Literal["joined", "repeat", "fired-again"]


class ScopeAlerts:
    def __init__(self, state: IncidentState, record: Callable[..., TimelineEntry]) -> None:
        self._state = state
        self._record = record
        self._by_fingerprint: dict[str, ScopeAlert] = {}
        self._repeat_entry: TimelineEntry | None = None
        # Alerts that fired once the incident was resolved: they open the next incident of the scope.
        self.late: list[AlertFiring] = []
        self._start_copy: tuple[str, datetime] | None = None

    def add_first(self, alert: Alert, at: datetime) -> None:
        """The alert that opened the incident (its input)."""
        self._add(alert, at)
        # The webhook opens a scoped incident by signal-with-start: its signal carries this very
        # alert, which is not a repeat (a continued run gets no such signal).
        if self._state.scope is not None and workflow.info().continued_run_id is None:
            self._start_copy = (alert.fingerprint, alert.starts_at)

    @property
    def all_resolved(self) -> bool:
        return bool(self._by_fingerprint) and not any(a.firing for a in self._by_fingerprint.values())

    @property
    def firing(self) -> list[ScopeAlert]:
        return [a for a in self._by_fingerprint.values() if a.firing]

    def fired(self, signal: AlertFiring) -> Arrival:
        alert = signal.alert
        known = self._by_fingerprint.get(alert.fingerprint)
        if known is None:
            self._add(alert, signal.received_at)
            labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
            self._record(
                "alert", f"{alert.alertname} joined: {alert.summary}", outcome=labels or None, at=signal.received_at
            )
            return "joined"
        if known.resolved_at is not None and alert.starts_at > known.starts_at:
            known.starts_at, known.resolved_at, known.joined_at = alert.starts_at, None, signal.received_at
            self._state.fault_gone_at = None
            self._record(
                "alert",
                f"{alert.alertname} fired again",
                outcome=f"since {clock(alert.starts_at)}",
                at=signal.received_at,
            )
            return "fired-again"
        if self._start_copy == (alert.fingerprint, alert.starts_at):
            self._start_copy = None  # the start's own signal (see add_first)
            return "repeat"
        known.repeats += 1
        self._state.alert_repeats += 1
        if self._repeat_entry is None:
            self._repeat_entry = self._record("alert", "alert notification repeated", at=signal.received_at)
        self._repeat_entry.outcome = f"{self._state.alert_repeats} repeat(s), last at {clock(signal.received_at)}"
        return "repeat"

    def fired_after_resolution(self, signal: AlertFiring) -> None:
        """A new alert (or a new firing of one) while the resolved incident closes: kept for the next."""
        alert = signal.alert
        known = self._by_fingerprint.get(alert.fingerprint)
        if known is not None and alert.starts_at <= known.starts_at:
            return  # a repeat of what this incident handled
        if any(late.alert.fingerprint == alert.fingerprint for late in self.late):
            return
        self.late.append(signal)
        self._record(
            "alert",
            f"{alert.alertname} fired after resolution",
            outcome="it opens the next incident of this scope",
            at=signal.received_at,
        )

    def repeated(self, at: datetime) -> None:
        """A repeat from triggers older than scopes: it names no alert, so it counts for the first."""
        first = next(iter(self._by_fingerprint.values()), None)
        if first is not None:
            self.fired(
                AlertFiring(alert=self._state.alert.model_copy(update={"starts_at": first.starts_at}), received_at=at)
            )

    def resolved(self, signal: AlertResolved) -> bool:
        """Marks the alert resolved; True when this made every alert of the scope resolved."""
        if signal.fingerprint is None:
            targets = [a for a in self._by_fingerprint.values() if a.firing]  # older triggers: all of them
        else:
            known = self._by_fingerprint.get(signal.fingerprint)
            stale = known is not None and signal.starts_at is not None and signal.starts_at < known.starts_at
            targets = [known] if known is not None and known.firing and not stale else []
            if not targets:
                return False  # an alert of an earlier incident of this scope, or resolved already
        for alert in targets:
            alert.resolved_at = signal.ends_at
            left = len(self.firing)
            self._record(
                "alert",
                f"{alert.alertname} resolved (from {signal.source})",
                outcome=f"{left} alert(s) of the scope still firing" if left else None,
                at=signal.ends_at,
            )
        if self.all_resolved and self._state.fault_gone_at is None:
            self._state.fault_gone_at = max(a.resolved_at for a in self._by_fingerprint.values() if a.resolved_at)
            self._state.alert_resolved_at = self._state.fault_gone_at
            self._record(
                "status",
                "every alert of the scope resolved: the fault is gone",
                outcome="no new write starts; open gates are withdrawn; verification runs",
            )
            return True
        return False

    def _add(self, alert: Alert, at: datetime) -> None:
        record = ScopeAlert(
            alertname=alert.alertname,
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at,
            labels=alert.labels,
            joined_at=at,
        )
        self._by_fingerprint[alert.fingerprint] = record
        self._state.alerts.append(record)
