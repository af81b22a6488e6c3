"""`runbooks dev` as its own process, as an SRE starts it: for the tests that drive the whole stack
(drills, schedules) through the `runbooks` command."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from standins.alertmanager import free_port

VENV_BIN = Path(sys.executable).parent
RUNBOOKS = str(VENV_BIN / "runbooks")


def dev_command(home: Path, temporal_port: int | None = None, *extra: str) -> list[str]:
    """`runbooks dev` on free ports (its own Temporal, UI, triggers, metrics), the simulator 30x fast;
    `extra`: more flags (`--clusters east,west`)."""
    return [
        RUNBOOKS,
        "dev",
        "--home",
        str(home),
        "--temporal-port",
        str(temporal_port or free_port()),
        "--ui-port",
        str(free_port()),
        "--triggers-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--time-scale",
        "30",
        *extra,
    ]


@contextlib.contextmanager
def running_dev(home: Path, *extra: str, clean_exit: bool = False, workers: int = 1) -> Iterator[str]:
    """Start `runbooks dev` in `home` (its output in home/dev.log; `extra`: more flags), wait for its
    `workers` workers, yield the Temporal address; stop it with SIGTERM after. `clean_exit`: fail
    unless it then exits 0."""
    port = free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    with open(home / "dev.log", "w") as log:
        proc = subprocess.Popen(dev_command(home, port, *extra), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90 * workers
        while (home / "dev.log").read_text().count("worker ready") < workers:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"runbooks dev did not come up:\n{(home / 'dev.log').read_text()}")
            time.sleep(0.3)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                code = proc.wait(timeout=30)
                if clean_exit:
                    assert code == 0, (home / "dev.log").read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()


def drill(home: Path, scenario: str, *extra: str) -> subprocess.CompletedProcess:
    """`runbooks drill SCENARIO --wait --auto-approve` against the stack of `home` (`extra`: more flags)."""
    return subprocess.run(
        [RUNBOOKS, "drill", scenario, "--home", str(home), "--wait", "--auto-approve", "--timeout", "240", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def cluster(home: Path) -> client.ApiClient:
    """The stack's simulated cluster, through the kubeconfig `runbooks dev` wrote."""
    return config.new_client_from_config(config_file=str(home / "simulator.kubeconfig"))
