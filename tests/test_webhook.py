"""The Alertmanager webhook against a real Temporal dev server (no worker: a started or
signalled workflow is the proof), plus configuration loading."""

from __future__ import annotations

import asyncio
import json
import base64
from datetime import datetime, timezone
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from standins.alertmanager import am_alert, am_payload, fingerprint
from tests.helpers.fixtures_alertmanager import AUTH, in_process, signal_names, triggers_settings
from triggers.payload import AlertmanagerPayload, parse_notification
from triggers.routing import RoutingCatalog
from settings import ConfigError, load_settings
from workflows.incident import search
from workflows.playbooks.catalog import playbook
from workflows.incident.models import IncidentInput
from workflows.incident.scope import scope_incident_id

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "runbooks.example.yaml"


def _id(alert: dict, runbook: str = "service-outage", *, tq: str, group_key: str | None = None) -> str:
    """The incident an alert starts or joins: prefix + playbook + scope (workflows/incident/scope.py)."""
    parsed = AlertmanagerPayload.model_validate(am_payload(alert)).alerts[0]
    scope = playbook(runbook).scope.of(parsed.labels, group_key=group_key, fingerprint=parsed.fingerprint)
    return f"{tq}." + scope_incident_id(runbook, scope.key)


async def _input(client: Client, wf_id: str) -> IncidentInput:
    history = await client.get_workflow_handle(wf_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await client.data_converter.decode(started.input.payloads, [IncidentInput])
    return inp


async def _exists(client: Client, wf_id: str) -> bool:
    try:
        await client.get_workflow_handle(wf_id).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def test_firing_alert_starts_its_playbook_with_input_and_search_attributes(
    triggers_client, dev_client, task_queue
):
    alert = am_alert("LLMDServiceDown", namespace="llm-prod")
    resp = await triggers_client.post("/alertmanager", json=am_payload(alert), headers=AUTH)

    assert resp.status_code == 200, resp.text
    wf_id = _id(alert, tq=task_queue)
    assert resp.json()["incidents"] == [
        {
            "incident": wf_id,
            "alertname": "LLMDServiceDown",
            "runbook": "service-outage",
            "action": "started",
            "scope": "cluster",
        }
    ]
    desc = await dev_client.get_workflow_handle(wf_id).describe()
    assert desc.workflow_type == "ServiceOutage" and desc.task_queue == task_queue
    attrs = desc.typed_search_attributes
    assert attrs.get(search.RUNBOOK) == "service-outage"
    assert attrs.get(search.INCIDENT_SEVERITY) == "P0"
    assert attrs.get(search.ALERT_NAME) == "LLMDServiceDown"
    assert attrs.get(search.TARGET_NAMESPACE) == "llm-prod"
    assert attrs.get(search.INCIDENT_STATUS) == "open"
    inp = await _input(dev_client, wf_id)
    assert inp.runbook == "service-outage" and inp.severity == "P0" and inp.namespace == "llm-prod"
    assert inp.alert.fingerprint == alert["fingerprint"] and inp.alert.starts_at.microsecond > 0
    assert inp.approvers == {"*": ["UONCALL1", "ULEAD1"]}  # the @sre-leads group expanded
    assert inp.slack_channel == "#incidents" and inp.ui_url == "http://temporal-ui.example"


async def test_repeats_and_a_second_alertmanager_are_absorbed_by_the_running_incident(
    triggers_client, dev_client, task_queue
):
    alert = am_alert("LLMDServiceDown")
    body = am_payload(alert)
    first = await triggers_client.post("/alertmanager", json=body, headers=AUTH)
    run_id = (await dev_client.get_workflow_handle(_id(alert, tq=task_queue)).describe()).run_id
    # An HA pair and repeat_interval: the same notification, concurrently and again.
    again = await asyncio.gather(*(triggers_client.post("/alertmanager", json=body, headers=AUTH) for _ in range(4)))

    assert first.json()["incidents"][0]["action"] == "started"
    assert [r.json()["incidents"][0]["action"] for r in again] == ["joined"] * 4
    handle = dev_client.get_workflow_handle(_id(alert, tq=task_queue))
    assert (await handle.describe()).run_id == run_id
    # The start carries the alert as its first signal; each repeat is one more (the incident counts repeats).
    assert await signal_names(handle) == ["alert_firing"] * 5


async def test_resolved_alert_signals_its_incident_and_never_starts_one(triggers_client, dev_client, task_queue):
    alert = am_alert("LLMDServiceDown")
    await triggers_client.post("/alertmanager", json=am_payload(alert), headers=AUTH)
    resolved = alert | {"status": "resolved", "endsAt": "2030-01-01T00:00:00.987654321Z"}
    # Another scope (one LLMDeployment) with no incident open: nothing to signal, nothing started.
    orphan = am_alert("LLMDeploymentNotReady", status="resolved", ends_at="2030-01-01T00:00:00Z", llmdeployment="m1")

    resp = await triggers_client.post("/alertmanager", json=am_payload(resolved, orphan), headers=AUTH)

    assert resp.status_code == 200
    assert [i["action"] for i in resp.json()["incidents"]] == ["resolve-signalled", "resolved-no-incident"]
    assert await signal_names(dev_client.get_workflow_handle(_id(alert, tq=task_queue))) == [
        "alert_firing",
        "alert_resolved",
    ]
    assert not await _exists(dev_client, _id(orphan, "model-deploy-failure", tq=task_queue))
    assert not await _exists(dev_client, _id(orphan, "triage", tq=task_queue))


async def test_each_alert_of_a_group_is_routed_on_its_own(triggers_client, dev_client, task_queue):
    outage = am_alert("LLMDServiceDown")
    unknown = am_alert("KubePodCrashLooping")
    labelled = am_alert("SomethingElse", runbook="model-deploy-failure", severity="P2", llmdeployment="m1")
    body = am_payload(outage, unknown, labelled)
    resp = await triggers_client.post("/alertmanager", json=body, headers=AUTH)

    assert resp.status_code == 200
    assert [(i["runbook"], i["action"]) for i in resp.json()["incidents"]] == [
        ("service-outage", "started"),
        ("triage", "started"),
        ("model-deploy-failure", "started"),
    ]
    triage_id = _id(unknown, "triage", tq=task_queue, group_key=body["groupKey"])
    assert (await dev_client.get_workflow_handle(triage_id).describe()).workflow_type == "Triage"
    labelled_id = _id(labelled, "model-deploy-failure", tq=task_queue)
    assert (await _input(dev_client, labelled_id)).severity == "P2"  # a P-label wins over the seeds' P1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + base64.b64encode(b"am:x").decode()},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer am-bearer-token-for-tests-and-more"},
    ],
)
async def test_wrong_credentials_get_401_and_start_nothing(triggers_client, dev_client, headers, task_queue):
    alert = am_alert()
    resp = await triggers_client.post("/alertmanager", json=am_payload(alert), headers=headers)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert not await _exists(dev_client, _id(alert, tq=task_queue))


