"""What each process needs from the one configuration: the worker's connection settings.

`WorkerSettings` is where the worker process connects (Temporal, the cluster, Slack, Prometheus)
and how it serves its metrics. `worker_settings(Settings)` derives it for `runbooks worker` and
`runbooks dev`; `python -m worker.worker` builds it from its flags (worker/worker.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from settings.clusters import DEFAULT_CLUSTER, ServedCluster
from settings.sections import DEFAULT_CHANNEL, Settings
from settings.temporal import TemporalConnection
from workflows.incident.models import TASK_QUEUE


class WorkerSettings(BaseModel):
    """Where the worker connects; every field also has a flag of `python -m worker.worker`."""

    temporal: TemporalConnection = Field(
        default_factory=lambda: TemporalConnection(address="127.0.0.1:7233"),
        description="address, namespace, TLS, API key (settings/temporal.py)",
    )
    task_queue: str = TASK_QUEUE
    cluster: str = Field(
        DEFAULT_CLUSTER, description="the cluster this worker acts on; alerts name it by clusters.label"
    )
    kubeconfig: Path | None = Field(None, description="None: in-cluster service account, else ~/.kube/config")
    kube_context: str | None = None
    slack_token: str | None = Field(None, description="None: Slack messages go to the console")
    slack_base_url: str | None = Field(None, description="Slack Web API base, e.g. a local stand-in")
    slack_channel: str = Field(DEFAULT_CHANNEL, description="for messages that name no channel")
    metrics_bind: str | None = Field("127.0.0.1:9464", description="host:port for /metrics; None: off")
    prometheus_url: str | None = Field(None, description="the Prometheus playbooks query; None: none")
    max_concurrent_activities: int = Field(20, ge=1)
    graceful_shutdown_seconds: float = Field(10, ge=0)
    max_cached_workflows: int = Field(2000, ge=0, description="open incidents kept in memory (sticky cache)")
    workflow_sandbox: bool = Field(True, description="Temporal's sandbox around workflow code")


def worker_settings(
    settings: Settings,
    *,
    task_queue: str | None = None,
    kubeconfig: str | Path | None = None,
    metrics_port: int | None = None,
) -> WorkerSettings:
    """The worker's connection settings from the configuration; the arguments (command-line flags) win.
    The task queue is the served cluster's (`Settings.cluster_task_queue`) unless `task_queue` names one."""
    slack = settings.slack
    port = metrics_port if metrics_port is not None else settings.worker.metrics_port
    kubeconfig = kubeconfig or settings.kubernetes.kubeconfig
    return WorkerSettings(
        temporal=TemporalConnection.model_validate(
            settings.temporal.model_dump(include=set(TemporalConnection.model_fields))
        ),
        task_queue=task_queue or settings.cluster_task_queue(settings.worker_cluster),
        cluster=settings.worker_cluster,
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        kube_context=settings.kubernetes.context,
        slack_token=slack.bot_token.get_secret_value() if slack.bot_token else None,
        slack_base_url=slack.base_url,
        slack_channel=slack.channel_for(None) or DEFAULT_CHANNEL,
        metrics_bind=f"127.0.0.1:{port}" if port else None,
        prometheus_url=settings.prometheus.url,
        max_cached_workflows=settings.worker.max_cached_workflows,
        workflow_sandbox=settings.worker.workflow_sandbox,
    )


def serving(config: Settings, cluster: str, task_queue: str) -> Settings:
    """The configuration as one worker sees it: it serves `cluster`, whose incidents, checks and
    coordinator run on `task_queue` (the queue it polls, which a flag may have named)."""
    served = dict(config.clusters.served) | {cluster: ServedCluster(task_queue=task_queue)}
    return config.model_copy(
        update={
            "clusters": config.clusters.model_copy(update={"served": served}),
            "worker": config.worker.model_copy(update={"cluster": cluster}),
        }
    )
