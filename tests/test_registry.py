"""One playbook registry: what the worker registers, what the webhook routes, what the seeds say.

Each playbook declares itself once (`PLAYBOOK = Playbook(...)` in its module, listed in
workflows/playbooks/catalog.py). These tests fail when registration, routing, gate kinds or the seeds'
severities disagree with those declarations.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from settings import ConfigError, gate_kinds, load_settings
from settings.routes import default_routes
from triggers.routing import RoutingCatalog, alert_severity
from worker.worker import SHARED_WORKFLOWS, WORKFLOWS
from workflows.playbooks import catalog
from workflows.playbooks.catalog import TRIAGE
from workflows.incident.claims import MACHINERY_GATES
from workflows.incident.scope import scope_incident_id

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
# The seeds' alert rules (name, severity label, seed file), kept here so the test runs without ../shared.
SEED_RULES = Path(__file__).resolve().parent / "data" / "seed_alert_rules.json"
RULES = Path(__file__).resolve().parents[1] / "simulator" / "rules" / "llm-d-alerts.yml"


def seed_alerts() -> dict[str, str]:
    """Every `- alert: NAME` in the seeds' Prometheus rules, with its `severity:` label: read from the
    seeds when they are next to the checkout (and then the kept copy must match), else the kept copy."""
    kept = {name: rule["severity"] for name, rule in json.loads(SEED_RULES.read_text()).items()}
    if not SEEDS.is_dir():
        return kept
    found: dict[str, str] = {}
    for path in sorted(SEEDS.glob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"-\s*alert:\s*(\w+)(.*?)(?=-\s*alert:|\Z)", text, flags=re.S):
            label = re.search(r"severity:\s*\"?(\w+)", match.group(2))
            found.setdefault(match.group(1), label.group(1) if label else "")
    assert found == kept, f"the seeds' rules changed: update {SEED_RULES.name}"
    return found


def test_the_worker_registers_each_declared_playbook_once() -> None:
    declared = [p.workflow for p in catalog.ALL]
    assert WORKFLOWS == declared
    names = [p.workflow_type for p in catalog.ALL] + [w.__name__ for w in SHARED_WORKFLOWS]
    assert len(names) == len(set(names)), f"a workflow type registered twice: {names}"
    assert len({p.name for p in catalog.ALL}) == len(catalog.ALL)
    for p in catalog.ALL:
        module = importlib.import_module(p.workflow.__module__)
        assert module.PLAYBOOK is p, f"{p.name} is not the declaration of its own module"
        assert p.policy.runbook == p.name


def test_routing_is_the_declared_alerts_and_nothing_else() -> None:
    routes = default_routes()
    declared = {alert: p.name for p in catalog.ALL for alert in p.alerts}
    assert {name: r.runbook for name, r in routes.items()} == declared
    router = RoutingCatalog(routes)
    for alert, runbook in declared.items():
        routed = router.route({"alertname": alert}, fingerprint="f")
        assert (routed.runbook, routed.workflow_type) == (runbook, catalog.PLAYBOOKS[runbook])


@pytest.mark.parametrize("playbook", [p for p in catalog.BUILT_IN if p.policy.gates], ids=lambda p: p.name)
def test_every_gate_a_playbook_names_is_declared(playbook) -> None:
    """Gate kinds in the module (GATE_* constants and approval("kind", …) literals) are the policy's,
    counting the playbook parts it composes (SOP-003's cordon and drain asks the hardware playbook's gate,
    seed 002's model rollback its own)."""
    main = Path(importlib.import_module(playbook.workflow.__module__).__file__)
    parts = re.findall(r"^from (workflows\.playbooks\.[\w.]+) import", main.read_text(), re.M)
    files = {main} | {Path(importlib.import_module(m).__file__) for m in parts}
    source = "\n".join(f.read_text() for f in sorted(files))
    values = dict(re.findall(r'^(GATE_\w+)\s*=\s*"([\w-]+)"', source, flags=re.M))
    asked = re.findall(r'approval\(\s*(GATE_\w+|"[\w-]+")', source)
    kinds = {values.get(a, a.strip('"')) for a in asked if not a.startswith("GATE_") or a in values}
    assert kinds, f"{playbook.name} asks no gate?"
    assert kinds <= set(playbook.policy.gates), playbook.policy.gates


def test_approvers_by_gate_accept_declared_kinds_and_refuse_others(tmp_path) -> None:
    assert set(MACHINERY_GATES) <= set(gate_kinds())
    for kind in gate_kinds():
        path = tmp_path / "ok.yaml"
        path.write_text(yaml.safe_dump({"approvers": {"by_gate": {kind: ["U01LEAD001"]}}}))
        assert load_settings(path, environ={}).approvers.by_gate == {kind: ["U01LEAD001"]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"approvers": {"by_gate": {"cordon-drain-gpu-node-2": ["U01LEAD001"]}}}))
    with pytest.raises(ConfigError, match="no playbook has a gate 'cordon-drain-gpu-node-2'"):
        load_settings(path, environ={})


