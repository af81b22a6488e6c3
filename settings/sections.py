"""The sections of the product's configuration file, one pydantic model each, and `Settings`, the whole.

Loading (the file, then RUNBOOKS_* variables) is settings/load.py; the package docstring lists the
variables. Every section forbids unknown keys, so a typo stops the process at start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from settings.clusters import CLUSTER_NAME, ClusterSettings
from settings.errors import ConfigError as ConfigError  # defined apart: settings/temporal.py raises it too
from settings.pagerduty import PagerDutySettings
from settings.routes import SEVERITIES, Route, default_routes
from settings.temporal import TemporalConnection
from workflows.playbooks.catalog import ALL, PLAYBOOKS
from workflows.incident.coordination_models import Caps
from workflows.checks.models import MaintenanceWindow
from workflows.incident.claims import MACHINERY_GATES
from workflows.incident.severity import severity_policy
from workflows.incident.models import TASK_QUEUE, EscalationStep, Severity

# Where incident messages go when neither the severity nor `slack.channels.default` names a
# channel: the seeds' incident channel (seed 000 "Acknowledge in #incident-response", seed 003).
DEFAULT_CHANNEL = "#incident-response"
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemporalSettings(TemporalConnection):
    """The connection (address, namespace, TLS, API key: settings/temporal.py, with its precedence
    over Temporal's own TEMPORAL_* variables and profile file), and what the product adds to it."""

    task_queue: str = TASK_QUEUE
    ui_url: str | None = Field(default="http://localhost:8233", description="Web UI base, for links in Slack")
    rpc_timeout_seconds: float = Field(default=5.0, gt=0, description="give up on one Temporal call after this")
    # Put before every incident id (playbook--scope): stacks of several clusters that share one
    # namespace keep their incidents apart (or give alerts a `cluster` external label).
    incident_id_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$", max_length=60)

    @field_validator("ui_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value


class SlackSettings(_Section):
    bot_token: SecretStr | None = Field(default=None, description="xoxb-...; none: messages go to the console")
    signing_secret: SecretStr | None = Field(default=None, description="verifies /slack/interactions requests")
    # Socket Mode: the triggers open a websocket to Slack and clicks arrive on it (no public HTTPS URL).
    # The app-level token (scope connections:write) authenticates that socket; see triggers/slack_socket.py.
    app_token: SecretStr | None = Field(default=None, description="xapp-...; set: receive clicks over Socket Mode")
    base_url: str = Field(default="https://slack.com/api/", description="Slack Web API base (a stand-in in tests)")
    # Channel per severity, "default" for the rest.
    # None of either: the severity's channel from seed 001 (#incidents-critical, -high, -medium, -low).
    channels: dict[str, str] = Field(default_factory=dict)
    # Only these may receive replies through an interaction's response_url (defence in depth
    # on top of the signature check).
    response_url_prefixes: list[str] = Field(default_factory=lambda: ["https://hooks.slack.com/"])

    @field_validator("channels")
    @classmethod
    def _severity_keys(cls, channels: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(channels) - set(SEVERITIES) - {"default"})
        if unknown:
            raise ValueError(f"keys must be P0..P3 or 'default', not {', '.join(unknown)}")
        return channels

    @field_validator("app_token")
    @classmethod
    def _app_level_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token (xapp-...), not a bot or user token")
        return value

    @field_validator("base_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"  # slack-sdk joins method names onto it

    def channel_for(self, severity: Severity | None) -> str:
        """The severity's channel: configured for it, else `default`, else seed 001's for the severity."""
        if severity and severity in self.channels:
            return self.channels[severity]
        if "default" in self.channels:
            return self.channels["default"]
        return severity_policy(severity).channels[0] if severity else DEFAULT_CHANNEL


class ApproverSettings(_Section):
    """Who may press Approve/Reject: Slack user ids (U…/W…) or `@group` (a user group below)."""

    default: list[str] = Field(default_factory=list, description="any severity, any gate; empty: anyone")
    by_severity: dict[Severity, list[str]] = Field(default_factory=dict)
    by_gate: dict[str, list[str]] = Field(default_factory=dict)
    user_groups: dict[str, list[str]] = Field(default_factory=dict, description="group name -> member user ids")

    @model_validator(mode="after")
    def _entries_resolve(self) -> ApproverSettings:
        kinds = gate_kinds()
        unknown = sorted(set(self.by_gate) - set(kinds))
        if unknown:
            raise ValueError(
                f"by_gate: no playbook has a gate {', '.join(map(repr, unknown))} "
                f"(gate kinds: {', '.join(sorted(kinds))})"
            )
        for name, members in self.user_groups.items():
            for member in members:
                if not _SLACK_USER.match(member):
                    raise ValueError(f"user_groups.{name}: {member!r} is not a Slack user id (U… or W…)")
        lists = {"default": self.default} | {f"by_severity.{k}": v for k, v in self.by_severity.items()}
        lists |= {f"by_gate.{k}": v for k, v in self.by_gate.items()}
        for where, entries in lists.items():
            for entry in entries:
                if entry.startswith("@"):
                    if entry[1:] not in self.user_groups:
                        raise ValueError(f"{where}: user group {entry!r} is not defined under user_groups")
                elif not _SLACK_USER.match(entry):
                    raise ValueError(f"{where}: {entry!r} is neither a Slack user id (U…/W…) nor @group")
        return self

    def _expand(self, entries: list[str]) -> list[str]:
        users: list[str] = []
        for entry in entries:
            for user in self.user_groups[entry[1:]] if entry.startswith("@") else [entry]:
                if user not in users:
                    users.append(user)
        return users

    def for_incident(self, severity: Severity | None) -> dict[str, list[str]]:
        """IncidentInput.approvers: "*" from the severity (else default), plus each configured gate."""
        everyone = self._expand(self.by_severity.get(severity, self.default) if severity else self.default)
        approvers = {"*": everyone} if everyone else {}
        approvers |= {gate: self._expand(entries) for gate, entries in self.by_gate.items() if entries}
        return approvers


class RoutingSettings(_Section):
    # Added to (and overriding) the built-in catalog of the seeds' alert names.
    routes: dict[str, Route] = Field(default_factory=dict)
    replace_defaults: bool = False

    def routes_in_effect(self) -> dict[str, Route]:
        """The routes the triggers use (triggers/routing.py `RoutingCatalog.from_settings`)."""
        return dict(self.routes) if self.replace_defaults else default_routes() | self.routes


class EscalationSettings(_Section):
    steps: list[EscalationStep] | None = Field(default=None, description="override every playbook's marks")
    # Role in the SOP's words ("Senior SRE", "Secondary") -> who that is (Slack mentions, phone, ...).
    # Applies to whichever marks an incident uses: these steps, the SOP's, or the severity's.
    contacts: dict[str, list[str]] = Field(default_factory=dict)

    def steps_with_contacts(self) -> list[EscalationStep] | None:
        """The configured steps (None: the playbook's); contacts travel separately (`contacts`)."""
        return self.steps


class WebhookSettings(_Section):
    bearer_token: SecretStr | None = None
    basic_username: str | None = None
    basic_password: SecretStr | None = None
    allow_unauthenticated: bool = Field(default=False, description="only for a laptop; never in production")
    # The largest notification we read. Alertmanager with `max_alerts: 0` (the example config) sends a
    # whole group in one body: a kube-prometheus alert is ~1-3 KB of JSON (12-20 labels, summary,
    # description, runbook_url), so 16 MiB holds ~5,000 such alerts in one group. A bigger body is
    # answered 503 + Retry-After (never 413: Alertmanager and Grafana drop a 4xx for good).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Bodies being read or parsed at once, all requests together: past it, 503 + Retry-After (shed load).
    max_inflight_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    retry_after_seconds: int = Field(default=30, ge=1, description="Retry-After on a 503")

    @model_validator(mode="after")
    def _some_auth(self) -> WebhookSettings:
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic auth needs both basic_username and basic_password")
        return self

    def check_protected(self) -> None:
        """The webhook starts incidents: it refuses to serve without credentials unless told to."""
        if self.bearer_token is None and self.basic_username is None and not self.allow_unauthenticated:
            raise ConfigError(
                "webhook: set bearer_token or basic_username/basic_password (or allow_unauthenticated: true)"
            )


class DrillSettings(_Section):
    """Drills: alerts labelled drill="true" (with a `time_scale`) shorten every cluster wait.

    Off by default: on a stack that acts on a real cluster such labels are ignored and logged.
    `runbooks dev` (the simulator) turns them on.
    """

    enabled: bool = False


class PlaybookSettings(_Section):
    mode: Literal["act", "shadow"] | None = Field(default=None, description="None: the global mode")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class KubernetesSettings(_Section):
    kubeconfig: str | None = Field(default=None, description="none: in-cluster config, else ~/.kube/config")
    context: str | None = None


class WorkerSection(_Section):
    """The `worker:` section of the file. The worker process's connection settings, derived from the
    whole configuration, are `settings.process.WorkerSettings`."""

    metrics_port: int | None = Field(default=9464, ge=0, le=65535)
    # The cluster this worker acts on (its kubeconfig or in-cluster ServiceAccount): it polls that
    # cluster's task queue only (settings/clusters.py). None: `clusters.default`.
    cluster: str | None = Field(default=None, pattern=CLUSTER_NAME)
    # Worker processes `runbooks worker` runs on this machine (worker/processes.py supervises them when
    # more than one): each polls the same task queue, child i serves metrics on metrics_port + i.
    processes: int = Field(default=1, ge=1)
    # Open incidents a worker keeps in memory (Temporal's sticky cache). One evicted is rebuilt by
    # replaying its history when it next wakes (a timer, an alert), which costs CPU in a storm; each
    # cached incident costs ~0.1 MB (bench/README.md: incident_cost, escalation_timers).
    max_cached_workflows: int = Field(default=2000, ge=0)
    # Temporal's workflow sandbox re-checks every workflow task for non-deterministic calls. Off, an
    # incident costs ~27% less worker CPU (bench/README.md); the tests always run with it on.
    workflow_sandbox: bool = True


class PrometheusSettings(_Section):
    """The Prometheus the playbooks query (seed 001's `promtool query` steps), e.g. http://prometheus:9090."""

    url: str | None = Field(default=None, description="none: playbooks that query Prometheus fail their step")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value


class ScheduleSettings(_Section):
    """The checks the seeds run on a clock (worker/schedule_specs.py applies them at the worker's start
    and on `runbooks schedules apply`). Intervals in minutes; the morning time in `time_zone`.
    `maintenance_window` (seed 003; null: none) skips the GPU and model checks, which page."""

    enabled: bool = Field(default=True, description="false: `apply` deletes the three schedules")
    ops_channel: str = Field(
        default="#llm-platform", description="the morning report, checks that cannot run (seed 003)"
    )
    gpu_health_every_minutes: float = Field(default=15, gt=0, description="seed 002")
    model_health_every_minutes: float = Field(default=5, gt=0, description="seed 002")
    morning_health_at: time = Field(default=time(8, 0), description='"HH:MM" in time_zone')
    time_zone: str = "America/Los_Angeles"
    catchup_window_minutes: float = Field(
        default=10, gt=0, description="a run missed while Temporal was down still runs if this late, else is skipped"
    )
    maintenance_window: MaintenanceWindow | None = Field(default_factory=MaintenanceWindow)
    gpu_probe_timeout_seconds: float = Field(default=120, gt=0)
    model_probe_timeout_seconds: float = Field(default=10, gt=0)

    @field_validator("morning_health_at", mode="before")
    @classmethod
    def _quoted_time(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):  # YAML 1.1 reads an unquoted 8:00 as 480
            raise ValueError('write the time as a quoted "HH:MM" string')
        return value

    @field_validator("time_zone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. America/Los_Angeles)") from None
        return value


class Settings(_Section):
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    clusters: ClusterSettings = Field(default_factory=ClusterSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    pagerduty: PagerDutySettings = Field(default_factory=PagerDutySettings)
    approvers: ApproverSettings = Field(default_factory=ApproverSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    drills: DrillSettings = Field(default_factory=DrillSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    # Blast-radius caps shared by every incident (the coordinator counts); a capped write asks a human.
    caps: Caps = Field(default_factory=Caps)
    # "shadow": every playbook write is a server-side dry run (dryRun=All), recorded as "would have".
    mode: Literal["act", "shadow"] = "act"
    playbooks: dict[str, PlaybookSettings] = Field(default_factory=dict, description="per playbook, by runbook name")

    @field_validator("playbooks")
    @classmethod
    def _known_playbooks(cls, playbooks: dict[str, PlaybookSettings]) -> dict[str, PlaybookSettings]:
        unknown = sorted(set(playbooks) - set(PLAYBOOKS))
        if unknown:
            raise ValueError(
                f"no playbook named {', '.join(map(repr, unknown))} (known: {', '.join(sorted(PLAYBOOKS))})"
            )
        return playbooks

    @model_validator(mode="after")
    def _worker_cluster_served(self) -> Settings:
        cluster = self.worker.cluster
        if cluster is not None and not self.clusters.serves(cluster):
            raise ValueError(
                f"worker.cluster {cluster!r} is not served: clusters.served lists {', '.join(self.clusters.names())}"
            )
        return self

    @property
    def worker_cluster(self) -> str:
        """The cluster a worker of this configuration serves (`worker.cluster`, else `clusters.default`)."""
        return self.worker.cluster or self.clusters.default

    def cluster_task_queue(self, cluster: str) -> str:
        """Where cluster `cluster`'s incidents, checks and coordinator run (settings/clusters.py)."""
        return self.clusters.task_queue(self.temporal.task_queue, cluster)

    def mode_for(self, runbook: str, labels: Mapping[str, str] | None = None) -> Literal["act", "shadow"]:
        """Shadow when configured globally or for the playbook, or asked by the alert's
        `runbooks_shadow="true"` label (honoured always: it can only make automation do less)."""
        if labels and labels.get("runbooks_shadow") == "true":
            return "shadow"
        own = self.playbooks.get(runbook)
        return (own.mode if own and own.mode else None) or self.mode


def gate_kinds() -> dict[str, str]:
    """Every approval gate kind a playbook declares -> the playbook."""
    return {kind: p.name for p in ALL for kind in p.policy.gates} | {kind: "any" for kind in MACHINERY_GATES}
