"""Simulator fixtures: a started simulated llm-d cluster per test.

Pick the scenario with `@pytest.mark.scenario("service-outage")` (default "baseline").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from simulator.server import SimulatedCluster

# Fast enough that a 30 s simulated rollout takes a second of a test's time.
TEST_TIME_SCALE = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): the simulator scenario to seed")


@pytest.fixture
def simulator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimulatedCluster]:
    marker = request.node.get_closest_marker("scenario")
    scenario = marker.args[0] if marker else "baseline"
    cluster = SimulatedCluster(scenario=scenario, time_scale=TEST_TIME_SCALE,
                               kubeconfig_path=tmp_path / "kubeconfig").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kubeconfig(simulator: SimulatedCluster) -> Path:
    return simulator.kubeconfig_path


@pytest.fixture
def kube_api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()