async def test_basic_auth_when_configured(dev_client, task_queue):
    settings = triggers_settings(
        task_queue, webhook={"bearer_token": None, "basic_username": "am", "basic_password": "s3cret"}
    )
    alert = am_alert()
    async with in_process(settings, dev_client) as http:
        bad = await http.post("/alertmanager", json=am_payload(alert), auth=("am", "wrong"))
        good = await http.post("/alertmanager", json=am_payload(alert), auth=("am", "s3cret"))
    assert bad.status_code == 401 and good.status_code == 200
    assert await _exists(dev_client, _id(alert, tq=task_queue))


async def test_body_beyond_the_limit_is_answered_503_with_retry_after_never_4xx(dev_client, task_queue):
    """Alertmanager and Grafana drop a 4xx for good; a 503 they retry (a 413 lost a whole group)."""
    settings = triggers_settings(task_queue, webhook={"max_body_bytes": 2000, "retry_after_seconds": 7})
    alert = am_alert(description="x" * 3000)
    async with in_process(settings, dev_client) as http:
        declared = await http.post("/alertmanager", json=am_payload(alert), headers=AUTH)

        async def chunked():  # no Content-Length: the limit is found while reading
            yield b'{"version": "4", "alerts": ['
            for _ in range(10):
                yield b" " * 500

        streamed = await http.post("/alertmanager", content=chunked(), headers=AUTH)
        metrics = (await http.get("/metrics")).text
    for resp in (declared, streamed):
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "7", resp.text
        assert "2000 bytes" in resp.json()["error"] and "max_body_bytes" in resp.json()["error"]
    assert 'runbooks_alerts_rejected_total{reason="too-large"} 2.0' in metrics
    assert not await _exists(dev_client, _id(alert, tq=task_queue))


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        (b"{not json", 400, "Invalid JSON"),
        (b"[]", 422, "body"),
        ({"version": "3"}, 422, 'version: must be "4" (Alertmanager) or "1" (Grafana)'),
        ({"status": "firing", "alerts": []}, 422, "version: must be"),
        ("missing-fingerprint", 422, "alerts.0.fingerprint"),
        ("no-labels", 422, "alerts.0.labels"),
        ("naive-time", 422, "alerts.1.startsAt: Input should have timezone"),
    ],
)
async def test_invalid_bodies_get_a_readable_4xx_and_start_nothing(
    triggers_client, dev_client, body, status, mentions, task_queue
):
    good = am_alert()
    if body == "missing-fingerprint":
        body = am_payload(good | {"fingerprint": ""})
    elif body == "no-labels":
        body = am_payload(good | {"labels": {}})
    elif body == "naive-time":
        body = am_payload(good, good | {"startsAt": "2024-05-01T10:00:00"})
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    resp = await triggers_client.post("/alertmanager", headers=AUTH, **kwargs)
    assert resp.status_code == status
    assert mentions in str(resp.json())
    assert not await _exists(dev_client, _id(good, tq=task_queue))  # the valid alert next to a bad one waits too


