"""What happened during an incident, in order: the timeline, its journal and the escalation record."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import workflow

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


class Journal:
    """The incident's timeline as it is written: `record` appends an entry (closed now unless
    the caller reopens it) and returns it, so a step can add its outcome and details later."""

    def __init__(self) -> None:
        self.entries: list[TimelineEntry] = []

    def record(
        self,
        kind: EntryKind,
        title: str,
        *,
        outcome: str | None = None,
        by: str | None = None,
        at: datetime | None = None,
    ) -> TimelineEntry:
        now = workflow.now()
        entry = TimelineEntry(kind=kind, title=title, started_at=at or now, ended_at=now, outcome=outcome, by=by)
        self.entries.append(entry)
        return entry
