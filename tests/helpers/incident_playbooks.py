"""Small playbooks composed from the incident machinery, for the time-skipping tests.

They live outside the test modules so the workflow sandbox never re-imports pytest.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

from workflows.incident.escalation import EscalationPolicy
from workflows.incident.incident import Incident
from workflows.incident.state import PlaybookPolicy
from workflows.incident.models import IncidentInput
from workflows.playbooks.kserve.model_not_loading import POLICY as KSERVE_POLICY

with workflow.unsafe.imports_passed_through():
    from activities.models import ClusterChange

POLICY = PlaybookPolicy(
    runbook="test-outage",
    title="Test outage",
    default_severity="P0",
    escalation=EscalationPolicy.standard(),
    impact="test impact",
    resolution_wait=timedelta(hours=2),
)


class TouchRequest(BaseModel):
    name: str
    value: int


@activity.defn(name="touch_deployment")
async def touch_deployment(req: TouchRequest) -> ClusterChange:
    """Stands in for a cluster write: what the playbook changed, with the value it replaced."""
    return ClusterChange(
        action="scale",
        kind="Deployment",
        namespace="llm",
        name=req.name,
        field="spec.replicas",
        before=req.value - 1,
        after=req.value,
    )


@activity.defn(name="touch_forbidden")
async def touch_forbidden(req: TouchRequest) -> ClusterChange:
    raise ApplicationError(f"deployments.apps {req.name!r} is forbidden", non_retryable=True)


@workflow.defn
class WaitForHumans:
    """Does nothing itself: escalation and stakeholder updates run until someone resolves it."""

    policy = POLICY

    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self.incident = Incident(inp, self.policy)

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        return await self.incident.run(self._body)

    async def _body(self) -> None:
        async with self.incident.step("Wait for a human"):
            await workflow.wait_condition(lambda: self.incident.resolved)


@workflow.defn
class WaitForKServeHumans(WaitForHumans):
    """WaitForHumans under a KServe playbook's own policy (seed 004's contacts)."""

    policy = KSERVE_POLICY

    @workflow.run  # Temporal wants the run method on each workflow class
    async def run(self, inp: IncidentInput) -> str:
        return await super().run(inp)


@workflow.defn
class GatedFix:
    """Asks one gate; acts only when approved; resolves either way."""

    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self.incident = Incident(inp, POLICY)

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        return await self.incident.run(self._body)

    async def _body(self) -> None:
        inc = self.incident
        approved = await inc.approval("scale-up", "Scale llm/model to 3 replicas?", destructive=True)
        if approved:
            await inc.act(touch_deployment, TouchRequest(name="model", value=3), summary="scale llm/model to 3")
        inc.resolve("approved and scaled" if approved else "left as is")


@workflow.defn
class ActEveryFiveMinutes:
    """Three cluster writes five minutes apart, then resolves: hand-over must stop the later ones."""

    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self.incident = Incident(inp, POLICY)

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        return await self.incident.run(self._body)

    async def _body(self) -> None:
        inc = self.incident
        for value in (1, 2, 3):
            async with inc.step(f"Scale to {value}"):
                await inc.act(touch_deployment, TouchRequest(name="model", value=value), summary=f"scale to {value}")
            await workflow.sleep(timedelta(minutes=5), summary="let the change settle")
        if inc.automation_allowed:
            inc.resolve("scaled three times")


@workflow.defn
class RegisterInRun:
    """Builds its Incident at the top of run(), not in __init__: shows why playbooks use @workflow.init."""

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        self.incident = Incident(inp, POLICY)
        return await self.incident.run(self._body)

    async def _body(self) -> None:
        await workflow.wait_condition(lambda: self.incident.resolved)


@workflow.defn
class FailingFix:
    """Its one fix fails for good: the incident must be marked failed and escalate at once."""

    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self.incident = Incident(inp, POLICY)

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        return await self.incident.run(self._body)

    async def _body(self) -> None:
        async with self.incident.step("Restart the model"):
            await self.incident.act(touch_forbidden, TouchRequest(name="model", value=1), summary="restart llm/model")


@workflow.defn
class RaisesKeyError:
    """A playbook body with a bug: it looks up a key that is not there."""

    @workflow.init
    def __init__(self, inp: IncidentInput) -> None:
        self.incident = Incident(inp, POLICY)

    @workflow.run
    async def run(self, inp: IncidentInput) -> str:
        return await self.incident.run(self._body)

    async def _body(self) -> None:
        async with self.incident.step("Read the operator's settings"):
            settings: dict[str, str] = {}
            settings["replicas"] = settings["replica"]  # the typo a refactor leaves behind