def test_payload_model_takes_alertmanager_timestamps_and_ignores_unknown_fields():
    alert = am_alert() | {
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "silencedBy": [],
        "newField": {"x": 1},
    }
    parsed = AlertmanagerPayload.model_validate(am_payload(alert) | {"futureTopLevel": True}).alerts[0]
    assert parsed.ends_at is None
    assert parsed.starts_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    resolved = AlertmanagerPayload.model_validate(
        am_payload(alert | {"status": "resolved", "endsAt": "2024-05-01T10:00:00.123456789+02:00"})
    ).alerts[0]
    assert resolved.ends_at == datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=timezone.utc)


async def test_temporal_unreachable_answers_503_so_alertmanager_retries(task_queue):
    async with in_process(triggers_settings(task_queue), None, connect_error="connection refused") as http:
        resp = await http.post("/alertmanager", json=am_payload(am_alert()), headers=AUTH)
        ready = await http.get("/readyz")
        health = await http.get("/healthz")
        metrics = (await http.get("/metrics")).text
    assert resp.status_code == 503 and "retry" in resp.json()["error"] and int(resp.headers["Retry-After"]) > 0
    assert ready.status_code == 503 and health.status_code == 200
    assert 'runbooks_alerts_rejected_total{reason="temporal-unavailable"} 1.0' in metrics


async def test_health_readiness_and_metrics(triggers_client):
    await triggers_client.post("/alertmanager", json=am_payload(am_alert("LLMDServiceDown")), headers=AUTH)
    await triggers_client.post("/alertmanager", content=b"{}", headers=AUTH)
    await triggers_client.post("/alertmanager", json=am_payload(am_alert()))

    assert (await triggers_client.get("/healthz")).status_code == 200
    assert (await triggers_client.get("/readyz")).text == "ready"
    metrics = (await triggers_client.get("/metrics")).text
    assert 'runbooks_alerts_received_total{status="firing"} 1.0' in metrics
    assert 'runbooks_alerts_routed_total{runbook="service-outage"} 1.0' in metrics
    assert 'runbooks_alerts_rejected_total{reason="invalid"} 1.0' in metrics
    assert 'runbooks_alerts_rejected_total{reason="unauthorized"} 1.0' in metrics
    assert 'runbooks_request_latency_seconds_count{path="/alertmanager",status="200"} 1.0' in metrics
    assert (await triggers_client.get("/openapi.json")).json()["paths"]["/alertmanager"]["post"]


# ---- what real alert storms and other senders do to us ---------------------------

ACCEPTED = {"started", "repeat-recorded", "joined", "already-finished"}


def kube_prometheus_alert(i: int) -> dict:
    """An alert the size kube-prometheus's rules produce (~3.3 KB of JSON)."""
    pod = f"vllm-decode-{i:05d}-7d9f8c6b5-x2k9p"
    alert = am_alert(
        "KubePodCrashLooping",
        container="vllm",
        endpoint="http",
        instance="10.0.3.17:8080",
        job="kube-state-metrics",
        namespace="llm-prod",
        pod=pod,
        prometheus="monitoring/k8s",
        reason="CrashLoopBackOff",
        service="kube-prometheus-stack-kube-state-metrics",
        severity="warning",
        uid=f"3f1c2d4e-{i:04d}-4a5b-9c8d-7e6f5a4b3c2d",
        cluster="gpu-prod-eu-1",
    )
    alert["annotations"] = {
        "description": f"Pod llm-prod/{pod} (vllm) is in waiting state (reason: CrashLoopBackOff). " * 30,
        "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
        "summary": "Pod is crash looping.",
    }
    return alert


