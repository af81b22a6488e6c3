"""The example configuration and the incident commander's runbook table say what is true.

Every YAML file under config/ loads with what reads it: the product's loader for the runbooks
configuration (settings/load.py), Alertmanager's own `amtool check-config` for Alertmanager's, the
`runbooks dev` command line and docker-compose.yml for Temporal's dynamic config. Their comments
are the spec where they claim something the code decides:

    # routes: ModelServingHighErrorRate -> kserve-error-rate (P1)
    # routes: KubePodCrashLooping{runbook=high-memory} -> high-memory

is an alert (its name, then any other labels) that this file's routing must send to that playbook
(at that severity, when one is given), through the triggers' RoutingCatalog; `# gate kinds: ...` and
`# runbooks: ...` lines must name exactly the gate kinds and playbooks there are.

docs/incident-commander.md's runbook table must name exactly the playbooks of
workflows/playbooks/catalog.py, with each one's alerts, severities, scope, gates and escalation marks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import pytest
import yaml

from cli.dev import temporal_command
from settings import Settings, gate_kinds, load_settings
from settings.routes import default_routes
from triggers.app import create_app
from triggers.routing import RoutingCatalog
from workflows.incident.playbook import Playbook
from workflows.playbooks.catalog import BUILT_IN, playbook

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
DOC = ROOT / "docs" / "incident-commander.md"
RUNBOOKS_EXAMPLE = CONFIG / "runbooks.example.yaml"
AMTOOL = "/usr/bin/amtool"

# `# routes: Alert{label=value,...} -> runbook (P1)`: the labels and the severity are optional.
ROUTE_COMMENT = re.compile(
    r"^\s*#\s*routes:\s*(?P<alert>[A-Za-z_][A-Za-z0-9_]*)(?:\{(?P<labels>[^}]*)\})?"
    r"\s*->\s*(?P<runbook>[a-z0-9-]+)(?:\s*\((?P<severity>P[0-3])\))?\s*$"
)
LIST_COMMENT = re.compile(r"^\s*#\s*(?P<what>gate kinds|runbooks):\s*(?P<names>.*)$")


# ---- the runbooks configuration -------------------------------------------------------------


def route_claims(text: str) -> list[tuple[dict[str, str], str, str | None]]:
    """(alert labels, runbook, severity or None) for every `# routes:` comment of `text`."""
    claims = []
    for line in text.splitlines():
        found = ROUTE_COMMENT.match(line)
        if found is None:
            assert not re.match(r"^\s*#\s*routes:", line), f"unreadable routes comment: {line.strip()!r}"
            continue
        labels = {"alertname": found["alert"]}
        for pair in filter(None, (p.strip() for p in (found["labels"] or "").split(","))):
            name, _, value = pair.partition("=")
            labels[name.strip()] = value.strip()
        claims.append((labels, found["runbook"], found["severity"]))
    return claims


def listed(text: str, what: str) -> list[str]:
    """The names of every `# <what>: a, b,` line, in order (a list may run over several lines)."""
    names: list[str] = []
    for line in text.splitlines():
        found = LIST_COMMENT.match(line)
        if found and found["what"] == what:
            names += [n.strip() for n in found["names"].split(",") if n.strip()]
    return names


def check_runbooks_config(path: Path) -> Settings:
    """Loads as the product loads it and routes as its comments say; AssertionError naming the lie."""
    text = path.read_text()
    settings = load_settings(path, environ={})
    catalog = RoutingCatalog.from_settings(settings.routing)
    claims = route_claims(text)
    assert claims, f"{path.name} has no `# routes: Alert -> runbook` comment to check its routing by"
    for labels, runbook, severity in claims:
        routed = catalog.route(labels, group_key="{}:{}", fingerprint="f")
        said = f"`# routes: {labels} -> {runbook}`"
        assert routed.runbook == runbook, f"{said}, but this configuration routes it to {routed.runbook} ({routed.why})"
        if severity:
            actual = routed.severity or playbook(routed.runbook).policy.default_severity
            assert actual == severity, f"{said} ({severity}), but it pages at {actual} ({routed.severity_why})"
    said_alerts = {labels["alertname"] for labels, _, _ in claims}
    for alertname in settings.routing.routes:
        assert alertname in said_alerts, f"route {alertname} has no `# routes: {alertname} -> ...` comment"
    for what, truth in (("gate kinds", built_in_gate_kinds()), ("runbooks", sorted(p.name for p in BUILT_IN))):
        names = listed(text, what)
        if names:
            assert sorted(names) == truth, f"`# {what}:` lists {names}; there are {truth}"
    return settings


def built_in_gate_kinds() -> list[str]:
    """This project's gate kinds (the configuration also takes those of installed team playbooks)."""
    return sorted(kind for kind, runbook in gate_kinds().items() if runbook in {p.name for p in BUILT_IN} | {"any"})


