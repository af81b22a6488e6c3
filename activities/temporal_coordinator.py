"""Talking to the coordinator workflow: from an incident (activities) and from the webhook (helpers).

Each call starts the coordinator if it is not running: update-with-start with
`id_conflict_policy=USE_EXISTING` (the dev server and the time-skipping test server both have it,
tests/test_coordinator.py runs on both), or signal-with-start for the webhook's fire-and-forget.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from datetime import datetime, timezone
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.incident.coordination_models import (
    COORDINATOR_WORKFLOW_TYPE,
    QUERY_ALERT_VERDICT,
    SIGNAL_ALERT_RESOLVED_EARLY,
    UPDATE_ALERT_VERDICT,
    SIGNAL_ALERTS_CLOSED,
    SIGNAL_RELEASE,
    UPDATE_CLAIM,
    AlertKey,
    AlertResolvedEarly,
    AlertsClosed,
    AlertVerdict,
    ClaimAnswer,
    CoordinatorInput,
    ReleaseRequest,
    WriteClaim,
    coordinator_workflow_id,
)
from workflows.incident.models import TASK_QUEUE

# How long a coordinator call waits for its turn when the server refuses it for too many updates
# in flight (seconds; the calling activities' start-to-close timeout is 30 s).
BUSY_WAIT_SECONDS = 20.0
_BUSY = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE)


async def coordinator_update(
    client: Client,
    update: str,
    arg: Any,
    *,
    result_type: type,
    task_queue: str = TASK_QUEUE,
    start_input: CoordinatorInput | None = None,
) -> Any:
    """Run an update on the coordinator of `task_queue`, starting it first if it is not running.

    Raises WorkflowUpdateFailedError when the coordinator refuses the update, RPCError when Temporal
    does (RESOURCE_EXHAUSTED only after BUSY_WAIT_SECONDS of jittered retries).
    """
    wf_id = coordinator_workflow_id(task_queue)
    start_arg = start_input or CoordinatorInput()
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    for attempt in itertools.count():
        op: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            COORDINATOR_WORKFLOW_TYPE,
            start_arg,
            id=wf_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        try:
            return await client.execute_update_with_start_workflow(
                update, arg, start_workflow_operation=op, result_type=result_type
            )
        except RPCError as err:
            # The server lets 10 updates wait on one workflow: in a storm (many incidents closing
            # or claiming at once) the rest are refused at once. They wait their turn, jittered.
            # An update the server aborted under that load (UNAVAILABLE) is retried the same way.
            if err.status not in _BUSY or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(random.uniform(0.05, min(2.0, 0.1 * 2**attempt)))
    raise AssertionError("unreachable")


async def coordinator_signal(client: Client, signal: str, arg: Any, *, task_queue: str = TASK_QUEUE) -> None:
    """Signal the coordinator of `task_queue`, starting it if it is not running (signal-with-start):
    persisted in its history when this returns, handled in order with every other update and signal,
    seen by a later query; it never waits on the coordinator's worker."""
    await client.start_workflow(
        COORDINATOR_WORKFLOW_TYPE,
        CoordinatorInput(),
        id=coordinator_workflow_id(task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=signal,
        start_signal_args=[arg],
    )


async def signal_alert_resolved_early(
    client: Client, key: AlertKey, *, task_queue: str = TASK_QUEUE, received_at: datetime | None = None
) -> None:
    """For the webhook: a resolved alert that has no incident; a later firing of the same key then
    gets "resolved-before-firing"."""
    early = AlertResolvedEarly(key=key, received_at=received_at or datetime.now(timezone.utc))
    await coordinator_signal(client, SIGNAL_ALERT_RESOLVED_EARLY, early, task_queue=task_queue)


async def alert_verdict(client: Client, key: AlertKey, *, task_queue: str = TASK_QUEUE) -> AlertVerdict:
    """For the webhook: "new", "closed-by:<incident>" or "resolved-before-firing" for one alert firing."""
    return await coordinator_update(client, UPDATE_ALERT_VERDICT, key, result_type=AlertVerdict, task_queue=task_queue)


class CoordinationActivities:
    """Incidents' calls to the coordinator of `task_queue` (holds, caps, the alert ledger).

    Every method is safe to retry: a claim carries a claim id (the calling activity's, when the
    incident gives none), so a retry is answered as before and counted once.
    """

    def __init__(self, client: Client, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    async def _update(self, update: str, arg: Any, result_type: type) -> Any:
        try:
            return await coordinator_update(
                self.client, update, arg, result_type=result_type, task_queue=self.task_queue
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            raise ApplicationError(
                f"the coordinator refused {update}: {getattr(cause, 'message', cause)}",
                type="CoordinatorRefused",
                non_retryable=True,
            ) from err

    @activity.defn
    async def claim_write(self, claim: WriteClaim) -> ClaimAnswer:
        """Ask to write an object: granted, held by another open incident (`held_by`), or `capped`.

        Raises non-retryable ApplicationError (CoordinatorRefused) when the coordinator refuses
        the claim itself (a claim id reused for another object).
        """
        if claim.claim_id is None:
            info = activity.info()
            claim = claim.model_copy(
                update={"claim_id": f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"}
            )
        # Not the server's update id: an incident may claim again with the same id after a wait,
        # and must then get a fresh answer; the coordinator dedupes granted claims by claim_id.
        return await self._update(UPDATE_CLAIM, claim, ClaimAnswer)

    @activity.defn
    async def release_holds(self, request: ReleaseRequest) -> int:
        """Drop the incident's holds (at its end, or for objects it is done with). Sent as a signal (a
        storm closes many incidents at once; updates would queue behind the limit of 10): returns 0,
        the coordinator counts what it drops."""
        await coordinator_signal(self.client, SIGNAL_RELEASE, request, task_queue=self.task_queue)
        return 0

    @activity.defn
    async def record_alerts_closed(self, closed: AlertsClosed) -> int:
        """The incident closed: its alerts' repeats get "closed-by:<incident>". Sent as a signal, like
        `release_holds`; returns how many alerts it recorded."""
        await coordinator_signal(self.client, SIGNAL_ALERTS_CLOSED, closed, task_queue=self.task_queue)
        return len(closed.keys)

    @activity.defn
    async def alert_verdict(self, key: AlertKey) -> AlertVerdict:
        """The ledger's word on one alert firing: only "new" may run a playbook.

        Asked as a query: every new incident asks, and the server lets only 10 updates wait on one
        workflow at once (a storm of new incidents got "limit on number of concurrent in-flight
        updates" and ran without the ledger). No coordinator running means no ledger yet: "new".
        A coordinator of older code, without the query, is asked by update.
        """
        handle = self.client.get_workflow_handle(coordinator_workflow_id(self.task_queue))
        try:
            return await handle.query(QUERY_ALERT_VERDICT, key, result_type=AlertVerdict)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return AlertVerdict(verdict="new")
            raise
        except WorkflowQueryFailedError:
            return await self._update(UPDATE_ALERT_VERDICT, key, AlertVerdict)
