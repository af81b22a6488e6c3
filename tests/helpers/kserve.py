"""Seed 004's KServe playbooks on the dev server and the simulator's InferenceServices: the input the tests
start them with."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from workflows.incident.models import Alert
from workflows.playbooks.kserve.models import KServeIncidentInput, KServeTimings

CHANNEL = "#incidents-high"
NS = "mlops-serving"
ISVC = ("serving.kserve.io", "v1beta1", NS, "inferenceservices")  # CustomObjectsApi's group, version, namespace, plural
FAST = KServeTimings(verification_timeout_seconds=60, verification_poll_seconds=1, kube_call_timeout_seconds=10)


def kserve_input(alertname: str, runbook: str, isvc: str) -> KServeIncidentInput:
    """The input of `runbook` for `alertname` firing now on InferenceService `isvc` in `NS`."""
    alert = Alert(
        alertname=alertname,
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": alertname, "namespace": NS, "inferenceservice": isvc, "severity": "high"},
        annotations={"summary": f"{alertname} on {isvc}"},
    )
    return KServeIncidentInput(
        alert=alert, runbook=runbook, incident_commander="alice", slack_channel=CHANNEL, timings=FAST
    )
