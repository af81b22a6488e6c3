"""Temporal over TLS for the worker, the triggers and the CLI, each as its own process, through a real
TLS terminator (nginx with `ssl_verify_client on`, tests/helpers/fixtures_tls.py) in front of the dev
server: mTLS works end to end; a wrong server CA, a client certificate the terminator refuses and a
missing certificate file each stop the process at start with one line; an API key is sent and checked;
the triggers keep serving (503) while Temporal is merely unreachable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus

from standins.alertmanager import am_alert, am_payload
from tests.helpers.fixtures_tls import API_KEY, SERVER_NAME, Terminator
from tests.helpers.waiting import wait_for_async
from worker.worker import READY_LINE
from workflows.checks.models import MorningHealthCheckInput
from workflows.checks.workflows import MorningHealthCheck

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
RUNBOOKS = str(Path(sys.executable).parent / "runbooks")
TOKEN = "webhook-token-for-tls-tests"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any RUNBOOKS_* / TEMPORAL_* setting, and with no Temporal
    profile file but the (absent) one named here, so only what a test gives counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOKS_", "TEMPORAL_"))}
    return env | {
        "TEMPORAL_CONFIG_FILE": str(tmp_path / "no-temporal.toml"),
        "RUNBOOKS_WEBHOOK__BEARER_TOKEN": TOKEN,
        "PYTHONPATH": str(REPO),
        **extra,
    }


def config_file(tmp_path: Path, address: str, task_queue: str, **temporal: Any) -> Path:
    path = tmp_path / f"runbooks-{uuid.uuid4().hex[:6]}.yaml"
    section = {
        "address": address,
        "task_queue": task_queue,
        "incident_id_prefix": f"{task_queue}.",
        "rpc_timeout_seconds": 3,
    }
    section |= {k: str(v) if isinstance(v, Path) else v for k, v in temporal.items()}
    path.write_text(yaml.safe_dump({"temporal": section}))
    return path


def mtls(terminator: Terminator, **overrides: Any) -> dict[str, Any]:
    certs = terminator.certs
    return {
        "server_ca_file": certs.ca,
        "server_name": SERVER_NAME,
        "client_cert_file": certs.client_cert,
        "client_key_file": certs.client_key,
    } | overrides


async def run(*command: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, list(command), capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


async def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient() as http:

        async def ready() -> bool:
            assert proc.poll() is None, f"the triggers exited: {proc.communicate()[1]}"
            try:
                return (await http.get(url)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for_async(ready, f"{url} to answer 200", timeout=60)


async def test_worker_triggers_and_cli_work_through_the_terminator_with_mtls(
    tls_terminator: Terminator, dev_client: Client, kubeconfig: Path, task_queue: str, tmp_path: Path
):
    certs = tls_terminator.certs
    env = clean_env(tmp_path)
    # The worker from its flags (python -m worker.worker), checking the server by its DNS name.
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.worker",
        *("--temporal-address", tls_terminator.mtls, "--task-queue", task_queue),
        *("--temporal-tls-ca", str(certs.ca), "--temporal-server-name", SERVER_NAME),
        *("--temporal-tls-cert", str(certs.client_cert), "--temporal-tls-key", str(certs.client_key)),
        *("--kubeconfig", str(kubeconfig), "--metrics-bind", "", "--graceful-shutdown-seconds", "1"),
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    seen = []
    try:
        while not seen or READY_LINE not in seen[-1]:
            line = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
            assert line, "the worker exited before it was ready:\n" + "".join(seen)
            seen.append(line.decode())
        drain = asyncio.create_task(worker.stdout.read())
        # It runs a check end to end (every workflow and activity task of it came and went over mTLS),
        # polling through the terminator: its identity names its pid.
        report = await dev_client.execute_workflow(
            MorningHealthCheck.run,
            MorningHealthCheckInput(),
            id=f"{task_queue}-morning",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=90),
        )
        assert report.deployments, report
        pollers = await dev_client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=dev_client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        assert any(p.identity.endswith(f":{worker.pid}") for p in pollers.pollers), pollers

        # The triggers from the configuration file, incidents on a queue of their own (no worker runs them).
        incidents_queue = f"{task_queue}-incidents"
        config = config_file(tmp_path, tls_terminator.mtls, incidents_queue, **mtls(tls_terminator))
        port = free_port()
        triggers = subprocess.Popen(
            [RUNBOOKS, "triggers", "--config", str(config), "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz", triggers)
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/alertmanager",
                    json=am_payload(am_alert("LLMDServiceDown", namespace="production", service="mistral-7b")),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            assert answer.status_code == 200, answer.text
            (outcome,) = answer.json()["incidents"]
            incident = dev_client.get_workflow_handle(outcome["incident"])
            assert (await incident.describe()).status == WorkflowExecutionStatus.RUNNING
        finally:
            triggers.terminate()
            triggers.wait(timeout=30)

        # The CLI from the same file lists it.
        listed = await run(RUNBOOKS, "list", "--config", str(config), env=env)
        assert listed.returncode == 0, listed.stderr
        assert outcome["incident"] in listed.stdout
        await incident.terminate("test over")
    finally:
        if worker.returncode is None:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), timeout=30)
    await drain
    assert worker.returncode == 0


def _process(kind: str, config: Path, tmp_path: Path) -> list[str]:
    return {
        "worker": [RUNBOOKS, "worker", "--config", str(config), "--no-schedules", "--metrics-port", "0"],
        "triggers": [RUNBOOKS, "triggers", "--config", str(config), "--port", str(free_port())],
        "cli": [RUNBOOKS, "list", "--config", str(config)],
    }[kind] + (["--kubeconfig", str(tmp_path / "unused-kubeconfig")] if kind == "worker" else [])


@pytest.mark.parametrize("process", ["worker", "triggers", "cli"])
@pytest.mark.parametrize("fault", ["wrong-server-ca", "refused-client-certificate", "missing-certificate-file"])
async def test_a_tls_misconfiguration_stops_the_process_at_start_with_one_clear_line(
    tls_terminator: Terminator, task_queue: str, tmp_path: Path, process: str, fault: str
):
    certs = tls_terminator.certs
    missing = tmp_path / "certs" / "worker.pem"
    temporal, expected = {
        "wrong-server-ca": (
            mtls(tls_terminator, server_ca_file=certs.other_ca),
            f"the server's certificate is not signed by the CA in {certs.other_ca}",
        ),
        "refused-client-certificate": (
            mtls(tls_terminator, client_cert_file=certs.rogue_cert, client_key_file=certs.rogue_key),
            "the server refused the client certificate",
        ),
        "missing-certificate-file": (
            mtls(tls_terminator, client_cert_file=missing),
            f"cannot read the client certificate file {missing}: No such file or directory",
        ),
    }[fault]
    config = config_file(tmp_path, tls_terminator.mtls, task_queue, **temporal)
    done = await run(*_process(process, config, tmp_path), env=clean_env(tmp_path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and expected in lines[0], done.stderr
    if fault != "missing-certificate-file":  # the connection's failure names where it went
        assert f"cannot connect to Temporal at {tls_terminator.mtls} (mTLS)" in lines[0]


async def test_an_api_key_from_the_environment_is_sent_and_a_wrong_one_is_refused(
    tls_terminator: Terminator, task_queue: str, tmp_path: Path
):
    certs = tls_terminator.certs
    # Temporal's own variables alone, as for Temporal Cloud: no configuration file at all.
    env = clean_env(
        tmp_path,
        TEMPORAL_ADDRESS=tls_terminator.api_key,
        TEMPORAL_API_KEY=API_KEY,
        TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(certs.ca),
    )
    listed = await run(RUNBOOKS, "list", env=env)
    assert listed.returncode == 0, listed.stderr

    ours = config_file(tmp_path, tls_terminator.api_key, task_queue, server_ca_file=certs.ca)
    accepted = await run(
        RUNBOOKS, "list", "--config", str(ours), env=clean_env(tmp_path, RUNBOOKS_TEMPORAL__API_KEY=API_KEY)
    )
    assert accepted.returncode == 0, accepted.stderr

    key_file = tmp_path / "api-key"
    key_file.write_text("not-the-key\n")
    wrong = config_file(tmp_path, tls_terminator.api_key, task_queue, server_ca_file=certs.ca, api_key_file=key_file)
    refused = await run(RUNBOOKS, "list", "--config", str(wrong), env=clean_env(tmp_path))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"runbooks list: cannot connect to Temporal at {tls_terminator.api_key} (TLS + API key): "
        "the server refused the credentials (unauthenticated): check the API key or client certificate"
    )


async def test_the_triggers_serve_while_temporal_is_unreachable_and_readyz_says_why(
    tls_terminator: Terminator, task_queue: str, tmp_path: Path
):
    closed = f"127.0.0.1:{free_port()}"
    config = config_file(tmp_path, closed, task_queue, **mtls(tls_terminator))
    port = free_port()
    triggers = subprocess.Popen(
        [RUNBOOKS, "triggers", "--config", str(config), "--port", str(port)],
        env=clean_env(tmp_path),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def healthy() -> bool:
                assert triggers.poll() is None, f"the triggers exited: {triggers.communicate()[1]}"
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for_async(healthy, "the triggers to serve", timeout=60)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert f"cannot connect to Temporal at {closed} (mTLS): connection refused" in ready.text
            alert = await http.post(
                "/alertmanager",
                json=am_payload(am_alert("LLMDServiceDown", namespace="production", service="mistral-7b")),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert alert.status_code == 503 and alert.headers["Retry-After"], alert.text
    finally:
        triggers.terminate()
        _, stderr = triggers.communicate(timeout=30)
    assert (
        f"cannot connect to Temporal at {closed} (mTLS): connection refused (is Temporal running there?); serving anyway"
        in stderr
    )
