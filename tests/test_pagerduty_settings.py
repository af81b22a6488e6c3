"""The `pagerduty:` section: secrets only from RUNBOOKS_PAGERDUTY__* or a secrets file, which
severities page, and what an incident's input carries (no routing key ever)."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import ConfigError, load_settings
from standins.pagerduty import routing_key
from worker.worker import pagerduty_events

KEY = routing_key("LLM Platform")
SENIOR = routing_key("Senior SRE")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runbooks.yaml"
    path.write_text(text)
    return path


def test_unset_is_slack_only() -> None:
    settings = load_settings(environ={})
    assert not settings.pagerduty.configured
    assert settings.pagerduty.plan_for("prod") is None
    assert pagerduty_events(settings.pagerduty).clients == {}


@pytest.mark.parametrize("name", ["routing_key", "webhook_secret"])
def test_a_secret_in_the_file_is_refused_with_what_to_do_instead(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"pagerduty:\n  {name}: abc\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert f"pagerduty.{name} in {path}: secrets do not belong in the configuration file" in str(caught.value)
    assert f"RUNBOOKS_PAGERDUTY__{name.upper()}" in str(caught.value)


def test_role_keys_in_the_file_are_refused_too(tmp_path: Path) -> None:
    path = write(tmp_path, "pagerduty:\n  roles:\n    Senior SRE: abc\n")
    with pytest.raises(ConfigError, match="pagerduty.roles"):
        load_settings(path, environ={})


def test_secrets_from_the_environment_and_the_rest_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "pagerduty:\n  page_severities: [P0, P1]\n  events_url: https://events.eu.pagerduty.com/\n")
    environ = {
        "RUNBOOKS_PAGERDUTY__ROUTING_KEY": KEY,
        "RUNBOOKS_PAGERDUTY__ROLES": f'{{"Senior SRE": "{SENIOR}"}}',
        "RUNBOOKS_PAGERDUTY__WEBHOOK_SECRET": "new-secret, old-secret",
    }
    pd = load_settings(path, environ=environ).pagerduty
    assert pd.routes() == {"default": KEY, "Senior SRE": SENIOR}
    assert pd.webhook_secrets() == ["new-secret", "old-secret"]
    assert pd.events_url == "https://events.eu.pagerduty.com"
    plan = pd.plan_for("prod-us-east")
    assert plan is not None and plan.severities == ["P0", "P1"] and plan.roles == ["Senior SRE"]
    assert plan.source == "prod-us-east"
    assert KEY not in plan.model_dump_json() and SENIOR not in plan.model_dump_json()  # keys stay on the worker
    clients = pagerduty_events(pd).clients
    assert sorted(clients) == ["Senior SRE", "default"]
    assert clients["default"].url == "https://events.eu.pagerduty.com"


def test_a_secrets_file_under_the_environment(tmp_path: Path) -> None:
    secrets = tmp_path / "pagerduty-secrets.yaml"
    secrets.write_text(f"routing_key: {KEY}\nroutings_keys_typo: x\n")
    path = write(tmp_path, f"pagerduty:\n  secrets_file: {secrets}\n")
    with pytest.raises(ConfigError, match="unknown keys routings_keys_typo"):
        load_settings(path, environ={})
    secrets.write_text(f"routing_key: {KEY}\nwebhook_secret: from-file\n")
    pd = load_settings(path, environ={"RUNBOOKS_PAGERDUTY__WEBHOOK_SECRET": "from-env"}).pagerduty
    assert pd.routes() == {"default": KEY}
    assert pd.webhook_secrets() == ["from-env"]


def test_per_severity_keys_decide_which_severities_can_page() -> None:
    environ = {
        "RUNBOOKS_PAGERDUTY__ROUTING_KEYS": f'{{"P1": "{KEY}"}}',
        "RUNBOOKS_PAGERDUTY__PAGE_SEVERITIES": '["P0", "P1"]',
    }
    pd = load_settings(environ=environ).pagerduty
    plan = pd.plan_for(None)
    assert plan is not None and plan.severities == ["P1"]  # P0 has no key: it cannot page


@pytest.mark.parametrize("url", ["http://127.0.0.1:9999", "events.pagerduty.com"])
def test_events_url_must_be_https(url: str) -> None:
    with pytest.raises(ConfigError, match="pagerduty.events_url"):
        load_settings(environ={"RUNBOOKS_PAGERDUTY__EVENTS_URL": url})


def test_unknown_keys_and_severities_are_refused() -> None:
    with pytest.raises(ConfigError, match="pagerduty.page_severity"):
        load_settings(environ={"RUNBOOKS_PAGERDUTY__PAGE_SEVERITY": "P0"})
    with pytest.raises(ConfigError, match="page_severities"):
        load_settings(environ={"RUNBOOKS_PAGERDUTY__PAGE_SEVERITIES": '["P9"]'})
