"""The worker process: runs every playbook and every activity on one task queue.

`build_worker` wires injected clients into the activity classes (tests use it in-process);
`run_worker` connects to Temporal, the cluster, Slack and serves SDK metrics for Prometheus,
and stops gracefully on SIGTERM. `python -m worker.worker --help` runs it standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pydantic
from kubernetes import client as k8s
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.http import HttpProbes, ModelWarmUp
from activities.kserve import KServeActivities
from activities.kube.api import connect
from activities.kube.claims import KubeClaims
from activities.kube.daemonsets import KubeDaemonSets
from activities.kube.deployments import KubeDeployments
from activities.kube.api import KubernetesApiErrors
from activities.kube.gpu_probes import KubeGpuProbes
from activities.kube.gpus import KubeGpus
from activities.kube.llmdeployments import KubeLLMDeployments
from activities.kube.nodes import KubeNodes
from activities.kube.pods import KubePods
from activities.kube.services import KubeServices
from activities.pagerduty import PagerDutyEvents, events_client
from activities.prometheus import PrometheusQueries
from activities.slack import SlackActivities
from activities.temporal_coordinator import CoordinationActivities
from activities.temporal_incidents import IncidentIntake
from settings import DEFAULT_CHANNEL, DEFAULT_CLUSTER, ConfigError, Settings, WorkerSettings, serving
from settings.pagerduty import PagerDutySettings
from settings.temporal import TemporalConnection, connect_temporal, with_temporal_profile
from workflows.playbooks import catalog
from workflows.incident.playbook import WorkerClients
from workflows.incident.coordinator import Coordinator
from workflows.checks.workflows import HEALTH_CHECKS
from workflows.incident.models import TASK_QUEUE

log = logging.getLogger("worker")

# Every playbook this worker runs: the catalog's declarations (a new playbook adds itself there).
WORKFLOWS: list[type] = [p.workflow for p in catalog.ALL]

# Not playbooks: the coordinator every incident asks before it writes (holds, caps, alert ledger),
# and the scheduled checks (GPU, model, morning; worker/schedule_specs.py starts them).
SHARED_WORKFLOWS: list[type] = [Coordinator, *HEALTH_CHECKS]

READY_LINE = "llm-runbooks worker ready"

# The sandbox re-imports every module a workflow uses for each run, which for our pydantic-heavy
# playbooks cost ~50 ms of CPU and ~0.7 MB per incident (bench/README.md). Our own packages are
# deterministic (no I/O, no clocks, no module state that runs change; the replay tests guard it),
# so they are imported once and shared; everything else stays sandboxed and restricted.
PLAYBOOK_SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows", "activities")
)


def activities_for(*families: object) -> list[Callable]:
    """Every @activity.defn method of the given activity objects (KubePods, SlackActivities, ...).

    Registering by discovery means a new activity method is served as soon as it is written.
    """
    found: list[Callable[..., Any]] = [
        method
        for family in families
        for _, method in inspect.getmembers(family, inspect.ismethod)
        if hasattr(method, "__temporal_activity_definition")
    ]
    if not found:
        raise ValueError(f"no activities found on {families!r}")
    return found


def playbook_activities(clients: WorkerClients) -> list[object]:
    """The activity objects playbooks bring of their own (installed team packages), bound to the
    worker's clients."""
    return [family for p in catalog.ALL if p.activities is not None for family in p.activities(clients)]


