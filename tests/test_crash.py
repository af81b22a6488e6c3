"""A worker process SIGKILLed in the middle of SOP-001: another worker process finishes the
incident, and every change reaches the cluster exactly once (the simulator's audit log)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from standins.slack import SlackStandIn
from tests.helpers.histories import save_history
from tests.helpers.service_outage import (
    CHANNEL,
    OPERATOR,
    OPERATOR_NS,
    assert_healed_with_each_remedy_once,
    llm_deployments,
    outage_input,
    restarts_by_deployment,
)
from tests.helpers.waiting import wait_for_async
from worker.worker import READY_LINE
from workflows.playbooks.service_outage.playbook import ServiceOutage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_worker(
    temporal_address: str, task_queue: str, kubeconfig: Path, slack: SlackStandIn, metrics_port: int
) -> asyncio.subprocess.Process:
    """`python -m worker.worker ...` as its own process; returns once it polls the task queue."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.worker",
        "--temporal-address",
        temporal_address,
        "--task-queue",
        task_queue,
        "--kubeconfig",
        str(kubeconfig),
        "--slack-token",
        "xoxb-test",
        "--slack-base-url",
        slack.base_url,
        "--slack-channel",
        CHANNEL,
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        "--graceful-shutdown-seconds",
        "2",
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    seen: list[str] = []
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        if not line:
            raise AssertionError("worker exited before it was ready:\n" + "".join(seen))
        seen.append(line.decode())
        if READY_LINE in seen[-1]:
            asyncio.get_running_loop().create_task(_drain(proc))
            return proc


async def _drain(proc: asyncio.subprocess.Process) -> None:
    while await proc.stdout.readline():
        pass


@pytest.mark.scenario("service-outage")
async def test_sigkill_mid_sop_001_another_worker_finishes_exactly_once(
    temporal_dev, task_queue: str, simulator, kubeconfig: Path, kube_api: k8s.ApiClient, slack_standin: SlackStandIn
):
    client: Client = temporal_dev.client
    address = client.service_client.config.target_host
    failed = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in llm_deployments(kube_api)}
    inp = outage_input()

    first = await start_worker(address, task_queue, kubeconfig, slack_standin, free_port())
    handle = await client.start_workflow(
        ServiceOutage.run, inp, id=f"service-outage-crash-{inp.alert.fingerprint}", task_queue=task_queue
    )
    # Kill it the moment the operator restart lands: its activity's completion is still in flight.
    await wait_for_async(
        lambda: (OPERATOR_NS, OPERATOR) in restarts_by_deployment(simulator), "the operator restart", every=0.02
    )
    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert all(d["status"]["phase"] != "Ready" for d in llm_deployments(kube_api)), "killed too late to mean much"

    metrics_port = free_port()
    second = await start_worker(address, task_queue, kubeconfig, slack_standin, metrics_port)
    try:
        report = await asyncio.wait_for(handle.result(), timeout=90)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    finally:
        second.send_signal(signal.SIGTERM)  # graceful: the worker drains and exits 0
        exit_code = await asyncio.wait_for(second.wait(), timeout=30)
    await save_history(handle, "service_outage_worker_killed")

    assert_healed_with_each_remedy_once(simulator, kube_api, failed)
    assert "Resolved" in report
    assert exit_code == 0
    assert "temporal_" in metrics and "workflow" in metrics, "SDK metrics are served for Prometheus"
