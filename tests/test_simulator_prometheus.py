"""A real Prometheus (Debian `prometheus`) scraping the simulator and evaluating the seeds'
alert rules fires LLMDServiceDown under service-outage and nothing of the kind on the baseline."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from tests.waiting import wait_for
from simulator.metrics import scrape_config
from simulator.server import SimulatedCluster

RULES = Path(__file__).resolve().parent.parent / "simulator" / "rules" / "llm-d-alerts.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PROMETHEUS is None, reason="Debian `prometheus` binary not installed (apt-get install prometheus)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prometheus(simulator: SimulatedCluster, tmp_path: Path) -> Iterator[str]:
    target = urlparse(simulator.url).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": scrape_config(target, simulator.behaviour.model_services()),
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 20, "Prometheus to start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _alerts(url: str) -> list[dict]:
    return httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]


def _query(url: str, expr: str) -> list[dict]:
    return httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]


@pytest.mark.scenario("service-outage")
def test_service_down_fires_under_service_outage(prometheus):
    models = {"production/llama-3-8b", "production/mistral-7b", "mlops-serving/codellama-13b"}

    def service_down_firing() -> list[dict]:
        firing = [a for a in _alerts(prometheus) if a["labels"]["alertname"] == "LLMDServiceDown"
                  and a["state"] == "firing"]
        return firing if models <= {a["labels"]["instance"] for a in firing} else []

    firing = wait_for(service_down_firing, 45, "LLMDServiceDown to fire for every LLMDeployment")

    down = {a["labels"]["instance"] for a in firing}
    assert "production/llm-d-decode" not in down  # not an LLMDeployment; the operator does not touch it
    assert all(a["labels"]["severity"] == "critical" for a in firing)


def test_baseline_fires_no_service_alert(prometheus):
    # every service target up, and the rules have had time past their `for:`
    wait_for(lambda: len(_query(prometheus, 'up{job="llm-d-service"} == 1')) >= 6, 30, "every service target up")
    wait_for(lambda: _query(prometheus, "sum(rate(llm_d_requests_total[5m]))"), 30, "request rates")
    time.sleep(8)

    names = {a["labels"]["alertname"] for a in _alerts(prometheus)}
    assert not names & {"LLMDServiceDown", "LLMDHighErrorRate", "LLMDHighLatency", "LLMDMemoryPressure",
                        "LLMDGPUCapacityLost", "LLMDeploymentNotReady", "LLMDGPUHardwareError"}
    assert _query(prometheus, 'up{job="llm-d-service"} == 0') == []
