"""A real Prometheus (Debian `prometheus`) scraping the simulator every second and evaluating the
alert rules the simulator ships (simulator/rules/llm-d-alerts.yml).

`prometheus` yields its base URL; it needs the `simulator` fixture (pick the scenario with
`@pytest.mark.scenario(...)`). Modules that use it should skip when `PROMETHEUS` is None.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from simulator.metrics import scrape_config
from simulator.server import SimulatedCluster
from tests.waiting import wait_for

RULES = Path(__file__).resolve().parent.parent / "simulator" / "rules" / "llm-d-alerts.yml"
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian `prometheus` binary not installed (apt-get install prometheus)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_prometheus(simulator: SimulatedCluster, workdir: Path) -> tuple[subprocess.Popen, str]:
    """Start Prometheus on a free port over `simulator`; (process, base URL) once it is ready."""
    assert PROMETHEUS is not None
    target = urlparse(simulator.url).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": scrape_config(target, simulator.behaviour.model_services()),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 20, "Prometheus to start")
    except BaseException:
        process.terminate()
        process.wait(timeout=10)
        raise
    return process, url


@pytest.fixture
def prometheus(simulator: SimulatedCluster, tmp_path: Path) -> Iterator[str]:
    process, url = start_prometheus(simulator, tmp_path / "prometheus")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def query(url: str, expr: str) -> list[dict]:
    """`/api/v1/query` straight over HTTP (tests check the playbooks' queries against this)."""
    return httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]
