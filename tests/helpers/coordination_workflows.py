"""A minimal incident for the coordinator's tests: it claims writes through CoordinationActivities
and keeps the coordination notes the coordinator sends it, as the real Incident will.

Outside the test modules so the workflow sandbox never re-imports pytest.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.incident.coordination_models import (
    SIGNAL_COORDINATION_NOTE,
    AlertKey,
    AlertsClosed,
    ClaimAnswer,
    CoordinationNote,
    ReleaseRequest,
    WriteClaim,
)

with workflow.unsafe.imports_passed_through():
    from activities.temporal_coordinator import CoordinationActivities

QUICK = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": RetryPolicy(maximum_attempts=3)}


class HolderInput(BaseModel):
    runbook: str
    alerts: list[AlertKey] = Field(default_factory=list)
    release_at_end: bool = True


class Finish(BaseModel):
    note: str = "resolved"


@workflow.defn(name="CoordinatedIncident")
class CoordinatedIncident:
    """Claims on request (update `write`), hears who waited (signal), releases and closes its alerts at the end."""

    @workflow.init
    def __init__(self, inp: HolderInput) -> None:
        self.inp = inp
        self.notes: list[CoordinationNote] = []
        self.finished = False

    @workflow.run
    async def run(self, inp: HolderInput) -> list[str]:
        await workflow.wait_condition(lambda: self.finished)
        incident = workflow.info().workflow_id
        if inp.release_at_end:
            await workflow.execute_activity_method(
                CoordinationActivities.release_holds, ReleaseRequest(incident_id=incident), **QUICK
            )
        if inp.alerts:
            await workflow.execute_activity_method(
                CoordinationActivities.record_alerts_closed,
                AlertsClosed(incident_id=incident, keys=inp.alerts),
                **QUICK,
            )
        return [n.sentence for n in self.notes]

    @workflow.update
    async def write(self, claim: WriteClaim) -> ClaimAnswer:
        return await workflow.execute_activity_method(CoordinationActivities.claim_write, claim, **QUICK)

    @workflow.signal(name=SIGNAL_COORDINATION_NOTE)
    def coordination_note(self, note: CoordinationNote) -> None:
        self.notes.append(note)

    @workflow.query
    def heard(self) -> list[CoordinationNote]:
        return self.notes

    @workflow.signal
    def finish(self, _: Finish) -> None:
        self.finished = True