async def test_one_group_past_1_mib_is_answered_2xx_with_every_alert_started_or_joined(dev_client, task_queue):
    """A `max_alerts: 0` receiver sends a whole storm in one body; the default limit takes it (it was a 413)."""
    alerts = [kube_prometheus_alert(i) for i in range(400)]
    body = am_payload(*alerts) | {"groupKey": '{}:{alertname="KubePodCrashLooping"}'}
    size = len(json.dumps(body))
    assert size > 1024 * 1024, size
    async with in_process(triggers_settings(task_queue, temporal={"rpc_timeout_seconds": 30}), dev_client) as http:
        resp = await http.post("/alertmanager", json=body, headers=AUTH, timeout=120)

    assert resp.status_code == 200, resp.text[:500]
    outcomes = resp.json()["incidents"]
    assert len(outcomes) == len(alerts) and {o["action"] for o in outcomes} <= ACCEPTED, outcomes[:3]
    for wf_id in {o["incident"] for o in outcomes}:
        assert await _exists(dev_client, wf_id)


async def test_inflight_budget_sheds_with_503_and_is_given_back(dev_client, task_queue):
    settings = triggers_settings(task_queue, webhook={"max_inflight_bytes": 1500, "retry_after_seconds": 5})
    big, small = am_alert(description="x" * 2000), am_alert()
    async with in_process(settings, dev_client) as http:
        shed = await http.post("/alertmanager", json=am_payload(big), headers=AUTH)
        results = [await http.post("/alertmanager", json=am_payload(small), headers=AUTH) for _ in range(3)]
    assert shed.status_code == 503 and shed.headers["Retry-After"] == "5", shed.text
    assert [r.status_code for r in results] == [200, 200, 200], "every read gives its bytes back"


def grafana_twin(alert: dict) -> dict:
    """What Grafana-managed alerting's webhook contact point posts for the same alert."""
    return {
        "receiver": "runbooks",
        "status": "firing",
        "orgId": 1,
        "version": "1",
        "alerts": [
            alert
            | {
                "silenceURL": "http://grafana.example/alerting/silence/new",
                "dashboardURL": "",
                "panelURL": "",
                "values": {"B": 0, "C": 1},
                "valueString": "[ var='B' value=0 ]",
            }
        ],
        "groupLabels": {"alertname": alert["labels"]["alertname"]},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://grafana.example/",
        "groupKey": '{}/{}:{alertname="LLMDServiceDown"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] LLMDServiceDown llm-d",
        "state": "alerting",
        "message": "**Firing**\n...",
    }


async def test_grafana_v1_body_starts_the_same_playbook_as_its_alertmanager_twin(triggers_client, dev_client):
    alert = am_alert("LLMDServiceDown", namespace="llm-prod", cluster=f"c-{fingerprint()}")  # a scope of its own
    from_grafana = await triggers_client.post("/alertmanager", json=grafana_twin(alert), headers=AUTH)
    from_alertmanager = await triggers_client.post("/alertmanager", json=am_payload(alert), headers=AUTH)

    assert from_grafana.status_code == 200, from_grafana.text
    assert from_alertmanager.status_code == 200, from_alertmanager.text
    [first], [twin] = from_grafana.json()["incidents"], from_alertmanager.json()["incidents"]
    assert (first["runbook"], first["action"]) == ("service-outage", "started")
    assert twin["incident"] == first["incident"] and twin["action"] != "started", "deduplicated"
    desc = await dev_client.get_workflow_handle(first["incident"]).describe()
    assert desc.workflow_type == "ServiceOutage"
    assert isinstance(parse_notification(json.dumps(grafana_twin(alert))), AlertmanagerPayload)


async def test_grafana_body_with_a_wrong_field_gets_a_4xx_naming_it(triggers_client):
    alert = am_alert("LLMDServiceDown")
    resp = await triggers_client.post("/alertmanager", json=grafana_twin(alert | {"fingerprint": ""}), headers=AUTH)
    assert resp.status_code == 422 and resp.json()["problems"] == [
        "alerts.0.fingerprint: String should have at least 1 character"
    ]


@pytest.mark.parametrize("enabled", [False, True], ids=["drills-off", "drills-on"])
async def test_drill_labels_count_only_where_drills_are_enabled(dev_client, task_queue, enabled, caplog):
    alert = am_alert("LLMDServiceDown", drill="true", time_scale="1000", cluster=f"c-{fingerprint()}")
    settings = triggers_settings(task_queue, drills={"enabled": enabled})
    async with in_process(settings, dev_client) as http:
        resp = await http.post("/alertmanager", json=am_payload(alert), headers=AUTH)
    assert resp.status_code == 200, resp.text
    inp = await _input(dev_client, resp.json()["incidents"][0]["incident"])
    if enabled:
        assert (inp.drill, inp.time_scale) == (True, 1000.0)
    else:
        assert (inp.drill, inp.time_scale) == (False, 1.0), "a label must not speed up a real incident"
        assert any("drills are disabled" in r.getMessage() for r in caplog.records)


