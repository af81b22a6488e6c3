"""Glue between the product's one configuration (triggers.config.Settings) and each process."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from triggers.config import ConfigError, Settings
from triggers.config import load_settings as _load_file_and_env
from worker.worker import WorkerSettings

DEV_STATE = "dev.json"  # written by `runbooks dev` so drills and the CLI find the running stack


def load_settings(
    path: str | Path | None,
    *,
    temporal_address: str | None = None,
    temporal_namespace: str | None = None,
) -> Settings:
    """File, then RUNBOOKS_* variables, then command-line flags."""
    settings = _load_file_and_env(path)
    updates = {k: v for k, v in (("address", temporal_address), ("namespace", temporal_namespace)) if v}
    if not updates:
        return settings
    return settings.model_copy(update={"temporal": settings.temporal.model_copy(update=updates)})


def worker_settings(
    settings: Settings,
    *,
    task_queue: str | None = None,
    kubeconfig: str | Path | None = None,
    metrics_port: int | None = None,
) -> WorkerSettings:
    slack = settings.slack
    port = metrics_port if metrics_port is not None else settings.worker.metrics_port
    kubeconfig = kubeconfig or settings.kubernetes.kubeconfig
    return WorkerSettings(
        temporal_address=settings.temporal.address,
        temporal_namespace=settings.temporal.namespace,
        task_queue=task_queue or settings.temporal.task_queue,
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        kube_context=settings.kubernetes.context,
        slack_token=slack.bot_token.get_secret_value() if slack.bot_token else None,
        slack_base_url=slack.base_url,
        slack_channel=slack.channel_for(None) or "#incident-response",
        metrics_bind=f"127.0.0.1:{port}" if port else None,
        prometheus_url=settings.prometheus.url,
    )


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal.address,
            namespace=settings.temporal.namespace,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:  # the SDK's connection failure
        raise ConfigError(
            f"cannot reach Temporal at {settings.temporal.address}: {exc}. Is `runbooks dev` (or your server) running?"
        ) from None


def read_dev_state(home: Path) -> dict | None:
    path = Path(home) / DEV_STATE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_dev_state(home: Path, state: dict) -> Path:
    path = Path(home) / DEV_STATE
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)  # it holds the dev webhook token
    return path
