"""`runbooks worker --processes N`: N whole workers on one task queue under a
small supervisor (worker/processes.py) that forwards SIGTERM, restarts a child that dies and gives up
on one that keeps dying.

The end-to-end tests run the `runbooks` command as an SRE does, against the real dev server, with a
throwaway kubeconfig (Triage without a namespace never calls the cluster) and no Slack token (messages
go to the console, i.e. the supervisor's output). Schedules get an incident-id prefix of the test's
own, so the schedules child 0 applies never meet another test's."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.slack import CONSOLE_MARK
from worker.processes import ChildProcess, RestartPolicy, Supervisor
from settings import DEFAULT_CLUSTER
from worker.schedule_specs import CHECK_IDS
from worker.worker import READY_LINE
from workflows.incident.models import Alert, EscalationStep, IncidentInput

REPO = Path(__file__).resolve().parents[1]
RUNBOOKS = str(Path(sys.executable).parent / "runbooks")
_READY = re.compile(re.escape(READY_LINE) + r" task_queue=\S+ pid=(\d+)")
_STARTED = re.compile(r"worker (\d+) of (\d+) started(?: again)?: pid (\d+), (metrics [^\s,]+|metrics off)")


def throwaway_kubeconfig(folder: Path) -> Path:
    """The worker builds a Kubernetes client at start; nothing here calls it."""
    path = folder / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        "clusters: [{name: t, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: t, user: {token: unused}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: t}}]\n"
    )
    return path


def consecutive_free_ports(count: int) -> int:
    """A port P with P..P+count-1 free right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no run of free ports")


