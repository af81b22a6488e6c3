"""A Prometheus for the dev stack (and the tests): Debian `prometheus` scraping the simulated cluster
every second and evaluating the alert rules it ships, so playbooks that query Prometheus (seed 001's
high-latency runbook) rehearse against real PromQL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import yaml

from simulator.metrics import scrape_config

RULES = Path(__file__).resolve().parent.parent / "simulator" / "rules" / "llm-d-alerts.yml"


def prometheus_binary() -> str | None:
    """The `prometheus` on PATH (Debian's package), or None."""
    return shutil.which("prometheus")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_prometheus(
    simulator: Any, workdir: Path, *, host: str = "127.0.0.1", timeout: float = 20.0
) -> tuple[subprocess.Popen, str]:
    """Start Prometheus on a free port over `simulator` (a SimulatedCluster); (process, base URL) once
    it answers /-/ready. RuntimeError if the binary is missing or it does not get ready in `timeout`."""
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError("Debian `prometheus` is not installed (apt-get install prometheus)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": scrape_config(urlparse(simulator.url).netloc, simulator.behaviour.model_services()),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://{host}:{_free_port(host)}"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={urlparse(url).netloc}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_prometheus(process)
            raise RuntimeError(f"Prometheus did not start (see {workdir / 'prometheus.log'})")
        time.sleep(0.2)
    return process, url


def stop_prometheus(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
