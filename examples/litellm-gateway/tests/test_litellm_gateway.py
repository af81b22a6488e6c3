"""The LiteLLM gateway playbook on llm-runbooks' simulated cluster, with its own fault file."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as kube_config
from temporalio.client import WorkflowHandle

from litellm_gateway.models import GATE_RESTART, GatewayIncidentInput
from litellm_gateway.playbook import PLAYBOOK, LiteLLMGatewayErrors, failing_models
from simulator.scenario_files import stage_scenario
from workflows.incident.models import QUERY_STATE, QUERY_TIMELINE, UPDATE_DECIDE, Alert, Decision
from workflows.incident.state import IncidentState
from workflows.incident.timeline import TimelineEntry
from workflows.playbooks import catalog

FAULT = Path(__file__).resolve().parents[1] / "litellm_gateway" / "faults" / "stale-routes.yaml"
# The same switch with a typo in the new api_base: the config is wrong, a restart would not help.
TYPO = """
name: litellm-typo
patch:
  - kind: ConfigMap
    namespace: litellm
    name: litellm-config
    patch:
      data:
        config.yaml: |
          model_list:
            - model_name: mistral-7b
              litellm_params: {model: openai/mistral-7b, api_base: "http://mistral-7b-gren-predictor.mlops-serving.svc.cluster.local/v1"}
delete:
  - {apiVersion: serving.kserve.io/v1beta1, kind: InferenceService, namespace: mlops-serving, name: mistral-7b}
"""


def test_the_playbook_is_installed_through_its_entry_point():
    assert catalog.playbook("litellm-gateway-errors") is PLAYBOOK
    assert catalog.DRILLS["litellm-stale-routes"][0] is PLAYBOOK
    assert catalog.ALERT_SEVERITY["LiteLLMGatewayErrors"][0] == "P1"


def test_failing_models_are_read_from_litellms_errors():
    log = (
        'INFO:     10.0.0.1:1 - "POST /chat/completions HTTP/1.1" 200 OK\n'
        "12:00:01,000 - LiteLLM Proxy:ERROR: proxy_server.py:3315 - ... Connection error. Received Model Group=mistral-7b\n"
        'INFO:     10.0.0.1:2 - "POST /chat/completions HTTP/1.1" 500 Internal Server Error\n'
    )
    assert failing_models(log) == ({"mistral-7b"}, 1)
    assert failing_models('"POST /chat/completions HTTP/1.1" 200 OK') == (set(), 0)


def _input() -> GatewayIncidentInput:
    labels = {"alertname": "LiteLLMGatewayErrors", "namespace": "litellm", "deployment": "litellm"}
    alert = Alert(
        alertname="LiteLLMGatewayErrors",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels=labels,
        annotations={"summary": "gateway 5xx"},
    )
    return GatewayIncidentInput(alert=alert, runbook="litellm-gateway-errors", time_scale=30.0)


async def _until(handle: WorkflowHandle, done, what: str, timeout: float = 60.0) -> IncidentState:
    deadline = time.monotonic() + timeout
    while True:
        state = await handle.query(QUERY_STATE, result_type=IncidentState)
        if done(state):
            return state
        assert state.status != "failed", f"failed waiting for {what}: {state.failure}"
        assert time.monotonic() < deadline, f"waited {timeout:g}s for {what}: {state.status}, {state.current_step}"
        await asyncio.sleep(0.3)


def _wait_for_service(cluster, namespace: str, name: str) -> None:
    core = k8s.CoreV1Api(kube_config.new_client_from_config(config_file=str(cluster.kubeconfig_path)))
    deadline = time.monotonic() + 30
    while not any(s.metadata.name == name for s in core.list_namespaced_service(namespace).items):
        assert time.monotonic() < deadline, f"Service {namespace}/{name} never appeared"
        time.sleep(0.2)


def _gateway_writes(cluster) -> list[tuple[str, str]]:
    return [(e.verb, e.name) for e in cluster.audit() if e.resource == "deployments" and e.namespace == "litellm"]


async def test_stale_gateway_pods_are_restarted_with_approval_and_verified(temporal, cluster, worker):
    stage_scenario(cluster.behaviour, FAULT.read_text())
    _wait_for_service(cluster, "mlops-serving", "mistral-7b-green-predictor")
    handle = await temporal.client.start_workflow(
        LiteLLMGatewayErrors.run, _input(), id=f"gw-{uuid.uuid4().hex[:8]}", task_queue=worker
    )
    state = await _until(handle, lambda s: s.pending_gates, "the restart gate")
    gate = state.pending_gates[0]
    assert gate.gate.startswith(GATE_RESTART) and "mistral-7b" in gate.question
    assert _gateway_writes(cluster) == [], "wrote before the gate was approved"
    await handle.execute_update(UPDATE_DECIDE, Decision(gate=gate.gate, approved=True, by="alice"), result_type=str)
    state = await _until(handle, lambda s: s.status == "resolved", "resolution", timeout=120)
    assert _gateway_writes(cluster) == [("patch", "litellm")]  # one rollout restart, nothing else
    assert "no 5xx for mistral-7b" in (state.resolution or "")


async def test_a_route_to_a_missing_service_is_handed_over_without_a_write(temporal, cluster, worker):
    stage_scenario(cluster.behaviour, TYPO)
    handle = await temporal.client.start_workflow(
        LiteLLMGatewayErrors.run, _input(), id=f"gw-{uuid.uuid4().hex[:8]}", task_queue=worker
    )
    state = await _until(handle, lambda s: s.awaiting_human, "the hand-over")
    assert state.escalation_level >= 1 and not state.pending_gates
    timeline = await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry])
    told = " ".join(f"{e.outcome} {' '.join(e.details)}" for e in timeline)
    assert "Service mlops-serving/mistral-7b-gren-predictor (NOT FOUND)" in told, told
    assert _gateway_writes(cluster) == []
    assert state.nothing_found is None