def test_the_runbooks_example_routes_as_its_comments_say() -> None:
    text = RUNBOOKS_EXAMPLE.read_text()
    check_runbooks_config(RUNBOOKS_EXAMPLE)
    assert sorted(listed(text, "runbooks")) == sorted(p.name for p in BUILT_IN), "the example lists every playbook"
    assert sorted(listed(text, "gate kinds")) == built_in_gate_kinds(), "the example lists every gate kind"


@pytest.mark.parametrize(
    ("wrong", "right", "lie"),
    [
        # the route the example once had: a KServe alert sent to the cluster-wide outage playbook
        (
            "ModelServingHighErrorRate: {runbook: kserve-error-rate",
            "ModelServingHighErrorRate: {runbook: service-outage",
            "routes it to service-outage",
        ),
        (
            "# routes: LLMDServiceDown -> service-outage (P0)",
            "# routes: LLMDServiceDown -> service-outage (P1)",
            "pages at P0",
        ),
        (
            "# routes: KubePodCrashLooping -> triage",
            "# routes: KubePodCrashLooping -> high-memory",
            "routes it to triage",
        ),
        (
            "# runbooks: kserve-model-not-loading, kserve-gpu-pending, kserve-high-latency, triage",
            "# runbooks: kserve-model-not-loading, kserve-gpu-pending, triage",
            "there are",
        ),
        ("# gate kinds: beyond-cap, held-object", "# gate kinds: beyond-cap", "there are"),
    ],
)
def test_a_comment_that_lies_about_the_routing_fails_the_check(
    wrong: str, right: str, lie: str, tmp_path: Path
) -> None:
    text = RUNBOOKS_EXAMPLE.read_text()
    assert wrong in text
    variant = tmp_path / RUNBOOKS_EXAMPLE.name
    variant.write_text(text.replace(wrong, right))
    with pytest.raises(AssertionError, match=re.escape(lie)):
        check_runbooks_config(variant)


def test_a_configured_route_without_its_comment_fails_the_check(tmp_path: Path) -> None:
    variant = tmp_path / RUNBOOKS_EXAMPLE.name
    variant.write_text(
        RUNBOOKS_EXAMPLE.read_text().replace(
            "  replace_defaults: false", "    LLMDKVCacheOverflow: {runbook: high-latency}\n  replace_defaults: false"
        )
    )
    with pytest.raises(AssertionError, match="route LLMDKVCacheOverflow has no"):
        check_runbooks_config(variant)


# ---- Alertmanager, Temporal, Prometheus -----------------------------------------------------


def _receivers_used(route: dict[str, Any]) -> set[str]:
    used = {route["receiver"]} if route.get("receiver") else set()
    for child in route.get("routes") or []:
        used |= _receivers_used(child)
    return used


def _alertnames(matchers: list[str]) -> set[str]:
    """Alert names an `alertname = X` / `alertname =~ "X|Y"` matcher list names."""
    names: set[str] = set()
    for matcher in matchers:
        found = re.match(r'^\s*alertname\s*(=~|=)\s*"?([^"]*)"?\s*$', matcher)
        if found:
            names |= set(found[2].split("|")) if found[1] == "=~" else {found[2]}
    return names


def check_alertmanager_config(path: Path) -> None:
    """Alertmanager accepts it; every receiver is used; webhooks point at the triggers' webhook;
    inhibit rules name alerts a playbook handles."""
    if not Path(AMTOOL).exists():
        pytest.fail(f"{AMTOOL} missing: apt-get install prometheus-alertmanager")
    done = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"amtool check-config {path.name}:\n{done.stdout}{done.stderr}"
    am = yaml.safe_load(path.read_text())
    defined = [r["name"] for r in am["receivers"]]
    assert set(defined) == _receivers_used(am["route"]), f"receivers {defined} vs those the routes use"
    settings = Settings.model_validate({"webhook": {"allow_unauthenticated": True}})
    served = {route.path for route in create_app(settings, lambda: None).routes}  # type: ignore[arg-type]
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs") or []:
            assert urlparse(hook["url"]).path in served, f"{hook['url']}: the triggers serve {sorted(served)}"
            assert hook.get("send_resolved", True), "resolved alerts must reach the incident"
    known = set(default_routes())
    for rule in am.get("inhibit_rules") or []:
        for side in ("source_matchers", "target_matchers"):
            unknown = _alertnames(rule.get(side) or []) - known
            assert not unknown, f"inhibit rule {side} names alerts no playbook handles: {sorted(unknown)}"