class Supervised:
    """`runbooks worker ARGS` as a process; its output (the children's too) collected line by line."""

    def __init__(self, args: list[str], prefix: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RUNBOOKS_"))}
        env["RUNBOOKS_TEMPORAL__INCIDENT_ID_PREFIX"] = prefix
        self.proc = subprocess.Popen(
            [RUNBOOKS, "worker", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: re.Pattern[str] | str, *, count: int = 1, timeout: float = 90) -> list[re.Match]:
        """The first `count` lines matching `pattern` (fails if the supervisor exits first)."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in map(pattern.search, list(self.lines)) if m]
            if len(found) >= count:
                return found[:count]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {pattern.pattern!r} (exit {self.proc.poll()}):\n{self.output()}")
            await asyncio.sleep(0.2)

    async def ready_pids(self, count: int) -> list[int]:
        return [int(m.group(1)) for m in await self.wait_for(_READY, count=count)]

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the supervisor's exit code."""
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the supervisor did not stop within {timeout} s:\n{self.output()}")
            await asyncio.sleep(0.2)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def poller_pids(client: Client, queue: str) -> dict[str, set[int]]:
    """The worker pids polling `queue`, per task type, from the identities Temporal records."""
    found = {}
    for name, kind in (
        ("workflow", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        ("activity", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ):
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind)
        )
        found[name] = {
            int(p.identity.rsplit(":", 1)[1]) for p in response.pollers if p.identity.startswith("llm-runbooks-worker@")
        }
    return found


async def wait_polled_by(client: Client, queue: str, pids: set[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        polling = await poller_pids(client, queue)
        if all(pids <= seen for seen in polling.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pollers of {queue}: {polling}, want {pids} in each")
        await asyncio.sleep(0.5)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def default_schedule(prefix: str, check: str) -> str:
    """The default cluster's schedule of `check` (worker/schedule_specs.py schedule_id)."""
    return f"{prefix}{check}.{DEFAULT_CLUSTER}"


async def schedules_present(client: Client, prefix: str) -> set[str]:
    present = set()
    for check in CHECK_IDS:
        try:
            await client.get_schedule_handle(default_schedule(prefix, check)).describe()
            present.add(check)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
    return present


def triage_input(run: str) -> IncidentInput:
    return IncidentInput(
        alert=Alert(
            alertname="WorkerScaleOutCheck",
            fingerprint=run,
            starts_at=datetime.now(UTC),
            labels={"alertname": "WorkerScaleOutCheck"},
            annotations={"summary": "two worker processes"},
        ),
        runbook="triage",
        severity="P2",
        escalation=[EscalationStep(after_minutes=60, notify="Senior SRE", level=1)],
    )


@pytest.mark.integration
async def test_two_processes_poll_one_queue_run_an_incident_and_stop_on_sigterm(temporal_dev, task_queue, tmp_path):
    client: Client = temporal_dev.client
    address = client.service_client.config.target_host
    base = consecutive_free_ports(2)
    workers = Supervised(
        [
            "--processes",
            "2",
            "--temporal",
            address,
            "--task-queue",
            task_queue,
            "--kubeconfig",
            str(throwaway_kubeconfig(tmp_path)),
            "--metrics-port",
            str(base),
        ],
        prefix=f"{task_queue}-",
    )
    handle = None
    try:
        started = await workers.wait_for(_STARTED, count=2)
        assert [(m.group(1), m.group(2), m.group(4)) for m in started] == [
            ("0", "2", f"metrics 127.0.0.1:{base}"),
            ("1", "2", f"metrics 127.0.0.1:{base + 1}"),
        ]
        children = {int(m.group(3)) for m in started}
        assert set(await workers.ready_pids(2)) == children, "each child is a whole worker, ready on its own"
        await wait_polled_by(client, task_queue, children)  # two identities on the one queue
        async with httpx.AsyncClient() as http:
            for port in (base, base + 1):
                assert "temporal_" in (await http.get(f"http://127.0.0.1:{port}/metrics")).text

        run = uuid.uuid4().hex[:12]
        handle = await client.start_workflow("Triage", triage_input(run), id=f"scale-out-{run}", task_queue=task_queue)
        await workers.wait_for(re.escape(CONSOLE_MARK) + rf" .*{handle.id}", timeout=60)  # its first message

        assert await workers.stop() == 0, workers.output()
        assert all(gone(pid) for pid in children), "every child exited with the supervisor"
        assert "all 2 worker processes stopped" in workers.output()
    finally:
        workers.kill()
        if handle is not None:
            await handle.terminate("test over")


@pytest.mark.integration
async def test_a_killed_child_is_restarted_and_only_child_0_applies_the_schedules(temporal_dev, task_queue, tmp_path):
    client: Client = temporal_dev.client
    address = client.service_client.config.target_host
    prefix = f"{task_queue}-"
    workers = Supervised(
        [
            "--processes",
            "2",
            "--temporal",
            address,
            "--task-queue",
            task_queue,
            "--kubeconfig",
            str(throwaway_kubeconfig(tmp_path)),
            "--metrics-port",
            "0",
        ],
        prefix=prefix,
    )
    try:
        started = await workers.wait_for(_STARTED, count=2)
        assert [m.group(4) for m in started] == ["metrics off", "metrics off"], "metrics off: off for all"
        first, second = (int(m.group(3)) for m in started)
        await workers.ready_pids(2)
        assert await schedules_present(client, prefix) == set(CHECK_IDS), "child 0 applied the schedules"
        for check in CHECK_IDS:  # gone again: a child 1 that applied them would bring them back
            await client.get_schedule_handle(default_schedule(prefix, check)).delete()

        os.kill(second, signal.SIGKILL)
        await workers.wait_for(rf"worker 1 \(pid {second}\) exited unexpectedly with code -9 \(SIGKILL\); restarting")
        (again,) = await workers.wait_for(r"worker 1 of 2 started again: pid (\d+)")
        replacement = int(again.group(1))
        assert replacement not in (first, second)
        assert replacement in await workers.ready_pids(3)
        await wait_polled_by(client, task_queue, {first, replacement})  # a new identity on the queue
        assert await schedules_present(client, prefix) == set(), "only child 0 applies the schedules"

        assert await workers.stop() == 0, workers.output()
        assert gone(first) and gone(replacement)
    finally:
        workers.kill()


@pytest.mark.parametrize("how", [["--processes", "0"], ["--processes", "-2"], ["env"]])
def test_no_processes_is_a_clear_error_and_starts_nothing(how: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOKS_")}
    args = ["--temporal", "127.0.0.1:9"]  # nothing listens: a worker that started would fail differently
    if how == ["env"]:
        env["RUNBOOKS_WORKER__PROCESSES"] = "0"
    else:
        args += how
    done = subprocess.run([RUNBOOKS, "worker", *args], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    expected = "worker.processes" if how == ["env"] else "argument --processes: must be 1 or more"
    assert expected in done.stderr
    assert "started" not in done.stdout + done.stderr and READY_LINE not in done.stdout


# -- the supervisor alone, with small stand-in children (no Temporal) ------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_keeps_dying_stops_the_others_and_the_supervisor_exits_1() -> None:
    said: list[str] = []
    policy = RestartPolicy(first_backoff_seconds=0.05, max_backoff_seconds=0.1, max_restarts=3, window_seconds=60)
    supervisor = Supervisor(
        [ChildProcess(_python("import time; time.sleep(120)")), ChildProcess(_python("import sys; sys.exit(3)"))],
        policy=policy,
        say=said.append,
        warn=said.append,
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < 60, "gave up well before the sleeping child would end"
    restarts = [
        line for line in said if re.match(r"worker 1 \(pid \d+\) exited unexpectedly with code 3; restarting", line)
    ]
    assert len(restarts) == 3, said
    assert any(
        "restarted 3 times within 60 s: stopping the other worker processes and exiting 1" in line for line in said
    )
    assert any(line.startswith("giving up: stopping 1 worker process") for line in said), said


@pytest.mark.parametrize("code_on_sigterm, exit_code", [(0, 0), (4, 1)])
def test_sigterm_is_forwarded_and_the_exit_code_says_whether_all_stopped_cleanly(
    tmp_path: Path, code_on_sigterm: int, exit_code: int
) -> None:
    child = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: sys.exit({code_on_sigterm}))\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(120)\n"
    )
    marks = [tmp_path / f"up-{i}" for i in range(2)]
    said: list[str] = []
    supervisor = Supervisor(
        [ChildProcess([*_python(child), str(mark)]) for mark in marks], say=said.append, warn=said.append
    )

    def terminate_when_up() -> None:  # as systemd would, once both children handle SIGTERM
        deadline = time.monotonic() + 30
        while not all(mark.exists() for mark in marks) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_up, daemon=True).start()
    started = time.monotonic()
    assert supervisor.run() == exit_code, said
    assert time.monotonic() - started < 60, "the children were told, not waited out"
    assert all(mark.exists() for mark in marks)
    assert "SIGTERM: stopping 2 worker process(es) (each finishes its in-flight activities)" in said
    if exit_code:
        assert (
            sum(bool(re.match(rf"worker \d \(pid \d+\) stopped with code {code_on_sigterm}$", line)) for line in said)
            == 2
        )
    else:
        assert said[-1] == "all 2 worker processes stopped"
