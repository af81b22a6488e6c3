"""Running the test playbooks on the time-skipping server with recording Slack fakes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.fixtures_slack import RecordingSlack
from tests.incident_playbooks import ActEveryFiveMinutes, GatedFix, RegisterInRun, WaitForHumans, touch_deployment
from workflows.models import Alert, IncidentInput
from workflows.triage import Triage

PLAYBOOKS = [WaitForHumans, GatedFix, ActEveryFiveMinutes, RegisterInRun, Triage]


def incident_input(starts_at: datetime, **fields: Any) -> IncidentInput:
    alert = Alert(
        alertname="LLMDServiceDown",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=starts_at,
        labels={"alertname": "LLMDServiceDown", "namespace": "llm", "severity": "critical"},
        annotations={"summary": "llm-d service is down", "runbook_url": "https://runbooks.example/sop-001"},
    )
    fields.setdefault("runbook", "test-outage")
    fields.setdefault("incident_commander", "alice")
    return IncidentInput(alert=alert, **fields)


@asynccontextmanager
async def incident_worker(
    env: WorkflowEnvironment, task_queue: str, slack: RecordingSlack, *, activities: list | None = None
) -> AsyncIterator[Worker]:
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=PLAYBOOKS,
        activities=[*slack.activities, touch_deployment, *(activities or [])],
    ) as worker:
        yield worker


async def start(env: WorkflowEnvironment, playbook: Any, inp: IncidentInput, task_queue: str) -> WorkflowHandle:
    return await env.client.start_workflow(
        playbook.run, inp, id=f"incident-{uuid.uuid4().hex[:12]}", task_queue=task_queue
    )


def minutes_after(at: datetime, start: datetime) -> float:
    return (at - start).total_seconds() / 60
