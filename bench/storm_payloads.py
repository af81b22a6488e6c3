"""What bench/alert_storm.py sends: alerts of one open incident (joins), the 560-alert group of an
Alertmanager receiver with `max_alerts: 0`, and raw `start_workflow` arguments equal to the webhook's.

The group is a realistic mix of the seeds' alerts, each family on its playbook's scope
(settings/routes.py, workflows/incident/scope.py), several alerts per scope (pods, GPUs), plus alerts no
playbook claims (triage: the group is their scope, one incident for all of them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from settings import Settings
from bench.harness import triage_notification
from standins.alertmanager import am_alert, am_payload
from triggers.alertmanager import AlertIntake, StartCall
from triggers.metrics import TriggerMetrics
from triggers.payload import parse_notification
from triggers.routing import RoutingCatalog


def group_alert(run: str, i: int, group: str) -> dict[str, Any]:
    """Notification i of one Alertmanager group (`group` names it): every alert after the first joins
    the group's one Triage incident. Its summary `storm-<run>-<i>` is what `first_posts` finds."""
    return triage_notification(f"BenchJoin{group}", f"storm-{run}-{i:05d}", pod=f"pod-{i:05d}")


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
    Family(
        ("LLMModelNotResponding",),
        tuple({"namespace": f"team-{_TEAMS[k % 5]}", "service": f"model-{k:02d}"} for k in range(20)),
        0.30,
        "pod",
    ),
    # seed 004: one InferenceService per incident, a playbook per alert
    Family(
        (
            "ModelServingHighErrorRate",
            "ModelServingHighLatency",
            "ModelServingModelNotLoading",
            "ModelServingGPUUnavailable",
        ),
        tuple({"namespace": "mlops-serving", "inferenceservice": f"isvc-{k:02d}"} for k in range(10)),
        0.20,
        "pod",
    ),
    # seed 002: one node per incident
    Family(("LLMDGPUHardwareError",), tuple({"node": f"gpu-node-{k:02d}"} for k in range(10)), 0.15, "gpu"),
    # the cluster-wide playbooks (seed 001 operator, 002, 003): one incident each however many alert
    Family(
        ("LLMDServiceDown", "LLMDMemoryPressure", "LLMDHighLatency", "LLMDHighErrorRate", "LLMDGPUCapacityLost"),
        ({"namespace": "llm-d"},),
        0.15,
        "pod",
    ),
    # SOP-004: one LLMDeployment per incident
    Family(
        ("LLMDeploymentNotReady",),
        tuple({"namespace": "llm-d", "llmdeployment": f"llm-{k}"} for k in range(5)),
        0.05,
        "pod",
    ),
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


def raw_start(settings: Settings, payload: dict[str, Any]) -> StartCall:
    """The webhook's own signal-with-start for the payload's first alert (routed, id, input, options
    and search attributes by `AlertIntake` itself), built before the clock starts."""
    note = parse_notification(json.dumps(payload))
    intake = AlertIntake(settings, _no_client, TriggerMetrics())
    routed, wf_id = intake.route(note.alerts[0], note.group_key)
    return intake.start_call(note.alerts[0], routed, wf_id)


async def _no_client() -> Client:
    raise AssertionError("raw_start only builds the call")
