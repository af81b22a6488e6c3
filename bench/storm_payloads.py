"""What bench/alert_storm.py sends: alerts of one open incident (joins), the 560-alert group of an
Alertmanager receiver with `max_alerts: 0`, and raw `start_workflow` arguments equal to the webhook's.

The group is a realistic mix of the seeds' alerts, each family on its playbook's scope
(settings/routes.py, workflows/scope.py), several alerts per scope (pods, GPUs), plus alerts no
playbook claims (triage: the group is their scope, one incident for all of them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from settings import Settings
from standins.alertmanager import am_alert, am_payload
from triggers.payload import parse_notification
from triggers.routing import RoutingCatalog
from workflows import search
from workflows.models import Alert, IncidentInput
from workflows.scope import scope_incident_id


def group_alert(run: str, i: int, group: str) -> dict[str, Any]:
    """Notification i of one Alertmanager group (`group` names it): every alert after the first joins
    the group's one Triage incident. Its summary `storm-<run>-<i>` is what `first_posts` finds."""
    name = f"BenchJoin{group}"
    alert = am_alert(name, pod=f"pod-{i:05d}")
    alert["labels"].pop("namespace")  # triage without cluster context: Slack only
    alert["annotations"]["summary"] = f"storm-{run}-{i:05d}"
    payload = am_payload(alert)
    payload["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    payload["groupLabels"] = {"alertname": name}
    return payload


@dataclass(frozen=True)
class Family:
    """Alerts `names` over `scopes` (the labels that make each scope), `share` of the group."""

    names: tuple[str, ...]
    scopes: tuple[Mapping[str, str], ...]
    share: float
    per_alert: str  # the label that tells one alert of a scope from the next (pod, gpu)


_TEAMS = ("chat", "code", "search", "embed", "rerank")
FAMILIES: tuple[Family, ...] = (
    # seed 001: one model's endpoint (service-down, one incident per namespace/service)
    Family(("LLMModelNotResponding",),
           tuple({"namespace": f"team-{_TEAMS[k % 5]}", "service": f"model-{k:02d}"} for k in range(20)), 0.30, "pod"),
    # seed 004: one InferenceService per incident, a playbook per alert
    Family(("ModelServingHighErrorRate", "ModelServingHighLatency", "ModelServingModelNotLoading",
            "ModelServingGPUUnavailable"),
           tuple({"namespace": "mlops-serving", "inferenceservice": f"isvc-{k:02d}"} for k in range(10)), 0.20, "pod"),
    # seed 002: one node per incident
    Family(("LLMDGPUHardwareError",), tuple({"node": f"gpu-node-{k:02d}"} for k in range(10)), 0.15, "gpu"),
    # the cluster-wide playbooks (seed 001 operator, 002, 003): one incident each however many alert
    Family(("LLMDServiceDown", "LLMDMemoryPressure", "LLMDHighLatency", "LLMDHighErrorRate", "LLMDGPUCapacityLost"),
           ({"namespace": "llm-d"},), 0.15, "pod"),
    # SOP-004: one LLMDeployment per incident
    Family(("LLMDeploymentNotReady",),
           tuple({"namespace": "llm-d", "llmdeployment": f"llm-{k}"} for k in range(5)), 0.05, "pod"),
)
# The rest: alerts no playbook claims (triage, one incident for the group).
UNCLAIMED = ("KubePodCrashLooping", "NodeFilesystemSpaceFillingUp", "CPUThrottlingHigh", "KubeJobFailed")


def storm_group(size: int, run: str) -> dict[str, Any]:
    """One notification carrying `size` firing alerts of one Alertmanager group (560 in the issue)."""
    alerts: list[dict[str, Any]] = []
    for family in FAMILIES:
        combos = [(name, scope) for name in family.names for scope in family.scopes]
        for j in range(round(size * family.share)):
            name, scope = combos[j % len(combos)]
            labels = {"service": f"storm-{run}", **scope, family.per_alert: f"{j // len(combos)}"}
            alerts.append(am_alert(name, **labels))
    for j in range(size - len(alerts)):
        alerts.append(am_alert(UNCLAIMED[j % len(UNCLAIMED)], pod=f"pod-{j}", service=f"storm-{run}"))
    payload = am_payload(*alerts)
    payload["groupKey"] = f'{{}}/{{severity=~"critical|warning"}}:{{cluster="bench-{run}"}}'
    payload["groupLabels"] = {"cluster": f"bench-{run}"}
    return payload


def expected_incidents(settings: Settings, payload: dict[str, Any]) -> dict[str, int]:
    """runbook -> how many incidents the group should make (distinct scopes, as routing sees them)."""
    catalog = RoutingCatalog.from_settings(settings.routing)
    ids: dict[str, set[str]] = {}
    for a in payload["alerts"]:
        routed = catalog.route(a["labels"], group_key=payload["groupKey"], fingerprint=a["fingerprint"])
        ids.setdefault(routed.runbook, set()).add(routed.scope.key)
    return {runbook: len(scopes) for runbook, scopes in sorted(ids.items())}


@dataclass(frozen=True)
class RawStart:
    """The signal-with-start the webhook's intake makes for one alert (triggers/alertmanager.py,
    `AlertIntake._firing` and `_incident_input`), built before the clock starts."""

    workflow: str
    input: IncidentInput
    alert: Alert
    kwargs: dict[str, Any]


def raw_start(settings: Settings, payload: dict[str, Any]) -> RawStart:
    """Routed as the webhook routes it; the same id, input, policies, signal, search attributes."""
    note = parse_notification(json.dumps(payload))
    a = note.alerts[0]
    routed = RoutingCatalog.from_settings(settings.routing).route(a.labels, group_key=note.group_key,
                                                                  fingerprint=a.fingerprint)
    alert = Alert(alertname=a.alertname, fingerprint=a.fingerprint, starts_at=a.starts_at, status="firing",
                  labels=a.labels, annotations=a.annotations, generator_url=a.generator_url)
    inp = IncidentInput(
        alert=alert, runbook=routed.runbook, severity=routed.severity, namespace=a.labels.get("namespace") or None,
        scope=routed.scope.key, scope_kind=routed.scope.kind, mode=settings.mode_for(routed.runbook, a.labels),
        slack_channel=settings.slack.channel_for(routed.severity),
        approvers=settings.approvers.for_incident(routed.severity),
        escalation=settings.escalation.steps_with_contacts(), escalation_contacts=settings.escalation.contacts,
        ui_url=settings.temporal.ui_url, coordinated=True, caps=settings.caps,
    )
    pairs = [SearchAttributePair(search.RUNBOOK, routed.runbook), SearchAttributePair(search.INCIDENT_STATUS, "open"),
             SearchAttributePair(search.ALERT_NAME, a.alertname), SearchAttributePair(search.ESCALATION_LEVEL, 0)]
    if routed.severity:
        pairs.append(SearchAttributePair(search.INCIDENT_SEVERITY, routed.severity))
    if a.labels.get("namespace"):
        pairs.append(SearchAttributePair(search.TARGET_NAMESPACE, a.labels["namespace"]))
    kwargs = {
        "id": settings.temporal.incident_id_prefix + scope_incident_id(routed.runbook, routed.scope.key),
        "task_queue": settings.temporal.task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        "search_attributes": TypedSearchAttributes(pairs),
        "static_summary": f"{a.alertname}: {a.annotations.get('summary') or a.alertname}"[:400],
        "rpc_timeout": timedelta(seconds=settings.temporal.rpc_timeout_seconds),
    }
    return RawStart(routed.workflow_type, inp, alert, kwargs)
