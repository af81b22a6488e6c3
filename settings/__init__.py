"""The product's one configuration: a YAML file, then RUNBOOKS_* environment variables on top.

Every process reads it here: the triggers, the worker (its connection settings are derived in
`settings.process`), `runbooks dev` and the CLI. Why a top-level package named `settings`: the
configuration belongs to no one process (it lived in triggers/ while the worker kept a second copy
of its part); `config` would clash with `config/`, the folder of example files
(`config/runbooks.example.yaml`), and read like `kubernetes.config`, which the activities import
beside it; and the classes it holds are `Settings`, `load_settings`.

File: `RUNBOOKS_CONFIG` (or the path passed to `load_settings`); see config/runbooks.example.yaml.

Environment variables override the file, one field each, named
`RUNBOOKS_<SECTION>__<FIELD>` (double underscore between levels, case-insensitive), e.g.

    RUNBOOKS_TEMPORAL__ADDRESS=temporal.internal:7233
    RUNBOOKS_TEMPORAL__NAMESPACE=sre
    RUNBOOKS_TEMPORAL__TASK_QUEUE=llm-runbooks
    RUNBOOKS_TEMPORAL__UI_URL=https://temporal.internal
    RUNBOOKS_TEMPORAL__SERVER_CA_FILE=/etc/llm-runbooks/temporal/ca.crt   (TLS; also SERVER_NAME, TLS)
    RUNBOOKS_TEMPORAL__CLIENT_CERT_FILE=.../tls.crt   RUNBOOKS_TEMPORAL__CLIENT_KEY_FILE=.../tls.key   (mTLS)
    RUNBOOKS_TEMPORAL__API_KEY=...   (or API_KEY_FILE; an API key is never read from the file)
    RUNBOOKS_CLUSTERS__DEFAULT=prod-us-east   (alerts without a `cluster` label; settings/clusters.py)
    RUNBOOKS_CLUSTERS__SERVED='["prod-us-east", "prod-eu-west"]'
    RUNBOOKS_CLUSTERS__LABEL=cluster
    RUNBOOKS_WORKER__CLUSTER=prod-eu-west   (the cluster this worker acts on; default: clusters.default)
    RUNBOOKS_SLACK__BOT_TOKEN=xoxb-...
    RUNBOOKS_SLACK__SIGNING_SECRET=...
    RUNBOOKS_SLACK__APP_TOKEN=xapp-...   (Socket Mode: clicks arrive over a websocket, no public URL)
    RUNBOOKS_SLACK__BASE_URL=https://slack.com/api/
    RUNBOOKS_SLACK__CHANNELS='{"P0": "#incident-response", "default": "#llm-platform"}'
    RUNBOOKS_PAGERDUTY__ROUTING_KEY=...   (also __ROUTING_KEYS, __ROLES, __WEBHOOK_SECRET: settings/pagerduty.py)
    RUNBOOKS_WEBHOOK__BEARER_TOKEN=...
    RUNBOOKS_WEBHOOK__BASIC_USERNAME=alertmanager   RUNBOOKS_WEBHOOK__BASIC_PASSWORD=...
    RUNBOOKS_WEBHOOK__MAX_BODY_BYTES=16777216
    RUNBOOKS_DRILLS__ENABLED=true
    RUNBOOKS_SERVER__PORT=8080
    RUNBOOKS_KUBERNETES__KUBECONFIG=/etc/runbooks/kubeconfig
    RUNBOOKS_WORKER__METRICS_PORT=9464
    RUNBOOKS_WORKER__PROCESSES=4   (runbooks worker --processes)
    RUNBOOKS_PROMETHEUS__URL=http://prometheus.monitoring:9090

Under both, Temporal's own client configuration fills the `temporal:` fields they leave unset:
TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_* and the profile file
(`temporalio.envconfig`; precedence and details in settings/temporal.py).

A value that is a list or a mapping is written as JSON (or YAML flow style). A bad file or
variable fails at start with `ConfigError`, naming the field and the reason.

Modules: `clusters` (which cluster an alert came from, each cluster's task queue), `sections` (one model per section, `Settings` the whole, `DEFAULT_CHANNEL`), `load`
(file + environment), `temporal` (`TemporalConnection`, `connect_temporal`: how every process connects,
TLS and API key included), `errors` (`ConfigError`), `process` (`WorkerSettings`, `worker_settings`), `routes` (`Route`, the built-in
routes from the playbooks' declarations; the triggers route with them).
"""

from settings.clusters import DEFAULT_CLUSTER, ClusterSettings
from settings.load import CONFIG_ENV, ENV_PREFIX, load_settings
from settings.process import WorkerSettings, serving, worker_settings
from settings.sections import (
    DEFAULT_CHANNEL,
    ApproverSettings,
    ConfigError,
    DrillSettings,
    EscalationSettings,
    KubernetesSettings,
    PlaybookSettings,
    PrometheusSettings,
    RoutingSettings,
    ScheduleSettings,
    ServerSettings,
    Settings,
    SlackSettings,
    TemporalSettings,
    WebhookSettings,
    WorkerSection,
    gate_kinds,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CLUSTER",
    "ClusterSettings",
    "DEFAULT_CHANNEL",
    "ENV_PREFIX",
    "ApproverSettings",
    "ConfigError",
    "DrillSettings",
    "EscalationSettings",
    "KubernetesSettings",
    "PlaybookSettings",
    "PrometheusSettings",
    "RoutingSettings",
    "ScheduleSettings",
    "ServerSettings",
    "Settings",
    "SlackSettings",
    "TemporalSettings",
    "WebhookSettings",
    "WorkerSection",
    "WorkerSettings",
    "gate_kinds",
    "load_settings",
    "serving",
    "worker_settings",
]
