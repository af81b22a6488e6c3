"""A real Prometheus (Debian `prometheus`) scraping the simulator every second and evaluating the
alert rules the simulator ships (simulator/rules/llm-d-alerts.yml).

`prometheus` yields its base URL; it needs the `simulator` fixture (pick the scenario with
`@pytest.mark.scenario(...)`). Modules that use it should skip when `PROMETHEUS` is None.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulator.server import SimulatedCluster
from cli.dev_prometheus import prometheus_binary, start_prometheus, stop_prometheus

PROMETHEUS = prometheus_binary()
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian `prometheus` binary not installed (apt-get install prometheus)"
)


@pytest.fixture
def prometheus(simulator: SimulatedCluster, tmp_path: Path) -> Iterator[str]:
    process, url = start_prometheus(simulator, tmp_path / "prometheus")
    try:
        yield url
    finally:
        stop_prometheus(process)


def query(url: str, expr: str) -> list[dict]:
    """`/api/v1/query` straight over HTTP (tests check the playbooks' queries against this)."""
    return httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]