def test_drills_are_off_by_default_and_on_in_runbooks_dev(tmp_path):
    from cli.dev import DevStack

    assert load_settings(environ={}).drills.enabled is False
    stack = DevStack.__new__(DevStack)  # only its settings logic, no processes
    stack.settings, stack.home = load_settings(environ={}), tmp_path
    assert stack._settings_for("127.0.0.1:7233", "http://127.0.0.1:8233").drills.enabled is True


# ---- configuration -------------------------------------------------------------------


def test_example_configuration_loads_and_env_overrides_it():
    settings = load_settings(
        EXAMPLE,
        environ={
            "RUNBOOKS_SLACK__BOT_TOKEN": "xoxb-from-env",
            "RUNBOOKS_TEMPORAL__ADDRESS": "temporal.internal:7233",
            "RUNBOOKS_SLACK__CHANNELS": '{"P0": "#sev0", "default": "#ops"}',
            "RUNBOOKS_WORKER__METRICS_PORT": "9999",
        },
    )
    assert settings.slack.bot_token.get_secret_value() == "xoxb-from-env"
    assert settings.temporal.address == "temporal.internal:7233"
    assert settings.slack.channel_for("P0") == "#sev0" and settings.slack.channel_for("P3") == "#ops"
    assert settings.worker.metrics_port == 9999
    assert settings.approvers.for_incident("P0")["*"] == ["U01ONCALL1", "U01ONCALL2", "U01LEAD001"]
    catalog = RoutingCatalog.from_settings(settings.routing)
    assert catalog.route({"alertname": "LLMDServiceDown"}).runbook == "service-outage"
    assert catalog.route({"alertname": "ModelServingHighErrorRate"}).severity == "P1"
    assert catalog.route({"alertname": "NeverHeardOf"}).runbook == "triage"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("slack:\n  channels: {P7: '#x'}\n", "slack.channels", "P0..P3"),
        ("approvers:\n  default: ['@ghosts']\n", "approvers", "not defined under user_groups"),
        ("approvers:\n  by_gate: {cordon-drain: [alice]}\n", "approvers", "neither a Slack user id"),
        ("approvers:\n  by_gate: {drain-node: [U01LEAD001]}\n", "approvers", "no playbook has a gate 'drain-node'"),
        ("playbooks:\n  reboot: {mode: shadow}\n", "playbooks", "no playbook named 'reboot'"),
        ("mode: yolo\n", "mode", "'act' or 'shadow'"),
        ("routing:\n  routes: {X: {runbook: reboot-the-world}}\n", "routing.routes.X.runbook", "no playbook named"),
        ("temporal:\n  adress: typo:7233\n", "temporal.adress", "Extra inputs"),
        ("webhook:\n  basic_username: am\n", "webhook", "both basic_username and basic_password"),
        ("server:\n  port: 99999\n", "server.port", "less than or equal"),
        ("slack: [\n", "not valid YAML", ""),
        ("- just a list\n", "must hold a mapping", ""),
    ],
)
def test_a_bad_file_fails_at_start_naming_the_field_and_reason(tmp_path, text, field, reason):
    path = tmp_path / "runbooks.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert field in str(err.value) and reason in str(err.value)


def test_a_webhook_without_credentials_refuses_to_serve():
    with pytest.raises(ConfigError, match="bearer_token"):
        load_settings(None, environ={}).webhook.check_protected()
    load_settings(None, environ={"RUNBOOKS_WEBHOOK__ALLOW_UNAUTHENTICATED": "true"}).webhook.check_protected()


async def test_an_alert_without_alertname_is_taken_by_triage_not_refused(triggers_client, dev_client, task_queue):
    """Alertmanager accepts and sends alerts without `alertname`: a 4xx would drop their whole group."""
    unnamed = am_alert("X") | {"labels": {"severity": "warning", "job": "custom-exporter"}}
    named = am_alert("LLMDServiceDown")
    resp = await triggers_client.post("/alertmanager", json=am_payload(unnamed, named), headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert [(i["alertname"], i["runbook"], i["action"]) for i in resp.json()["incidents"]] == [
        ("UnnamedAlert", "triage", "started"),
        ("LLMDServiceDown", "service-outage", "started"),
    ]
