"""What happened during an incident, in order: the timeline and the escalation record."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

EntryKind = Literal["step", "action", "check", "escalation", "approval", "human", "alert", "message", "status"]


class TimelineEntry(BaseModel):
    """One thing that happened. A step's entry is open (no `ended_at`) while it runs."""

    kind: EntryKind
    title: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None
    details: list[str] = Field(default_factory=list)
    by: str | None = None

    def note(self, detail: str) -> None:
        """Add a line of detail (a playbook step records what it found)."""
        self.details.append(detail)


class EscalationRecord(BaseModel):
    level: int
    notify: str
    at: datetime
    reason: str
