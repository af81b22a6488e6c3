"""What automation may do now, read from the incident's state: act, write, keep waiting.

Every helper that acts, asks or waits reads the same guard, so they agree on when to stop:
a human's resolve or hand-over stops everything; every alert of the scope resolved (the fault
is gone) stops new writes, except a rollback a human asked for.
"""

from __future__ import annotations

from workflows.incident.models import RollbackRequest
from workflows.incident.state import IncidentState

SKIPPED_ROLLBACK = "skipped: rollback requested"
SKIPPED_STOPPED = "skipped: automation stopped"


class Guard:
    def __init__(self, state: IncidentState) -> None:
        self.state = state
        self.rollback_requested: RollbackRequest | None = None  # signal `request_rollback`

    @property
    def resolved(self) -> bool:
        return self.state.status == "resolved"

    @property
    def automation_allowed(self) -> bool:
        return self.state.status not in ("resolved", "handed-over")

    @property
    def fault_gone(self) -> bool:
        return self.state.fault_gone_at is not None

    @property
    def stop_waiting(self) -> bool:
        return not self.automation_allowed or self.fault_gone

    @property
    def interrupted(self) -> bool:
        """A rollback was asked for, or a wait should end (see `stop_waiting`)."""
        return self.rollback_requested is not None or self.stop_waiting

    @property
    def why_interrupted(self) -> str:
        return SKIPPED_ROLLBACK if self.rollback_requested else SKIPPED_STOPPED

    def why_not_acting(self) -> str:
        s = self.state
        if self.resolved:
            return f"incident resolved by {s.resolved_by}"
        if s.handed_over_to:
            return f"handed over to {s.handed_over_to}"
        if self.fault_gone:
            return "every alert of the scope resolved: the fault is gone"
        return "automation stopped"

    def why_not_writing(self) -> str | None:
        """None when a write may start now, else why not."""
        if self.state.unserved_cluster is not None:  # no worker of the alert's cluster runs this incident
            return f"cluster {self.state.unserved_cluster.cluster!r} is served by no worker"
        if not self.automation_allowed:
            return self.why_not_acting()
        if self.fault_gone and self.rollback_requested is None:
            return self.why_not_acting()
        return None