def _dynamic_values(config: dict[str, Any]) -> set[str]:
    """`KEY=VALUE` as `temporal server start-dev --dynamic-config-value` takes it."""
    values = set()
    for key, entries in config.items():
        assert isinstance(entries, list) and entries, f"{key}: a list of {{value: ..., constraints: ...}}"
        for entry in entries:
            assert set(entry) <= {"value", "constraints"} and "value" in entry, f"{key}: {entry}"
            if not entry.get("constraints"):
                value = entry["value"]
                values.add(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return values


def check_temporal_dynamic_config(path: Path) -> None:
    """Temporal's format; `runbooks dev` passes the same values; docker-compose.yml mounts the file."""
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict) and config
    command = temporal_command(Path("/tmp/home"), "127.0.0.1", 7233, 8233)
    dev = {command[i + 1] for i, arg in enumerate(command) if arg == "--dynamic-config-value"}
    assert _dynamic_values(config) == dev, f"{path.name} says {_dynamic_values(config)}; `runbooks dev` passes {dev}"
    temporal = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["temporal"]
    target = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    assert f"./config/{path.name}:{target}:ro" in temporal["volumes"]


def check_prometheus_rules(path: Path) -> None:
    rules = yaml.safe_load(path.read_text())
    for group in rules["groups"]:
        assert group["name"] and group["rules"], f"{path.name}: group {group}"
        for rule in group["rules"]:
            assert ("alert" in rule or "record" in rule) and rule.get("expr"), f"{path.name}: {rule}"


CHECKS: dict[str, Callable[[Path], Any]] = {
    "runbooks": check_runbooks_config,
    "alertmanager": check_alertmanager_config,
    "temporal-dynamic-config": check_temporal_dynamic_config,
}


def check_of(path: Path) -> Callable[[Path], Any]:
    """What reads a file of config/: by its name, else (rules files) by its content."""
    for prefix, check in CHECKS.items():
        if path.name.startswith(prefix):
            return check
    loaded = yaml.safe_load(path.read_text())
    if isinstance(loaded, dict) and "groups" in loaded:
        return check_prometheus_rules
    pytest.fail(f"config/{path.relative_to(CONFIG)}: no check knows what reads it; add one to {__name__}")


CONFIG_FILES = sorted(p for p in CONFIG.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIG)))
def test_every_config_file_loads_with_what_reads_it(path: Path) -> None:
    check_of(path)(path)


def test_config_holds_the_three_examples() -> None:
    assert {p.name for p in CONFIG_FILES} >= {
        "runbooks.example.yaml",
        "alertmanager.example.yml",
        "temporal-dynamic-config.yaml",
    }


# ---- docs/incident-commander.md's runbook table ---------------------------------------------


def runbook_table() -> dict[str, dict[str, str]]:
    """runbook -> its row (column header -> cell) of the table under "## Runbooks"."""
    section = DOC.read_text().split("\n## Runbooks\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]  # noqa: E731
    header, rows = cells(lines[0]), [cells(line) for line in lines[2:]]
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        assert len(row) == len(header), f"row {row[0]} has {len(row)} cells, the header {len(header)}"
        name = row[0].strip("`")
        assert name not in table, f"{name} twice in the table"
        table[name] = dict(zip(header, row))
    return table


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _alert_severities(cell: str) -> dict[str, str]:
    """`A`, `B` (P2); `C` (P3) -> {A: P2, B: P2, C: P3}; alert names are CamelCase."""
    found: dict[str, str] = {}
    for group in cell.split(";"):
        severity = re.search(r"\((?:[^)]*?)(P[0-3])[^)]*\)\s*$", group.strip())
        for name in _ticked(group):
            if re.fullmatch(r"[A-Z][A-Za-z0-9]+", name):
                found[name] = severity[1] if severity else ""
    return found


def _scope_says(book: Playbook, cell: str) -> bool:
    if book.scope.kind == "cluster":
        return cell == "cluster"
    if book.scope.kind == "alert-group":
        return cell.startswith("Alertmanager group")
    return all(label in _ticked(cell) for label in book.scope.labels)


def test_the_runbook_table_names_every_playbook_as_it_declares_itself() -> None:
    table, declared_names = runbook_table(), {p.name for p in BUILT_IN}
    assert set(table) == declared_names, (
        f"not in the catalog: {sorted(set(table) - declared_names)}; not in the table: {sorted(declared_names - set(table))}"
    )
    for book in BUILT_IN:
        row = table[book.name]
        alerts = _alert_severities(row["alerts that start it (severity)"])
        declared = {name: alert.severity for name, alert in book.alerts.items()}
        assert alerts == declared, f"{book.name}: the table says {alerts}, the playbook declares {declared}"
        scope = row["one incident per"]
        assert _scope_says(book, scope), f"{book.name}: scope {scope!r}, declared {book.scope}"
        gates = row["gates"]
        assert (_ticked(gates) if gates != "none" else []) == list(book.policy.gates), (
            f"{book.name}: gates {gates!r}, declared {book.policy.gates}"
        )
        marks = row["escalation (minutes from `startsAt`)"]
        if book.policy.escalation is None:
            assert marks == "the severity's", f"{book.name}: escalates on the severity's marks, not {marks!r}"
        else:
            for step in book.policy.escalation.steps:
                assert f"{step.after_minutes:g} {step.notify}" in marks, f"{book.name}: {marks!r} lacks {step}"
