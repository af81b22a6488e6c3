"""Seed 001's service-down runbook in tests: its alert, its timings for tests, how a test starts it and
reads the Deployment it acts on (production/llm-d-decode of the service-down scenarios)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle

from tests.helpers.audit import writes
from workflows.incident.models import Alert
from workflows.playbooks.service_down.models import ServiceDownInput, ServiceDownTimings
from workflows.playbooks.service_down.playbook import ServiceDown

CHANNEL = "#incidents-test"
NS, SERVICE = "production", "llm-d-decode"
GOOD_IMAGE = "ghcr.io/llm-d/llm-d:v0.2.0"
GATE = f"rollout-undo:{SERVICE}"
FAST = ServiceDownTimings(
    rollout_timeout_seconds=30,
    rollout_poll_seconds=0.2,
    validation_timeout_seconds=30,
    validation_poll_seconds=0.3,
    probe_timeout_seconds=5,
    kube_call_timeout_seconds=10,
    approval_timeout_minutes=1,
)


def down_input() -> ServiceDownInput:
    alert = Alert(
        alertname="LLMModelNotResponding",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={
            "severity": "critical",
            "job": "llm-deployment",
            "namespace": NS,
            "service": SERVICE,
            "instance": f"{NS}/{SERVICE}",
        },
        annotations={"summary": f"LLM model {NS}/{SERVICE} is not responding"},
    )
    return ServiceDownInput(
        alert=alert, runbook="service-down", incident_commander="alice", slack_channel=CHANNEL, timings=FAST
    )


async def start(client: Client, inp: ServiceDownInput, task_queue: str) -> WorkflowHandle:
    return await client.start_workflow(
        ServiceDown.run, inp, id=f"service-down-{inp.alert.fingerprint}", task_queue=task_queue
    )


def deployment_patches(simulator) -> list:
    return [e for e in writes(simulator) if e.resource == "deployments" and e.verb == "patch"]


def image(kube_api: k8s.ApiClient) -> str:
    return k8s.AppsV1Api(kube_api).read_namespaced_deployment(SERVICE, NS).spec.template.spec.containers[0].image
