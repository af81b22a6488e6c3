"""Escalation: who is paged when, measured from the alert's startsAt.

The SOP document's escalation path (seed 000): 0-15 min on-call SRE, 15-30 Senior SRE,
30-45 Engineering team, 45+ Incident Commander + Engineering Manager. Each mark is a durable
timer (a `wait_condition` with a timeout) that resolution cancels, so it fires after a
worker crash too, never after resolution, and at once when the incident starts late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

from workflows.incident.models import EscalationStep

FIRST_RESPONDER = "On-call SRE"
# Who each successive mark pages, in the SOP document's words.
ESCALATION_PATH = ("Senior SRE", "Engineering team", "Incident Commander + Engineering Manager")


@dataclass(frozen=True, init=False)
class EscalationPolicy:
    steps: tuple[EscalationStep, ...]

    def __init__(self, steps: Sequence[EscalationStep]) -> None:
        ordered = tuple(sorted(steps, key=lambda s: s.after_minutes))
        for before, after in zip(ordered, ordered[1:]):
            if after.after_minutes == before.after_minutes or after.level <= before.level:
                raise ValueError(f"escalation marks must rise in time and level: {before} then {after}")
        object.__setattr__(self, "steps", ordered)

    @classmethod
    def of(cls, *minutes: float, path: Sequence[str] = ESCALATION_PATH) -> EscalationPolicy:
        """`EscalationPolicy.of(10, 20)`: marks at those minutes along the SOP's path (the last name repeats)."""
        if not minutes:
            raise ValueError("an escalation policy needs at least one mark")
        return cls(
            [
                EscalationStep(after_minutes=m, notify=path[min(i, len(path) - 1)], level=i + 1)
                for i, m in enumerate(minutes)
            ]
        )

    @classmethod
    def standard(cls) -> EscalationPolicy:
        """15/30/45 minutes: Senior SRE, Engineering team, Incident Commander + Engineering Manager."""
        return cls.of(15, 30, 45)

    def step_after(self, level: int) -> EscalationStep | None:
        """The next step above `level`, or None at the top."""
        return next((s for s in self.steps if s.level > level), None)

    def beyond(self, level: int) -> EscalationStep | None:
        """One level above `level` once the marks are used up (a human's "escalate", a timed-out
        gate): the next rung of the SOP document's path (seed 000: Senior SRE, Engineering team,
        Incident Commander + Engineering Manager). None at the top of that path.

        SOP-004 for one deployment has a single mark (level 1): without this a second "escalate"
        paged level 1 again (issue 8).
        """
        if level >= len(ESCALATION_PATH):
            return None
        after = self.steps[-1].after_minutes if self.steps else 1
        return EscalationStep(after_minutes=after, notify=ESCALATION_PATH[level], level=level + 1)

    def who(self, level: int) -> str:
        """Who `level` pages: its mark's name, else (past the marks) the SOP path's rung, else on-call."""
        beyond = ESCALATION_PATH[level - 1] if 1 <= level <= len(ESCALATION_PATH) else FIRST_RESPONDER
        return next((s.notify for s in self.steps if s.level == level), beyond)


async def run_escalation(
    policy: EscalationPolicy,
    starts_at: datetime,
    *,
    stopped: Callable[[], bool],
    level: Callable[[], int],
    fire: Callable[[EscalationStep, bool], Awaitable[None]],
) -> None:
    """Fire each mark once, on time, while not `stopped()`.

    A mark whose level was already reached (a human pressed "escalate now") is skipped. `fire`
    gets the step and whether it fired late (its mark was already past when it was reached).
    """
    for step in policy.steps:
        if stopped():
            return
        due = starts_at + timedelta(minutes=step.after_minutes)
        remaining = due - workflow.now()
        late = remaining <= timedelta(0)
        if not late:
            try:
                await workflow.wait_condition(
                    stopped,
                    timeout=remaining,
                    timeout_summary=f"escalate to {step.notify} at {step.after_minutes:g} min",
                )
                return  # stopped before the mark
            except asyncio.TimeoutError:
                pass
        if stopped():
            return
        if level() < step.level:
            await fire(step, late)
