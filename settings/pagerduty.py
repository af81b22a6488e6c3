"""The `pagerduty:` section: paging through PagerDuty's Events API v2, and its webhooks' secret.

Unset (no routing key at all): Slack only, as before. Routing keys and the webhook secret are
secrets: the configuration file may not hold them (load_settings refuses it, naming what to do
instead). They come from RUNBOOKS_PAGERDUTY__* variables, e.g.

    RUNBOOKS_PAGERDUTY__ROUTING_KEY=<32 characters>            the service every paging severity pages
    RUNBOOKS_PAGERDUTY__ROUTING_KEYS='{"P0": "...", "P1": "..."}'   one per severity (over routing_key)
    RUNBOOKS_PAGERDUTY__ROLES='{"Senior SRE": "..."}'            each escalation role's service
    RUNBOOKS_PAGERDUTY__WEBHOOK_SECRET=<secret>[,<old secret>]   v3 webhook signing secrets

or from `secrets_file`, a YAML file (a mounted Secret) holding any of those four keys; a variable
wins over the file. The rest may be in the file: `page_severities` (seed 001: P0 pages), `events_url`
(the client posts to `<events_url>/v2/enqueue`; https only, as the client insists) and `ca_file`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from settings.errors import ConfigError
from workflows.incident.models import PagingPlan, Severity

SECRET_FIELDS = ("routing_key", "routing_keys", "roles", "webhook_secret")
FILE_INSTEAD = (
    "set RUNBOOKS_PAGERDUTY__{name} in the environment, or pagerduty.secrets_file to a file holding it "
    "(e.g. a mounted Secret)"
)
DEFAULT_EVENTS_URL = "https://events.pagerduty.com"


def _p0() -> list[Severity]:
    return ["P0"]


class PagerDutySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routing_key: SecretStr | None = Field(default=None, description="Events API v2 integration key")
    routing_keys: dict[Severity, SecretStr] = Field(default_factory=dict, description="per severity")
    roles: dict[str, SecretStr] = Field(default_factory=dict, description="escalation role -> its service's key")
    webhook_secret: SecretStr | None = Field(default=None, description="comma-separated while a secret rotates")
    secrets_file: Path | None = None
    page_severities: list[Severity] = Field(default_factory=_p0, description="seed 001: P0 pages")
    events_url: str = DEFAULT_EVENTS_URL
    ca_file: Path | None = Field(default=None, description="trust only this CA (a local stand-in); none: system's")

    @field_validator("events_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/]+", value):
            raise ValueError("must be an https:// URL (the pagerduty client refuses any other)")
        return value.rstrip("/")

    @property
    def configured(self) -> bool:
        """Some routing key is set: incidents page through PagerDuty."""
        return self.routing_key is not None or bool(self.routing_keys) or bool(self.roles)

    def pages(self, severity: Severity) -> bool:
        """An incident of `severity` opens a PagerDuty alert: it is a paging severity with a key."""
        return severity in self.page_severities and (self.routing_key is not None or severity in self.routing_keys)

    def plan_for(self, cluster: str | None) -> PagingPlan | None:
        """IncidentInput.paging for an incident on `cluster` (None: Slack only). The severities are
        those that page and have a routing key: the workflow knows the incident's final severity."""
        if not self.configured:
            return None
        severities = [s for s in self.page_severities if self.pages(s)]
        return PagingPlan(severities=severities, roles=sorted(self.roles), source=cluster or "llm-runbooks")

    def routes(self) -> dict[str, str]:
        """Route ("default", "P0".., a role) -> routing key, for the worker's clients."""
        keys = {"default": self.routing_key.get_secret_value()} if self.routing_key else {}
        keys |= {sev: key.get_secret_value() for sev, key in self.routing_keys.items()}
        keys |= {role: key.get_secret_value() for role, key in self.roles.items()}
        return keys

    def webhook_secrets(self) -> list[str]:
        """Each signing secret (several while one rotates); empty: webhooks are refused."""
        if self.webhook_secret is None:
            return []
        return [s.strip() for s in self.webhook_secret.get_secret_value().split(",") if s.strip()]


def refuse_file_secrets(section: Any, path: object) -> None:
    """A routing key or webhook secret written into the configuration file is refused."""
    if not isinstance(section, dict):
        return
    for name in SECRET_FIELDS:
        if section.get(name) not in (None, {}, ""):
            raise ConfigError(
                f"pagerduty.{name} in {path}: secrets do not belong in the configuration file; "
                + FILE_INSTEAD.format(name=name.upper())
            )


def with_secrets_file(section: dict[str, Any]) -> dict[str, Any]:
    """`section` with what `secrets_file` holds under the fields it leaves unset."""
    path = section.get("secrets_file")
    if not path:
        return section
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read pagerduty.secrets_file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"pagerduty.secrets_file {path} is not valid YAML: {err}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"pagerduty.secrets_file {path} must hold a mapping of {', '.join(SECRET_FIELDS)}")
    unknown = sorted(set(loaded) - set(SECRET_FIELDS))
    if unknown:
        raise ConfigError(f"pagerduty.secrets_file {path}: unknown keys {', '.join(unknown)}")
    merged = dict(section)
    for name, value in loaded.items():
        if merged.get(name) is None:  # a variable wins over the file
            merged[name] = value
    return merged