def build_worker(
    client: Client,
    kube_api_client: k8s.ApiClient,
    slack_client: AsyncWebClient | None,
    http_client: httpx.AsyncClient,
    task_queue: str = TASK_QUEUE,
    *,
    slack_channel: str = DEFAULT_CHANNEL,
    activity_executor: ThreadPoolExecutor | None = None,
    max_concurrent_activities: int = 20,
    graceful_shutdown: timedelta = timedelta(seconds=10),
    extra_activities: Sequence[object] = (),
    prometheus_url: str | None = None,
    config: Settings | None = None,
    max_cached_workflows: int = 2000,
    sandbox: bool = True,
    cluster: str | None = None,
    pagerduty: PagerDutyEvents | None = None,
) -> Worker:
    """A worker for every playbook, with activities bound to the given clients.

    The Kubernetes client blocks, so its (sync) activities run on `activity_executor`
    (a thread pool sized to `max_concurrent_activities` when not given). `prometheus_url`: the
    Prometheus the playbooks query (None: their queries fail with PrometheusNotConfigured).
    `config`: the product configuration the scheduled checks' findings are routed with (default:
    the defaults). `max_cached_workflows`: open incidents kept in memory (Temporal's sticky cache);
    `sandbox`: run workflow code in Temporal's sandbox (off: cheaper workflow tasks, no runtime check
    for non-deterministic calls; the tests keep it on). `cluster`: the cluster `kube_api_client` reaches
    and `task_queue` serves (None: the configuration's `worker_cluster`); messages name it, the checks'
    findings come from it. `pagerduty`: the Events API v2 clients incidents page through (None: those of
    `config.pagerduty`; none configured, an incident that pages anyway records "paging failed").
    """
    config = config or Settings()
    cluster = cluster or config.worker_cluster
    executor = activity_executor or ThreadPoolExecutor(
        max_workers=max_concurrent_activities, thread_name_prefix="activity"
    )
    families = [
        KubePods(kube_api_client),
        KubeDeployments(kube_api_client),
        KubeDaemonSets(kube_api_client),
        KubeNodes(kube_api_client),
        KubeGpus(kube_api_client),
        KubeGpuProbes(kube_api_client),
        KubeLLMDeployments(kube_api_client),
        KubeClaims(kube_api_client),
        KubeServices(kube_api_client),
        KServeActivities(kube_api_client),
        HttpProbes(http_client),
        ModelWarmUp(http_client, kube_api_client),
        PrometheusQueries(http_client, prometheus_url),
        SlackActivities(slack_client, default_channel=slack_channel, cluster=cluster),
        pagerduty or pagerduty_events(config.pagerduty),
        CoordinationActivities(client, task_queue),
        IncidentIntake(client, serving(config, cluster, task_queue)),
        *playbook_activities(WorkerClients(kube=kube_api_client, http=http_client, prometheus_url=prometheus_url)),
        *extra_activities,
    ]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *SHARED_WORKFLOWS],
        workflow_runner=PLAYBOOK_SANDBOX if sandbox else UnsandboxedWorkflowRunner(),
        max_cached_workflows=max_cached_workflows,
        activities=activities_for(*families),
        activity_executor=executor,
        max_concurrent_activities=max_concurrent_activities,
        graceful_shutdown_timeout=graceful_shutdown,
        # Kubernetes errors reach the incident as the API server's reason and message, not raw headers.
        interceptors=[KubernetesApiErrors()],
        # A workflow input that fails its model can never succeed: fail the workflow with the
        # validation error instead of retrying its first task forever.
        workflow_failure_exception_types=[pydantic.ValidationError],
    )


def pagerduty_events(settings: PagerDutySettings) -> PagerDutyEvents:
    """One Events API v2 client per configured route (settings/pagerduty.py `routes`)."""
    return PagerDutyEvents(
        {
            route: events_client(key, events_url=settings.events_url, ca_file=settings.ca_file)
            for route, key in settings.routes().items()
        }
    )


def slack_client_for(settings: WorkerSettings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient | None:
    """The Slack Web API client, or None (no token: messages go to the console).

    With `session`, every call reuses its pooled connections: without one slack-sdk opens (and
    for slack.com, TLS-handshakes) a new connection per message (bench/README.md, incident_cost)."""
    if not settings.slack_token:
        return None
    if settings.slack_base_url:
        # slack-sdk joins base_url and the method name: the base must end in "/".
        return AsyncWebClient(
            token=settings.slack_token, base_url=settings.slack_base_url.rstrip("/") + "/", session=session
        )
    return AsyncWebClient(token=settings.slack_token, session=session)


def telemetry_runtime(metrics_bind: str | None) -> Runtime | None:
    """A Temporal runtime exporting SDK metrics (task latencies, schedule-to-start, ...) for Prometheus."""
    if not metrics_bind:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics_bind)))