def test_every_alert_the_seeds_name_gets_the_seeds_severity() -> None:
    alerts = seed_alerts()
    assert len(alerts) >= 10, alerts  # the seeds' rules: 001 (6), 002 (4)
    for rule in yaml.safe_load(RULES.read_text())["groups"]:
        for r in rule["rules"]:
            alerts.setdefault(r["alert"], r["labels"].get("severity", ""))
    missing = sorted(set(alerts) - set(catalog.ALERT_SEVERITY))
    assert not missing, f"alerts the seeds name without a severity in catalog.ALERT_SEVERITY: {missing}"
    router = RoutingCatalog(default_routes())
    for name, label in alerts.items():
        expected = catalog.ALERT_SEVERITY[name][0]
        labels = {"alertname": name, "severity": label, "namespace": "llm", "llmdeployment": "m", "node": "n"}
        assert router.route(labels, fingerprint="f").severity == expected, name
        assert alert_severity(labels)[0] == expected, name


# Every alert the seeds name (and the ones added for their procedures) -> its playbook and the
# seeds' severity. None lands in triage.
SEED_ALERT_PLAYBOOKS = {
    # seed 001 rules
    "LLMDServiceDown": ("service-outage", "P0"),
    "LLMDHighErrorRate": ("llmd-high-error-rate", "P1"),
    "LLMDHighLatency": ("high-latency", "P2"),
    "LLMDGPUHighUtilization": ("high-latency", "P3"),
    "LLMDMemoryPressure": ("high-memory", "P1"),
    "LLMDKVCacheOverflow": ("high-latency", "P3"),
    # seed 002 rules
    "LLMHighGPUUtilization": ("high-latency", "P3"),
    "LLMHighLatency": ("high-latency", "P2"),
    "LLMModelNotResponding": ("service-down", "P0"),
    "LLMHighTokenLatency": ("high-latency", "P2"),
    # added for the seeds' procedures that name no alert (simulator/rules/llm-d-alerts.yml)
    "LLMDGPUCapacityLost": ("gpu-unavailable", "P1"),
    "LLMDGPUHardwareError": ("gpu-hardware-failure", "P1"),
    "LLMDeploymentNotReady": ("model-deploy-failure", "P1"),
    "ModelServingHighLatency": ("kserve-high-latency", "P1"),
    "ModelServingHighErrorRate": ("kserve-error-rate", "P1"),
    "ModelServingModelNotLoading": ("kserve-model-not-loading", "P1"),
    "ModelServingGPUUnavailable": ("kserve-gpu-pending", "P1"),
}


def test_every_seed_alert_goes_to_its_playbook_at_the_seeds_severity_and_none_to_triage() -> None:
    assert set(seed_alerts()) <= set(SEED_ALERT_PLAYBOOKS), sorted(set(seed_alerts()) - set(SEED_ALERT_PLAYBOOKS))
    router = RoutingCatalog(default_routes())
    routed = {
        name: router.route(
            {
                "alertname": name,
                "namespace": "llm",
                "llmdeployment": "m",
                "node": "n",
                "service": "s",
                "inferenceservice": "i",
            },
            fingerprint="f",
        )
        for name in SEED_ALERT_PLAYBOOKS
    }
    assert {name: (r.runbook, r.severity) for name, r in routed.items()} == SEED_ALERT_PLAYBOOKS
    assert TRIAGE not in {r.runbook for r in routed.values()}


