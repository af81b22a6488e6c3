"""An incident's side of coordination across incidents (workflows/incident/coordinator.py).

Before a write, the incident claims the object it touches. The coordinator grants it, says
another open incident holds it, or says a blast-radius cap is reached. A held object is waited
for (bounded), then becomes a gate; a capped write becomes a gate; never a silent skip. At its
start the incident asks the alert ledger whether its first alert was already handled (a late
repeat of a closed incident, or resolved before it fired); at its end it records its alerts
as closed and releases its holds.

Which object a write touches is read from the activity's request (`claim_for`): one table, so
playbooks need not say it twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.incident.coordination_models import (
    AlertKey,
    AlertsClosed,
    AlertVerdict,
    Caps,
    ClaimAnswer,
    ObjectKey,
    ReleaseRequest,
    Write,
    WriteClaim,
)

# The machinery's own gate kinds (any playbook may reach them through act()).
GATE_BEYOND_CAP = "beyond-cap"
GATE_HELD_OBJECT = "held-object"
MACHINERY_GATES = (GATE_BEYOND_CAP, GATE_HELD_OBJECT)

# activity name -> (kind, write, the request's field naming the object's namespace, and its name)
# An LLMDeployment's pods are the Deployment of the same name (SOP-001's script restarts
# `deployment/$name` for each failed LLMDeployment), so writes to a model's LLMDeployment and to its
# pods claim that Deployment: SOP-001's restart and SOP-004's fixes of one model meet at one hold.
_WRITES: dict[str, tuple[str, Write, str | None, str]] = {
    "restart_deployment": ("Deployment", "restart", "namespace", "name"),
    "set_image": ("Deployment", "patch", "namespace", "deployment"),
    "scale_deployment": ("Deployment", "patch", "namespace", "name"),
    "apply_ingress": ("Ingress", "patch", "namespace", "name"),
    "delete_ingress": ("Ingress", "delete", "namespace", "name"),
    "restart_daemonset": ("DaemonSet", "restart", "namespace", "name"),
    "cordon_node": ("Node", "cordon", None, "node"),
    "uncordon_node": ("Node", "uncordon", None, "node"),
    "delete_pod": ("Pod", "delete", "namespace", "name"),
    "change_llm_deployment": ("Deployment", "patch", "namespace", "name"),
    "patch_llm_deployment": ("Deployment", "patch", "namespace", "name"),
    "replace_claim": ("PersistentVolumeClaim", "delete", "namespace", "name"),
    "delete_failed_pods": ("Deployment", "restart", "namespace", "app"),  # SOP-004 names them by `app`
    "rollout_undo": ("Deployment", "patch", "namespace", "name"),
    "delete_service_pods": ("Deployment", "restart", "namespace", "deployment"),  # seed 001's pod recovery
    "patch_inference_service": ("InferenceService", "patch", "namespace", "name"),  # seed 004
    "redeploy_inference_service": ("InferenceService", "delete", "namespace", "name"),
}

_CALL = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5)
_TIMEOUT = timedelta(seconds=30)


def activity_name(activity: Callable[..., Any] | str) -> str:
    if isinstance(activity, str):
        return activity
    defn = getattr(activity, "__temporal_activity_definition", None)
    return str(getattr(defn, "name", None) or getattr(activity, "__name__", activity))


def claim_for(activity: Callable[..., Any] | str, arg: BaseModel) -> tuple[ObjectKey, Write] | None:
    """The object a write touches and how, from its request; None for an activity not in the table."""
    known = _WRITES.get(activity_name(activity))
    if known is None:
        return None
    kind, write, ns_field, name_field = known
    name = getattr(arg, name_field, None)
    if not isinstance(name, str) or not name:
        return None
    namespace = getattr(arg, ns_field, None) if ns_field else None
    return ObjectKey(kind=kind, namespace=namespace, name=name), write


Ask = Callable[..., Awaitable[bool]]  # Incident.approval
Record = Callable[..., Any]  # Journal.record


class IncidentCoordination:
    """Claims, the ledger and the end-of-incident bookkeeping for one incident."""

    def __init__(
        self,
        incident_id: str,
        runbook: str,
        caps: Caps | None,
        *,
        hold_wait: timedelta,
        poll: timedelta = timedelta(seconds=15),
    ) -> None:
        self.incident_id = incident_id
        self.runbook = runbook
        self.caps = caps
        self.hold_wait = hold_wait
        self.poll = poll
        self._claims = 0

    async def first_alert_verdict(self, fingerprint: str, starts_at: Any) -> AlertVerdict | None:
        """The ledger's word on the alert that opened this incident; None if the coordinator can't say.

        A local activity, inside the workflow task that asks: no activity task and no second workflow
        task before the first page (bench/README.md, incident_cost)."""
        key = AlertKey(fingerprint=fingerprint, starts_at=starts_at)
        try:
            return await workflow.execute_local_activity(
                "alert_verdict",
                key,
                result_type=AlertVerdict,
                start_to_close_timeout=_TIMEOUT,
                retry_policy=_CALL,
                summary="alert ledger: handled before?",
            )
        except FailureError as err:
            workflow.logger.warning("alert ledger unavailable for %s: %s", self.incident_id, err)
            return None  # never block an incident on the ledger: run the playbook

    async def handled_before(self, fingerprint: str, starts_at: Any, alerts_in_scope: int) -> str | None:
        """Why the incident's first alert needs nothing (None: run the playbook). Other alerts
        that joined already are a fault to handle, whatever the ledger says of the first."""
        verdict = await self.first_alert_verdict(fingerprint, starts_at)
        if verdict is None or verdict.is_new or alerts_in_scope > 1:
            return None
        return (
            f"already handled by incident {verdict.closed_by}"
            if verdict.closed_by
            else "it resolved before its firing arrived"
        )

    async def may_write(
        self,
        activity: Callable[..., Any] | str,
        arg: BaseModel,
        summary: str,
        ask: Ask,
        record: Record,
        still_wanted: Callable[[], bool],
    ) -> bool:
        """Claim the write's object; wait for a holder (bounded) and ask at a gate when held or
        capped. True: go ahead. An activity not in the table goes ahead unclaimed."""
        target = claim_for(activity, arg)
        if target is None:
            return True
        obj, write = target
        answer = await self._claim(obj, write, override=False)
        if answer is None or answer.granted:
            return True
        deadline = workflow.now() + self.hold_wait
        if answer.held_by:
            entry = record(
                "action",
                f"waiting: {obj} is held by incident {answer.held_by}",
                outcome=f"{summary} waits up to {int(self.hold_wait.total_seconds())}s",
            )
            while answer is not None and answer.held_by and workflow.now() < deadline and still_wanted():
                try:
                    await workflow.wait_condition(
                        lambda: not still_wanted(),
                        timeout=min(self.poll, deadline - workflow.now()),
                        timeout_summary=f"wait for {obj} to be released",
                    )
                except asyncio.TimeoutError:
                    pass
                answer = await self._claim(obj, write, override=False)
            if answer is None or answer.granted:
                entry.outcome = "released: going ahead"
                return True
            if not still_wanted():
                return False
            if answer.held_by:
                entry.outcome = f"still held by {answer.held_by} after {int(self.hold_wait.total_seconds())}s"
                question = (
                    f"{obj} is held by incident {answer.held_by} ({answer.held_by_runbook}). "
                    f"Go ahead anyway: {summary}?"
                )
                if not await ask(GATE_HELD_OBJECT, question, target=str(obj), destructive=True):
                    return False
                answer = await self._claim(obj, write, override=True)
                return True  # a human chose to write over the hold
        if answer is not None and answer.capped:
            question = f"Cap reached: {answer.capped}. Go beyond it: {summary}?"
            if not await ask(GATE_BEYOND_CAP, question, target=str(obj), destructive=True):
                return False
            await self._claim(obj, write, override=True)
        return True

    async def _claim(self, obj: ObjectKey, write: Write, *, override: bool) -> ClaimAnswer | None:
        self._claims += 1
        claim = WriteClaim(
            incident_id=self.incident_id,
            runbook=self.runbook,
            object=obj,
            write=write,
            override_cap=override,
            caps=self.caps,
            claim_id=f"{self.incident_id}/{workflow.info().run_id}/claim-{self._claims}",
        )
        try:
            return await workflow.execute_activity(
                "claim_write",
                claim,
                result_type=ClaimAnswer,
                start_to_close_timeout=_TIMEOUT,
                retry_policy=_CALL,
                summary=f"claim {write} of {obj}",
            )
        except FailureError as err:
            # The coordinator is down: acting matters more than the cap; say so on the timeline.
            workflow.logger.warning("coordinator unavailable for %s: %s", self.incident_id, err)
            return None

    async def close(self, alerts: list[tuple[str, Any]]) -> None:
        """The incident ends: its alerts go into the ledger, its holds are released."""
        calls = [
            workflow.execute_activity(
                "release_holds",
                ReleaseRequest(incident_id=self.incident_id),
                result_type=int,
                start_to_close_timeout=_TIMEOUT,
                retry_policy=_CALL,
                summary="release holds",
            ),
        ]
        if alerts:
            keys = [AlertKey(fingerprint=f, starts_at=s) for f, s in alerts]
            calls.append(
                workflow.execute_activity(
                    "record_alerts_closed",
                    AlertsClosed(incident_id=self.incident_id, keys=keys),
                    result_type=int,
                    start_to_close_timeout=_TIMEOUT,
                    retry_policy=_CALL,
                    summary="alert ledger: these alerts are handled",
                )
            )
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, BaseException):
                workflow.logger.warning("coordinator bookkeeping failed for %s: %s", self.incident_id, outcome)
