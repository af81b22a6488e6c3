"""Alertmanager's webhook (payload version 4) and what each alert in it does to an incident.

An incident is a fault with a scope (workflows/incident/scope.py): every alert whose labels give the
same playbook + scope starts or joins the one open incident of that scope (signal-with-start,
so concurrent webhook calls and HA duplicates can't race into two). Alertmanager delivers at
least once: repeats and duplicates join as repeats. A resolved alert only ever signals; the
incident is resolved by alert once every alert of its scope has resolved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from settings import Settings
from triggers.metrics import TriggerMetrics
from triggers.payload import AlertmanagerAlert, AlertmanagerPayload, drill_time_scale, is_drill
from triggers.routing import ClusterRoute, RoutedAlert, RoutingCatalog
from workflows.incident import search
from workflows.playbooks.catalog import playbook
from workflows.incident.models import (
    SIGNAL_ALERT_FIRING,
    SIGNAL_ALERT_RESOLVED,
    Alert,
    AlertFiring,
    AlertResolved,
    IncidentInput,
    UnservedCluster,
    incident_id,
)
from workflows.incident.coordination_models import (
    COORDINATOR_WORKFLOW_TYPE,
    SIGNAL_ALERT_RESOLVED_EARLY,
    AlertKey,
    AlertResolvedEarly,
    CoordinatorInput,
    coordinator_workflow_id,
)
from workflows.incident.scope import legacy_scope_incident_id, scope_incident_id

log = logging.getLogger(__name__)

# Temporal rejects oversized keyword search attributes; labels can be anything.
_KEYWORD_MAX = 255

Action = Literal[
    "started",
    "joined",
    "resolve-signalled",
    "resolved-no-incident",
    # older ids (playbook + fingerprint + startsAt), for incidents opened before scopes
    "repeat-recorded",
    "already-finished",
]


@dataclass(frozen=True)
class AlertOutcome:
    incident: str
    alertname: str
    runbook: str
    action: Action
    scope: str = ""


@dataclass(frozen=True)
class StartCall:
    """One firing alert's signal-with-start: `client.start_workflow(workflow, arg, **options,
    start_signal=SIGNAL_ALERT_FIRING, start_signal_args=[firing])`."""

    workflow: str
    arg: IncidentInput
    options: dict[str, Any]
    firing: AlertFiring


class TemporalUnavailable(Exception):
    """Temporal could not be reached; the webhook answers 503 so Alertmanager retries."""


class AlertIntake:
    """Turns each alert of a notification into a start or a join of its scope's incident, or a resolve."""

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
        self._catalog = catalog or RoutingCatalog.from_settings(settings.routing)

    async def handle(self, payload: AlertmanagerPayload) -> list[AlertOutcome]:
        """Every alert on its own; raises TemporalUnavailable if any could not be handed over."""
        client = await self._client()
        results = await asyncio.gather(
            *(self._one(client, a, payload.group_key) for a in payload.alerts), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, TemporalUnavailable):
                raise failure  # a bug, not Temporal: let it be a 500
        if failures:
            raise failures[0]
        return [r for r in results if isinstance(r, AlertOutcome)]

    async def _one(self, client: Client, alert: AlertmanagerAlert, group_key: str | None) -> AlertOutcome:
        self._metrics.alerts_received.labels(alert.status).inc()
        routed, wf_id = self.route(alert, group_key)
        try:
            if alert.status == "firing":
                action = await self._firing(client, alert, routed, wf_id)
            else:
                action, wf_id = await self._resolved(client, alert, routed, wf_id)
        except RPCError as err:
            # Whatever Temporal said, the alert is not persisted: Alertmanager must retry.
            raise TemporalUnavailable(f"{wf_id}: {err.status.name if err.status else ''} {err.message}") from err
        log.info(
            "alert %s (%s) -> %s: %s [cluster %s: %s%s; %s; scope %s: %s; %s: %s]",
            alert.alertname,
            alert.status,
            wf_id,
            action,
            _cluster(routed).name,
            _cluster(routed).why,
            "" if _cluster(routed).served else ", served by no worker",
            routed.why,
            routed.scope.key,
            routed.scope.why,
            routed.severity,
            routed.severity_why,
        )
        return AlertOutcome(wf_id, alert.alertname, routed.runbook, action, routed.scope.key)

    def route(self, alert: AlertmanagerAlert, group_key: str | None) -> tuple[RoutedAlert, str]:
        """The alert's cluster, playbook and scope, and the id of the scope's incident."""
        cluster = self.cluster_of(alert.labels)
        routed = self._catalog.route(
            alert.labels,
            group_key=group_key,
            fingerprint=alert.fingerprint,
            cluster=None if cluster.name == self._settings.clusters.default else cluster.name,
        )
        routed = dataclasses.replace(routed, cluster=cluster)
        return routed, self._settings.temporal.incident_id_prefix + scope_incident_id(routed.runbook, routed.scope.key)

    def cluster_of(self, labels: dict[str, str]) -> ClusterRoute:
        """The alert's cluster and its task queue; a cluster no worker serves runs on the default's
        queue (some worker must tell on-call) and the incident acts nowhere."""
        s = self._settings
        name, why = s.clusters.of(labels)
        served = s.clusters.serves(name)
        return ClusterRoute(name, why, served, s.cluster_task_queue(name if served else s.clusters.default))

    def start_call(self, alert: AlertmanagerAlert, routed: RoutedAlert, wf_id: str) -> StartCall:
        """The signal-with-start a firing alert makes (benchmarks replay it as raw `start_workflow`)."""
        # USE_EXISTING: the first alert of the scope starts the incident, every other joins it,
        # atomically on the server, so two webhook calls cannot open two incidents.
        # ALLOW_DUPLICATE: once an incident of the scope has closed, a new fault opens a new one.
        return StartCall(
            workflow=routed.workflow_type,
            arg=self._incident_input(alert, routed),
            options={
                "id": wf_id,
                "task_queue": _cluster(routed).task_queue,
                "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
                "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                "search_attributes": _search_attributes(alert, routed),
                "static_summary": f"{alert.alertname}: {_summary(alert)}"[:400],
                "rpc_timeout": self._rpc_timeout,
            },
            firing=AlertFiring(alert=_alert(alert), received_at=datetime.now(timezone.utc)),
        )

    async def _firing(self, client: Client, alert: AlertmanagerAlert, routed: RoutedAlert, wf_id: str) -> Action:
        call = self.start_call(alert, routed, wf_id)
        handle = await client.start_workflow(
            call.workflow,
            call.arg,
            **call.options,
            start_signal=SIGNAL_ALERT_FIRING,
            start_signal_args=[call.firing],
        )
        # The server says whether this call started the run (the SDK keeps its answer on the handle).
        response = getattr(handle, "_start_workflow_response", None)
        if response is not None and not getattr(response, "started", True):
            self._metrics.alerts_deduplicated.labels("joined").inc()
            return "joined"
        self._metrics.alerts_routed.labels(routed.runbook).inc()
        return "started"

    async def _resolved(
        self, client: Client, alert: AlertmanagerAlert, routed: RoutedAlert, wf_id: str
    ) -> tuple[Action, str]:
        # Only ever a signal: a resolved alert must never start (or remediate) anything.
        resolved = AlertResolved(
            ends_at=alert.ends_at or datetime.now(timezone.utc),
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at,
        )
        # The scope's incident, and the id incidents had before scopes (playbook + fingerprint +
        # startsAt), so an incident opened by older triggers still hears its alert resolve.
        signalled = [
            t
            for t in dict.fromkeys((wf_id, *self._older_ids(alert, routed)))
            if await self._signal_if_running(client, t, resolved)
        ]
        if signalled:
            self._metrics.alerts_resolved.labels("signalled").inc()
            return "resolve-signalled", signalled[0]
        # No incident to tell. Should the firing arrive after this (out of order, or a retry), the
        # alert ledger makes the incident it starts end at once: nothing acts on a resolved alert.
        task_queue = _cluster(routed).task_queue
        await client.start_workflow(
            COORDINATOR_WORKFLOW_TYPE,
            CoordinatorInput(),
            id=coordinator_workflow_id(task_queue),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=SIGNAL_ALERT_RESOLVED_EARLY,
            start_signal_args=[
                AlertResolvedEarly(
                    key=AlertKey(fingerprint=alert.fingerprint, starts_at=alert.starts_at),
                    received_at=datetime.now(timezone.utc),
                )
            ],
            rpc_timeout=self._rpc_timeout,
        )
        self._metrics.alerts_resolved.labels("no-incident").inc()
        return "resolved-no-incident", wf_id

    async def _signal_if_running(self, client: Client, wf_id: str, resolved: AlertResolved) -> bool:
        try:
            await client.get_workflow_handle(wf_id).signal(
                SIGNAL_ALERT_RESOLVED, resolved, rpc_timeout=self._rpc_timeout
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return False
        return True

    def _older_ids(self, alert: AlertmanagerAlert, routed: RoutedAlert) -> tuple[str, ...]:
        """Ids earlier releases gave this alert's incident: 1.0's scope id, and the id before scopes."""
        prefix = self._settings.temporal.incident_id_prefix
        return (
            prefix + legacy_scope_incident_id(routed.runbook, routed.scope.key),
            incident_id(routed.runbook, alert.fingerprint, alert.starts_at),
        )

    @property
    def _rpc_timeout(self) -> timedelta:
        return timedelta(seconds=self._settings.temporal.rpc_timeout_seconds)

    def _incident_input(self, alert: AlertmanagerAlert, routed: RoutedAlert) -> IncidentInput:
        s = self._settings
        cluster = _cluster(routed)
        unserved = (
            None
            if cluster.served
            else UnservedCluster(cluster=cluster.name, label=s.clusters.label, served=s.clusters.names())
        )
        return IncidentInput(
            alert=_alert(alert),
            runbook=routed.runbook,
            severity=routed.severity,
            namespace=alert.labels.get("namespace") or None,
            scope=routed.scope.key,
            scope_kind=routed.scope.kind,
            mode=s.mode_for(routed.runbook, alert.labels),
            slack_channel=s.slack.channel_for(routed.severity),
            approvers=s.approvers.for_incident(routed.severity),
            escalation=s.escalation.steps_with_contacts(),
            escalation_contacts=s.escalation.contacts,
            ui_url=s.temporal.ui_url,
            coordinated=True,
            caps=s.caps,
            drill=is_drill(alert, s.drills.enabled),
            time_scale=drill_time_scale(alert, s.drills.enabled),
            cluster=cluster.name,
            unserved_cluster=unserved,
            paging=s.pagerduty.plan_for(cluster.name),
        )


def _cluster(routed: RoutedAlert) -> ClusterRoute:
    if routed.cluster is None:
        raise ValueError("the alert was routed without its cluster: use AlertIntake.route")
    return routed.cluster


def _alert(alert: AlertmanagerAlert) -> Alert:
    return Alert(
        alertname=alert.alertname,
        fingerprint=alert.fingerprint,
        starts_at=alert.starts_at,
        status="firing",
        labels=alert.labels,
        annotations=alert.annotations,
        generator_url=alert.generator_url,
    )


def _summary(alert: AlertmanagerAlert) -> str:
    return alert.annotations.get("summary") or alert.alertname


def _search_attributes(alert: AlertmanagerAlert, routed: RoutedAlert) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(search.RUNBOOK, routed.runbook),
        SearchAttributePair(search.INCIDENT_STATUS, "open"),
        SearchAttributePair(search.ALERT_NAME, alert.alertname[:_KEYWORD_MAX]),
        SearchAttributePair(search.ESCALATION_LEVEL, 0),
        SearchAttributePair(search.CLUSTER, _cluster(routed).name[:_KEYWORD_MAX]),
    ]
    # Indexed with the start even when the playbook's default decides it: the incident then needs
    # no upsert of its own in its first task (workflows/incident_state.indexed_at_start).
    severity = routed.severity or playbook(routed.runbook).policy.default_severity
    pairs.append(SearchAttributePair(search.INCIDENT_SEVERITY, severity))
    if alert.labels.get("namespace"):
        pairs.append(SearchAttributePair(search.TARGET_NAMESPACE, alert.labels["namespace"][:_KEYWORD_MAX]))
    return TypedSearchAttributes(pairs)
