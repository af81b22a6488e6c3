"""The clusters `runbooks dev` runs: one simulated cluster and one worker per name, on one Temporal and
one triggers, as many clusters run in production (settings/clusters.py).

`runbooks dev --clusters east,west` serves exactly those names (their configured task queues kept);
the default cluster is the configured `clusters.default` when it is one of them, else the first.
Plain `runbooks dev` runs one cluster, `clusters.default` ("default" unless configured).

Each cluster has its own simulator (its own port and kubeconfig: `HOME/simulator.kubeconfig` for
a single cluster, as before clusters had names; `HOME/simulator-<name>.kubeconfig` for several), its
own Prometheus over that simulator (when Debian's `prometheus` is installed and `prometheus.url` is
not configured) and its own worker, polling the cluster's task queue with metrics on
`--metrics-port` + its index. dev.json lists them (`clusters`: name -> kubeconfig).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings import ClusterSettings, Settings, WorkerSettings, serving, worker_settings
from settings.clusters import CLUSTER_NAME, ServedCluster


def cluster_names(text: str) -> list[str]:
    """`--clusters east,west` as names (argparse type): each a cluster name, none twice."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: name each cluster, separated by commas (east,west)")
    bad = [name for name in names if not re.match(CLUSTER_NAME, name)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(repr, bad))} is not a cluster name (letters, digits, '-', '_', '.'; at most 63)"
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} named twice")
    return names


def dev_clusters(settings: Settings, names: list[str] | None) -> Settings:
    """The configuration with the clusters dev runs as `clusters.served` (module docstring)."""
    configured = settings.clusters
    names = names or [configured.default]
    default = configured.default if "default" in configured.model_fields_set and configured.default in names else None
    clusters = ClusterSettings(
        label=configured.label,
        default=default or names[0],
        served={name: configured.served.get(name) or ServedCluster() for name in names},
    )
    # worker.cluster is each worker's own (DevCluster.worker): none for the stack as a whole
    worker = settings.worker.model_copy(update={"cluster": None})
    return settings.model_copy(update={"clusters": clusters, "worker": worker})


@dataclass
class DevCluster:
    """One cluster of the dev stack: its name, task queue, kubeconfig, and what dev started for it."""

    name: str
    task_queue: str
    kubeconfig: str
    metrics_port: int
    simulator: Any = None  # simulator.server.SimulatedCluster; None: a real cluster (--kubeconfig)
    prometheus: subprocess.Popen | None = None
    prometheus_url: str | None = None  # the Prometheus its worker queries (its own, or prometheus.url)

    def worker(self, settings: Settings) -> tuple[WorkerSettings, Settings]:
        """This cluster's worker: where it connects, and the configuration as it sees it (it serves this
        cluster, on its task queue; its playbooks query this cluster's Prometheus)."""
        config = serving(settings, self.name, self.task_queue)
        if self.prometheus_url != settings.prometheus.url:
            config = config.model_copy(
                update={"prometheus": config.prometheus.model_copy(update={"url": self.prometheus_url})}
            )
        return worker_settings(config, kubeconfig=self.kubeconfig, metrics_port=self.metrics_port), config

    def stop(self) -> None:
        from cli.dev_prometheus import stop_prometheus

        if self.prometheus is not None:
            stop_prometheus(self.prometheus)
        if self.simulator is not None:
            self.simulator.stop()


def start_cluster(
    settings: Settings,
    name: str,
    *,
    home: Path,
    single: bool,
    scenario: str,
    time_scale: float,
    simulator_port: int,
    metrics_port: int,
) -> DevCluster:
    """A simulated cluster `name` (and a Prometheus over it when it can): started and answering."""
    from cli.dev_prometheus import prometheus_binary, start_prometheus
    from simulator.server import SimulatedCluster

    simulator = SimulatedCluster(
        scenario=scenario,
        port=simulator_port,
        time_scale=time_scale,
        kubeconfig_path=home / ("simulator.kubeconfig" if single else f"simulator-{name}.kubeconfig"),
    ).start()
    cluster = DevCluster(
        name,
        settings.cluster_task_queue(name),
        str(simulator.kubeconfig_path),
        metrics_port,
        simulator=simulator,
        prometheus_url=settings.prometheus.url,
    )
    if settings.prometheus.url is None and prometheus_binary():
        try:
            # a real Prometheus over the simulator, for the playbooks that query it (high latency)
            cluster.prometheus, cluster.prometheus_url = start_prometheus(
                simulator, home / ("prometheus" if single else f"prometheus-{name}")
            )
        except BaseException:
            simulator.stop()
            raise
    return cluster


def real_cluster(settings: Settings, name: str, kubeconfig: str, metrics_port: int) -> DevCluster:
    """`runbooks dev --kubeconfig K`: the one cluster is that one, no simulator."""
    return DevCluster(
        name, settings.cluster_task_queue(name), kubeconfig, metrics_port, None, None, settings.prometheus.url
    )


def state_of(clusters: list[DevCluster], label: str) -> dict[str, Any]:
    """dev.json's view of the clusters (the first is the default): `clusters` (name -> kubeconfig),
    `task_queues` and `simulators` (name -> its queue, its simulator's URL or None), `cluster_label`
    (the alert label naming a cluster); `cluster`, and the top-level `kubeconfig`, `simulator`,
    `prometheus` as before clusters had names, are the default's."""
    default = clusters[0]
    return {
        "cluster": default.name,
        "cluster_label": label,
        "kubeconfig": default.kubeconfig,
        "simulator": default.simulator.url if default.simulator else None,
        "prometheus": default.prometheus_url,
        "clusters": {c.name: c.kubeconfig for c in clusters},
        "task_queues": {c.name: c.task_queue for c in clusters},
        "simulators": {c.name: c.simulator.url if c.simulator else None for c in clusters},
    }


def banner_lines(clusters: list[DevCluster], host: str, label: str) -> list[str]:
    """The banner's lines for each cluster (the default first): where it is, its kubeconfig, its
    Prometheus, its worker's task queue and metrics."""
    lines = []
    for c in clusters:
        where = f"simulated llm-d cluster at {c.simulator.url}" if c.simulator else f"from {c.kubeconfig}"
        if len(clusters) > 1 and c is clusters[0]:
            where += f"   (the default: alerts without a `{label}` label)"
        lines += [
            f"  cluster           {c.name}: {where}",
            f"  kubeconfig        {c.kubeconfig}   (try: KUBECONFIG={c.kubeconfig} kubectl get llmdeployments -A)",
        ]
        if c.prometheus is not None:
            lines += [f"  Prometheus        {c.prometheus_url}  (scraping cluster {c.name}; its playbooks query it)"]
        lines += [
            f"  worker            cluster {c.name}: every playbook, on task queue {c.task_queue}",
            f"  worker metrics    http://{host}:{c.metrics_port}/metrics",
        ]
    return lines
