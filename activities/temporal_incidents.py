"""Scheduled checks' findings become incidents the way alerts do.

`report_findings` hands the findings, as Alertmanager alerts, to the webhook's own intake
(`triggers.alertmanager.AlertIntake`): the same routing, scope, signal-with-start join, severity
and incident input as an alert from Prometheus. It is the one activity module that imports
`triggers`: the intake is the single path into an incident, and duplicating it here would let a
schedule's finding and an alert of the same fault disagree about which incident they belong to.

`open_incidents` lists the incidents still open (Temporal visibility), for the morning report.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError

from triggers.alertmanager import AlertIntake, TemporalUnavailable
from settings import Settings
from triggers.metrics import TriggerMetrics
from triggers.payload import AlertmanagerAlert, AlertmanagerPayload
from workflows.incident import search
from workflows.playbooks.catalog import PLAYBOOKS
from workflows.checks.models import FindingsReport, IncidentJoined, OpenIncident, OpenIncidentsQuery


class IncidentIntake:
    """Opens or joins incidents for findings; `settings` is the product configuration (routing,
    channels, approvers, escalation) as the worker sees it (`settings.serving`): the findings are
    about the cluster it serves, `worker_cluster`, and its incidents run on that cluster's queue."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._cluster = settings.worker_cluster
        self._intake = AlertIntake(settings, self._get_client, TriggerMetrics())
        self._prefix = settings.temporal.incident_id_prefix  # another stack's incidents are not ours

    async def _get_client(self) -> Client:
        return self._client

    @activity.defn
    async def report_findings(self, report: FindingsReport) -> list[IncidentJoined]:
        """Each finding as a firing alert through the webhook's intake: started or joined, per alert.

        Raises a retryable ApplicationError while Temporal does not take the alerts (as the webhook
        answers 503); retrying is safe: a second delivery joins as a repeat.
        """
        payload = AlertmanagerPayload(
            version="4",
            status="firing",
            receiver=f"schedule:{report.check}",
            groupKey=f"schedule:{report.check}",
            alerts=[
                AlertmanagerAlert(
                    status="firing",
                    # A check looks at the worker's own cluster: its findings say so, as alerts do.
                    labels={self._settings.clusters.label: self._cluster, **a.labels},
                    annotations=a.annotations,
                    starts_at=a.starts_at,
                    fingerprint=a.fingerprint,
                    generatorURL=f"temporal schedule {report.check}",
                )
                for a in report.alerts
            ],
        )
        try:
            outcomes = await self._intake.handle(payload)
        except TemporalUnavailable as err:
            raise ApplicationError(
                f"Temporal did not take the findings of {report.check}: {err}", type="TemporalUnavailable"
            ) from err
        return [
            IncidentJoined(
                incident=o.incident, alertname=o.alertname, runbook=o.runbook, action=o.action, scope=o.scope
            )
            for o in outcomes
        ]

    @activity.defn
    async def open_incidents(self, query: OpenIncidentsQuery) -> list[OpenIncident]:
        """Running incidents of every playbook (`Runbook` set, not resolved), newest first."""
        runbooks = ", ".join(f"'{name}'" for name in sorted(PLAYBOOKS))
        found: list[OpenIncident] = []
        async for wf in self._client.list_workflows(
            f"ExecutionStatus = 'Running' AND Runbook IN ({runbooks})",
            limit=query.limit,
        ):
            if wf.status != WorkflowExecutionStatus.RUNNING or not wf.id.startswith(self._prefix):
                continue
            attrs = wf.typed_search_attributes
            # This cluster's incidents (those opened before clusters had names belong to the default's).
            if (attrs.get(search.CLUSTER) or self._settings.clusters.default) != self._cluster:
                continue
            status = attrs.get(search.INCIDENT_STATUS)
            if status == "resolved":
                continue
            found.append(
                OpenIncident(
                    incident=wf.id,
                    runbook=attrs.get(search.RUNBOOK),
                    severity=attrs.get(search.INCIDENT_SEVERITY),
                    status=status,
                    alertname=attrs.get(search.ALERT_NAME),
                    started_at=wf.start_time,
                )
            )
        return found