def test_a_p_label_wins_and_an_unknown_alert_maps_its_word() -> None:
    assert alert_severity({"alertname": "LLMDHighLatency", "severity": "P0"})[0] == "P0"
    assert alert_severity({"alertname": "SomethingNew", "severity": "critical"})[0] == "P1"
    assert alert_severity({"alertname": "SomethingNew", "severity": "warning"})[0] == "P2"
    assert alert_severity({"alertname": "SomethingNew"})[0] is None  # the playbook's default


@pytest.mark.parametrize(
    ("alertname", "labels", "runbook", "scope"),
    [
        ("LLMDServiceDown", {"instance": "10.0.0.1:8000"}, "service-outage", "cluster"),
        ("LLMDServiceDown", {"instance": "10.0.0.2:8000", "cluster": "eu-1"}, "service-outage", "eu-1/cluster"),
        ("LLMDGPUCapacityLost", {"node": "gpu-node-2"}, "gpu-unavailable", "cluster"),
        (
            "LLMDeploymentNotReady",
            {"namespace": "prod", "llmdeployment": "llama"},
            "model-deploy-failure",
            "prod/llama",
        ),
        ("LLMDeploymentNotReady", {"namespace": "prod"}, "model-deploy-failure", "alert/fp1"),
    ],
)
def test_scopes_from_labels(alertname, labels, runbook, scope) -> None:
    # The intake passes the cluster the alert came from unless it is the default (tests/test_clusters.py).
    routed = RoutingCatalog(default_routes()).route(
        {"alertname": alertname, **labels}, fingerprint="fp1", cluster=labels.get("cluster")
    )
    assert (routed.runbook, routed.scope.key) == (runbook, scope)
    assert scope_incident_id(runbook, scope).startswith(f"{runbook}--")


def test_a_route_in_config_may_name_its_own_scope_labels(tmp_path) -> None:
    path = tmp_path / "runbooks.yaml"
    path.write_text(
        yaml.safe_dump(
            {"routing": {"routes": {"LLMDServiceDown": {"runbook": "service-outage", "scope_labels": ["namespace"]}}}}
        )
    )
    router = RoutingCatalog.from_settings(load_settings(path, environ={}).routing)
    a = router.route({"alertname": "LLMDServiceDown", "namespace": "a"}, fingerprint="1")
    b = router.route({"alertname": "LLMDServiceDown", "namespace": "b"}, fingerprint="2")
    assert (a.scope.key, b.scope.key) == ("a", "b")


def test_triage_scopes_by_alertmanager_group() -> None:
    router = RoutingCatalog(default_routes())
    one = router.route({"alertname": "X", "pod": "a"}, group_key='{}:{alertname="X"}', fingerprint="1")
    two = router.route({"alertname": "X", "pod": "b"}, group_key='{}:{alertname="X"}', fingerprint="2")
    other = router.route({"alertname": "Y"}, group_key='{}:{alertname="Y"}', fingerprint="3")
    assert one.runbook == "triage" and one.scope.key == two.scope.key != other.scope.key


def test_every_drill_stages_a_fault_and_raises_an_alert_its_playbook_declares() -> None:
    from simulator.scenarios import SCENARIOS

    staged = {s.partition(":")[0] for s in SCENARIOS}
    for book in catalog.ALL:
        for drill in book.drills:
            assert drill.alert in book.alerts, f"{book.name}'s drill {drill.scenario} raises {drill.alert}"
            assert drill.scenario in staged or (drill.file is not None and drill.file.is_file()), drill
            routed = RoutingCatalog(default_routes()).route({"alertname": drill.alert, **drill.labels}, fingerprint="f")
            assert routed.runbook == book.name
            assert not routed.scope.key.startswith("alert/"), f"{drill} labels no scope: {routed.scope.key}"
    # every playbook but triage (it takes what no other claims) is rehearsed
    assert {p.name for p in catalog.ALL if not p.drills} == {TRIAGE}
