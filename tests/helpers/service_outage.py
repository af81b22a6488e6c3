"""SOP-001 (service outage) on the dev server and the simulator's `service-outage` fault: the input the
tests start it with, and what they read back from the cluster and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from kubernetes import client as k8s

from activities.kube.models import HEALTH_URL_ANNOTATION, RESTARTED_AT
from simulator.server import SimulatedCluster
from tests.helpers.audit import writes
from workflows.incident.models import Alert
from workflows.playbooks.service_outage.models import OutageTimings, ServiceOutageInput

CHANNEL = "#incidents-test"
OPERATOR_NS, OPERATOR = "llm-d-system", "llm-d-operator"
# The simulator runs 30x faster than life; these keep SOP-001 to seconds without special cases.
FAST = OutageTimings(
    operator_rollout_timeout_seconds=30,
    rollout_poll_seconds=0.25,
    restart_grace_seconds=20,
    verification_timeout_seconds=30,
    verification_poll_seconds=0.5,
    health_timeout_seconds=2,
    kube_call_timeout_seconds=5,
    approval_timeout_minutes=1,
)


def outage_input(**overrides) -> ServiceOutageInput:
    """SOP-001's input for an `LLMServiceDown` alert firing now in `production`, with `FAST` timings."""
    alert = Alert(
        alertname="LLMServiceDown",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"severity": "critical", "namespace": "production"},
        annotations={"summary": "llm-d inference is down"},
    )
    values = dict(
        alert=alert,
        runbook="service-outage",
        incident_commander="alice",
        slack_channel=CHANNEL,
        namespace="production",
        timings=FAST,
    )
    return ServiceOutageInput(**{**values, **overrides})


def llm_deployments(kube_api: k8s.ApiClient) -> list[dict]:
    return k8s.CustomObjectsApi(kube_api).list_cluster_custom_object(
        "inference.llm-d.io", "v1alpha1", "llmdeployments"
    )["items"]


def restarts_by_deployment(simulator: SimulatedCluster) -> dict[tuple[str, str], int]:
    """(namespace, name) -> how many `kubectl rollout restart` writes reached that Deployment."""
    counts: dict[tuple[str, str], int] = {}
    for e in writes(simulator):
        if e.resource == "deployments" and e.verb == "patch" and RESTARTED_AT in str(e.body):
            counts[(e.namespace, e.name)] = counts.get((e.namespace, e.name), 0) + 1
    return counts


def assert_healed_with_each_remedy_once(
    simulator: SimulatedCluster, kube_api: k8s.ApiClient, failed: set[tuple[str, str]]
) -> None:
    """Every LLMDeployment Ready, the operator and each of the `failed` ones restarted once, nothing else written."""
    assert all(d["status"]["phase"] == "Ready" for d in llm_deployments(kube_api))
    expected = {(OPERATOR_NS, OPERATOR): 1, **{key: 1 for key in failed}}
    assert restarts_by_deployment(simulator) == expected
    other = [e for e in writes(simulator) if e.resource != "deployments"]
    assert other == [], f"SOP-001 changed more than it had to: {other}"


def set_health_url(kube_api: k8s.ApiClient, namespace: str, name: str, url: str) -> str:
    """Point a model Service's health annotation somewhere; returns the URL it had."""
    core = k8s.CoreV1Api(kube_api)
    old = core.read_namespaced_service(name, namespace).metadata.annotations[HEALTH_URL_ANNOTATION]
    core.patch_namespaced_service(
        name,
        namespace,
        {"metadata": {"annotations": {HEALTH_URL_ANNOTATION: url}}},
        _content_type="application/merge-patch+json",
    )
    return old
