"""Alertmanager's webhook (payload version 4) and what each alert in it does to an incident.

Alertmanager delivers at least once: HA pairs send the same group twice, every
repeat_interval the group comes again, and it retries on 5xx. So each alert maps to one
workflow id (playbook + fingerprint + startsAt): a start is absorbed by the running or
finished incident of that id, and a resolved alert only ever signals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from triggers.config import Settings
from triggers.metrics import TriggerMetrics
from triggers.payload import AlertmanagerAlert, AlertmanagerPayload, drill_time_scale, is_drill
from triggers.routing import RoutedAlert, RoutingCatalog
from workflows import search
from workflows.models import (
    SIGNAL_ALERT_REPEATED,
    SIGNAL_ALERT_RESOLVED,
    Alert,
    AlertRepeated,
    AlertResolved,
    IncidentInput,
    incident_id,
)

log = logging.getLogger(__name__)

# Temporal rejects oversized keyword search attributes; labels can be anything.
_KEYWORD_MAX = 255

Action = Literal["started", "repeat-recorded", "already-finished", "resolve-signalled", "resolved-no-incident"]


@dataclass(frozen=True)
class AlertOutcome:
    incident: str
    alertname: str
    runbook: str
    action: Action


class TemporalUnavailable(Exception):
    """Temporal could not be reached; the webhook answers 503 so Alertmanager retries."""


class AlertIntake:
    """Turns each alert of a notification into a start, a repeat or a resolve of its incident."""

    def __init__(
        self,
        settings: Settings,
        client: Callable[[], Awaitable[Client]],
        metrics: TriggerMetrics,
        catalog: RoutingCatalog | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._metrics = metrics
        self._catalog = catalog or settings.routing.catalog()

    async def handle(self, payload: AlertmanagerPayload) -> list[AlertOutcome]:
        """Every alert on its own; raises TemporalUnavailable if any could not be handed over."""
        client = await self._client()
        results = await asyncio.gather(*(self._one(client, a) for a in payload.alerts), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, TemporalUnavailable):
                raise failure  # a bug, not Temporal: let it be a 500
        if failures:
            raise failures[0]
        return [r for r in results if isinstance(r, AlertOutcome)]

    async def _one(self, client: Client, alert: AlertmanagerAlert) -> AlertOutcome:
        self._metrics.alerts_received.labels(alert.status).inc()
        routed = self._catalog.route(alert.labels)
        wf_id = incident_id(routed.runbook, alert.fingerprint, alert.starts_at)
        try:
            if alert.status == "firing":
                action = await self._firing(client, alert, routed, wf_id)
            else:
                action = await self._resolved(client, alert, wf_id)
        except RPCError as err:
            # Whatever Temporal said, the alert is not persisted: Alertmanager must retry.
            raise TemporalUnavailable(f"{wf_id}: {err.status.name if err.status else ''} {err.message}") from err
        log.info("alert %s (%s) -> %s: %s [%s]", alert.alertname, alert.status, wf_id, action, routed.why)
        return AlertOutcome(wf_id, alert.alertname, routed.runbook, action)

    async def _firing(self, client: Client, alert: AlertmanagerAlert, routed: RoutedAlert, wf_id: str) -> Action:
        # FAIL + REJECT_DUPLICATE: one workflow per id, ever. A running incident answers the
        # conflict (we then record the repeat); a finished one stays finished.
        try:
            await client.start_workflow(
                routed.workflow_type,
                self._incident_input(alert, routed),
                id=wf_id,
                task_queue=self._settings.temporal.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=_search_attributes(alert, routed),
                static_summary=f"{alert.alertname}: {_summary(alert)}"[:400],
                rpc_timeout=self._rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            return await self._repeat(client, wf_id)
        self._metrics.alerts_routed.labels(routed.runbook).inc()
        return "started"

    async def _repeat(self, client: Client, wf_id: str) -> Action:
        try:
            await client.get_workflow_handle(wf_id).signal(
                SIGNAL_ALERT_REPEATED,
                AlertRepeated(received_at=datetime.now(timezone.utc)),
                rpc_timeout=self._rpc_timeout,
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            self._metrics.alerts_deduplicated.labels("finished").inc()
            return "already-finished"
        self._metrics.alerts_deduplicated.labels("running").inc()
        return "repeat-recorded"

    async def _resolved(self, client: Client, alert: AlertmanagerAlert, wf_id: str) -> Action:
        # Only ever a signal: a resolved alert must never start (or remediate) anything.
        ends_at = alert.ends_at or datetime.now(timezone.utc)
        try:
            await client.get_workflow_handle(wf_id).signal(
                SIGNAL_ALERT_RESOLVED, AlertResolved(ends_at=ends_at), rpc_timeout=self._rpc_timeout
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            self._metrics.alerts_resolved.labels("no-incident").inc()
            return "resolved-no-incident"
        self._metrics.alerts_resolved.labels("signalled").inc()
        return "resolve-signalled"

    @property
    def _rpc_timeout(self) -> timedelta:
        return timedelta(seconds=self._settings.temporal.rpc_timeout_seconds)

    def _incident_input(self, alert: AlertmanagerAlert, routed: RoutedAlert) -> IncidentInput:
        s = self._settings
        return IncidentInput(
            alert=Alert(
                alertname=alert.alertname,
                fingerprint=alert.fingerprint,
                starts_at=alert.starts_at,
                status="firing",
                labels=alert.labels,
                annotations=alert.annotations,
                generator_url=alert.generator_url,
            ),
            runbook=routed.runbook,
            severity=routed.severity,
            namespace=alert.labels.get("namespace") or None,
            slack_channel=s.slack.channel_for(routed.severity),
            approvers=s.approvers.for_incident(routed.severity),
            escalation=s.escalation.steps_with_contacts(),
            ui_url=s.temporal.ui_url,
            drill=is_drill(alert, s.drills.enabled), time_scale=drill_time_scale(alert, s.drills.enabled),
        )


def _summary(alert: AlertmanagerAlert) -> str:
    return alert.annotations.get("summary") or alert.alertname


def _search_attributes(alert: AlertmanagerAlert, routed: RoutedAlert) -> TypedSearchAttributes:
    pairs = [
        SearchAttributePair(search.RUNBOOK, routed.runbook),
        SearchAttributePair(search.INCIDENT_STATUS, "open"),
        SearchAttributePair(search.ALERT_NAME, alert.alertname[:_KEYWORD_MAX]),
        SearchAttributePair(search.ESCALATION_LEVEL, 0),
    ]
    if routed.severity:
        pairs.append(SearchAttributePair(search.INCIDENT_SEVERITY, routed.severity))
    if alert.labels.get("namespace"):
        pairs.append(SearchAttributePair(search.TARGET_NAMESPACE, alert.labels["namespace"][:_KEYWORD_MAX]))
    return TypedSearchAttributes(pairs)
