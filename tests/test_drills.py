"""`runbooks drill` against a fresh `runbooks dev`, exactly as an SRE rehearses: separate processes,
the alert through the triggers' webhook, gates answered by --auto-approve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config

VENV_BIN = Path(sys.executable).parent
RUNBOOKS = str(VENV_BIN / "runbooks")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("dev-home")
    log = open(home / "dev.log", "w")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    cmd = [RUNBOOKS, "dev", "--home", str(home), "--temporal-port", str(_free_port()),
           "--ui-port", str(_free_port()), "--triggers-port", str(_free_port()), "--metrics-port", str(_free_port()),
           "--time-scale", "30"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while "worker ready" not in (home / "dev.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"runbooks dev did not come up:\n{(home / 'dev.log').read_text()}")
        time.sleep(0.3)
    yield home
    proc.terminate()
    try:
        assert proc.wait(timeout=30) == 0, (home / "dev.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def drill(home: Path, scenario: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RUNBOOKS, "drill", scenario, "--home", str(home), "--wait", "--auto-approve", "--timeout", "240"],
        capture_output=True, text=True, timeout=300,
    )


def cluster(home: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(home / "simulator.kubeconfig"))


def not_ready(home: Path) -> list[str]:
    items = client.CustomObjectsApi(cluster(home)).list_cluster_custom_object(
        "inference.llm-d.io", "v1alpha1", "llmdeployments")["items"]
    return [i["metadata"]["name"] for i in items if i.get("status", {}).get("phase") != "Ready"]


def test_dev_stack_announces_where_everything_is(dev_stack):
    out = (dev_stack / "dev.log").read_text()
    for what in ("Temporal ", "Temporal Web UI", "simulated llm-d cluster", "Alertmanager hook", "kubeconfig"):
        assert what in out


# Order matters only in that the one fault automation cannot fix goes last.
@pytest.mark.parametrize("scenario", [
    "service-outage",
    "high-memory",
    "gpu-unavailable",
    "model-deploy-failure:oom",
])
def test_drill_heals(dev_stack, scenario):
    done = drill(dev_stack, scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: resolved" in done.stdout
    assert "# Incident report" in done.stdout
    assert "| Before | After |" in done.stdout  # the actions table with the replaced values
    assert not_ready(dev_stack) == []


def test_drill_of_a_cause_automation_cannot_fix_ends_in_escalation(dev_stack):
    done = drill(dev_stack, "model-deploy-failure:image-pull")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "waiting for a human" in done.stdout
    assert "image" in done.stdout.lower()  # the diagnosis travels with the escalation
    assert not_ready(dev_stack) == ["mixtral-8x7b"]  # nothing pretended to fix it


def test_unknown_drill_is_refused_and_stages_nothing(dev_stack):
    done = subprocess.run([RUNBOOKS, "drill", "no-such-fault", "--home", str(dev_stack)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no drill for 'no-such-fault'" in done.stderr