async def run_worker(
    settings: WorkerSettings,
    *,
    stop: asyncio.Event | None = None,
    config: Settings | None = None,
    apply_schedules: bool = True,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then finish in-flight activities and exit.

    With `config` (the product configuration), findings of the scheduled checks are routed with it
    and the schedules are applied at start (worker/schedule_specs.py) unless `apply_schedules` is
    False: of several worker processes on one machine only the first applies them (worker/processes.py)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Before anything else: a certificate that cannot be read or a refused handshake stops the worker
    # here, with one line (ConfigError / TemporalConnectError).
    client = await connect_temporal(
        settings.temporal,
        runtime=telemetry_runtime(settings.metrics_bind),
        identity=f"llm-runbooks-worker@{socket.gethostname()}:{os.getpid()}",
    )
    kube_api = connect(settings.kubeconfig, settings.kube_context)
    executor = ThreadPoolExecutor(max_workers=settings.max_concurrent_activities, thread_name_prefix="activity")
    try:
        async with httpx.AsyncClient() as http, aiohttp.ClientSession() as slack_session:
            worker = build_worker(
                client,
                kube_api,
                slack_client_for(settings, slack_session),
                http,
                settings.task_queue,
                slack_channel=settings.slack_channel,
                activity_executor=executor,
                max_concurrent_activities=settings.max_concurrent_activities,
                graceful_shutdown=timedelta(seconds=settings.graceful_shutdown_seconds),
                prometheus_url=settings.prometheus_url,
                config=config,
                max_cached_workflows=settings.max_cached_workflows,
                sandbox=settings.workflow_sandbox,
                cluster=settings.cluster,
            )
            async with worker:
                if config is not None and apply_schedules:
                    await _apply_schedules(client, serving(config, settings.cluster, settings.task_queue))
                log.info(
                    "%s for cluster %s on task queue %s (metrics: %s)",
                    READY_LINE,
                    settings.cluster,
                    settings.task_queue,
                    settings.metrics_bind,
                )
                print(
                    f"{READY_LINE} task_queue={settings.task_queue} pid={os.getpid()} cluster={settings.cluster}",
                    flush=True,
                )
                await stop.wait()
                log.info("shutting down: finishing in-flight activities")
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        kube_api.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _apply_schedules(client: Client, config: Settings) -> None:
    # A schedule that cannot be applied must not keep the worker from running incidents.
    from worker.schedule_specs import apply_schedules

    try:
        for line in await apply_schedules(client, config):
            log.info("schedule %s", line)
    except Exception:  # noqa: BLE001 - logged; `runbooks schedules apply` retries by hand
        log.exception("could not apply the scheduled checks; run `runbooks schedules apply`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's flags, shared with `runbooks worker`."""
    env = os.environ.get
    defaults = WorkerSettings()
    # Unset connection flags fall back to Temporal's own TEMPORAL_* variables and profile file, then to
    # the defaults (settings_from_args); the API key comes only from the environment or a file.
    tls = parser.add_argument_group("Temporal connection (unset: TEMPORAL_* variables and profile, then defaults)")
    tls.add_argument("--temporal-address", help=f"host:port (default {defaults.temporal.address})")
    tls.add_argument("--namespace", dest="temporal_namespace", help="Temporal Cloud: name.account")
    tls.add_argument("--temporal-tls", action="store_true", default=None, help="TLS with the system's trusted CAs")
    tls.add_argument("--temporal-tls-ca", type=Path, help="PEM file of the CA that signed the server's certificate")
    tls.add_argument("--temporal-tls-cert", type=Path, help="mTLS: PEM file of this worker's client certificate")
    tls.add_argument("--temporal-tls-key", type=Path, help="mTLS: PEM file of its private key")
    tls.add_argument("--temporal-server-name", help="the name the server's certificate must carry (SNI)")
    tls.add_argument(
        "--temporal-api-key-file",
        type=Path,
        help="file holding the API key (or set RUNBOOKS_TEMPORAL__API_KEY / TEMPORAL_API_KEY; never a flag)",
    )
    parser.add_argument(
        "--cluster",
        default=env("RUNBOOKS_WORKER__CLUSTER", defaults.cluster),
        help="the cluster this worker acts on (its kubeconfig's); alerts name it by their cluster label",
    )
    parser.add_argument(
        "--task-queue",
        default=env("RUNBOOKS_TASK_QUEUE"),
        help=f"default: {TASK_QUEUE}.<cluster>, the cluster's queue (settings/clusters.py)",
    )
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="default: in-cluster, else ~/.kube/config")
    parser.add_argument("--kube-context", default=None)
    parser.add_argument(
        "--slack-token", default=env("SLACK_BOT_TOKEN"), help="default: $SLACK_BOT_TOKEN; none: console"
    )
    parser.add_argument("--slack-base-url", default=env("SLACK_BASE_URL"))
    parser.add_argument("--slack-channel", default=env("SLACK_CHANNEL", defaults.slack_channel))
    parser.add_argument(
        "--metrics-bind",
        default=env("RUNBOOKS_WORKER_METRICS", defaults.metrics_bind),
        help="host:port of the Prometheus endpoint; '' turns it off",
    )
    parser.add_argument(
        "--prometheus-url",
        default=env("RUNBOOKS_PROMETHEUS__URL"),
        help="the Prometheus playbooks query, e.g. http://prometheus:9090",
    )
    parser.add_argument("--max-concurrent-activities", type=int, default=defaults.max_concurrent_activities)
    parser.add_argument("--graceful-shutdown-seconds", type=float, default=defaults.graceful_shutdown_seconds)
    parser.add_argument(
        "--max-cached-workflows",
        type=int,
        default=defaults.max_cached_workflows,
        help="open incidents kept in memory (Temporal's sticky cache)",
    )
    parser.add_argument(
        "--no-workflow-sandbox",
        dest="workflow_sandbox",
        action="store_false",
        help="run workflow code outside Temporal's sandbox (cheaper; no runtime determinism check)",
    )


# flag dest -> TemporalConnection field
_CONNECTION_FLAGS = {
    "temporal_address": "address",
    "temporal_namespace": "namespace",
    "temporal_tls": "tls",
    "temporal_tls_ca": "server_ca_file",
    "temporal_tls_cert": "client_cert_file",
    "temporal_tls_key": "client_key_file",
    "temporal_server_name": "server_name",
    "temporal_api_key_file": "api_key_file",
}


def settings_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> WorkerSettings:
    """The flags; connection fields they leave unset from RUNBOOKS_TEMPORAL__API_KEY, then Temporal's
    own configuration (settings/temporal.py), then the defaults. Raises ConfigError."""
    environ = dict(os.environ if environ is None else environ)
    fields = WorkerSettings.model_fields
    values = {name: value for name, value in vars(args).items() if name in fields}
    values["metrics_bind"] = values.get("metrics_bind") or None
    values["kubeconfig"] = values.get("kubeconfig") or None
    values["task_queue"] = values.get("task_queue") or f"{TASK_QUEUE}.{values.get('cluster') or DEFAULT_CLUSTER}"
    given = {field: getattr(args, flag) for flag, field in _CONNECTION_FLAGS.items() if getattr(args, flag, None)}
    if environ.get("RUNBOOKS_TEMPORAL__API_KEY") and "api_key_file" not in given:
        given["api_key"] = environ["RUNBOOKS_TEMPORAL__API_KEY"]
    connection = with_temporal_profile(given, environ)
    connection.setdefault("address", WorkerSettings().temporal.address)
    try:
        values["temporal"] = TemporalConnection.model_validate(connection)
    except pydantic.ValidationError as err:
        raise ConfigError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None
    return WorkerSettings(**values)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.worker", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(parser.parse_args(argv))
        asyncio.run(run_worker(settings))
    except ConfigError as err:  # one line, no traceback: a path, a refused handshake, an unreachable server
        print(f"worker: {err}", file=sys.stderr, flush=True)
        # not SystemExit: the SDK's native threads may abort a finalizing interpreter (exit -6)
        os._exit(2)


if __name__ == "__main__":
    main()
