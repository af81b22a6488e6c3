"""Several worker processes on one machine: the supervisor behind `runbooks worker --processes N`.

One Python worker runs its workflow tasks on one core; a machine with more cores runs more worker
processes. The supervisor starts N children, each a whole worker process (the same command the
caller would run for one, see `ChildProcess`) polling the same task queue: Temporal spreads workflow
and activity tasks over their pollers, and a workflow task or activity a child loses when it dies is
retried on another (activities after their timeouts). On Kubernetes, replicas of the worker
Deployment do the same across pods.

What the supervisor does, and only that:
- starts the children in order and prints each one's pid and metrics endpoint;
- SIGTERM or SIGINT: forwards the signal to every child, each finishes its in-flight activities
  (graceful shutdown as a single worker does), and returns 0 when every child stopped cleanly;
- a child that exits without being asked to (crash, OOM kill, SIGKILL, even exit 0) is reported
  (pid, exit code) and restarted after a backoff (1 s, doubling to 10 s); one that died more than
  `RestartPolicy.max_restarts` times within `window_seconds` makes the supervisor stop the others
  and return 1, so systemd, Docker or Kubernetes restarts the whole thing.

It imports nothing of the worker itself, so it stays small; the children do the work.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# How a child that was asked to stop may end: exit 0 (graceful shutdown), or killed by the very
# signal it was sent before it had set up its handlers (still starting: nothing was in flight);
# 130/143 are the shells' and Python's spelling of the same.
_STOPPED_BY_REQUEST = {0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGINT, 128 + signal.SIGTERM}
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ChildProcess:
    """One worker process to keep running: its command line, and its metrics endpoint (host:port,
    None: off) for the start line."""

    command: list[str]
    metrics_bind: str | None = None
    note: str = ""  # said on its start line, e.g. "applies the schedules"


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child that died, and when to give up (seconds)."""

    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 10.0
    max_restarts: int = 5  # a child restarted this often within window_seconds dying again: give up
    window_seconds: float = 60.0

    def backoff(self, recent_restarts: int) -> float:
        return min(self.max_backoff_seconds, self.first_backoff_seconds * 2**recent_restarts)


def child_metrics_ports(base_port: int | None, processes: int) -> list[int | None]:
    """Child i's metrics port: base_port + i (None or 0: metrics off for every child).

    Raises ValueError when the last port would pass 65535."""
    if not base_port:
        return [None] * processes
    if base_port + processes - 1 > 65535:
        raise ValueError(
            f"metrics ports {base_port}..{base_port + processes - 1} pass 65535: choose a lower metrics port"
        )
    return [base_port + i for i in range(processes)]


def describe_exit(code: int) -> str:
    """'code 3', or 'code -9 (SIGKILL)' for a child a signal ended."""
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"code {code}"


@dataclass
class _Slot:
    index: int
    spec: ChildProcess
    proc: subprocess.Popen | None = None
    restart_at: float | None = None  # monotonic time of a pending restart
    restarts: list[float] = field(default_factory=list)  # monotonic times of recent restarts


class Supervisor:
    """Keeps `children` running until SIGTERM/SIGINT; `run()` returns the exit code (0 or 1).

    `say`/`warn`: where its own lines go (stdout and stderr by default); the children inherit the
    supervisor's stdout and stderr, so their logs and console messages appear as a single worker's do.
    """

    def __init__(
        self,
        children: Sequence[ChildProcess],
        *,
        policy: RestartPolicy = RestartPolicy(),
        say: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if not children:
            raise ValueError("a supervisor needs at least one child process")
        self._slots = [_Slot(i, spec) for i, spec in enumerate(children)]
        self._policy = policy
        self._say = say or (lambda line: print(f"runbooks worker: {line}", flush=True))
        self._warn = warn or (lambda line: print(f"runbooks worker: {line}", file=sys.stderr, flush=True))
        self._signal: int | None = None  # the first SIGTERM/SIGINT received
        self._wake = threading.Event()

    def run(self) -> int:
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._signal is None:
            self._signal = signum
        self._wake.set()

    def _supervise(self) -> int:
        for slot in self._slots:
            if self._signal is not None:
                break
            self._start(slot)
        gave_up = False
        while self._signal is None and not gave_up:
            self._wake.wait(_POLL_SECONDS)
            now = time.monotonic()
            for slot in self._slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    gave_up = not self._child_died(slot, now) or gave_up
                if not gave_up and slot.restart_at is not None and now >= slot.restart_at and self._signal is None:
                    self._start(slot)
        if gave_up:
            self._stop_all(signal.SIGTERM, "giving up")
            return 1
        signum = self._signal or signal.SIGTERM
        return 0 if self._stop_all(signum, signal.Signals(signum).name) else 1

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.proc = subprocess.Popen(slot.spec.command, stdin=subprocess.DEVNULL)
        metrics = f"metrics {slot.spec.metrics_bind}" if slot.spec.metrics_bind else "metrics off"
        note = f", {slot.spec.note}" if slot.spec.note else ""
        again = " again" if slot.restarts else ""
        self._say(f"worker {slot.index} of {len(self._slots)} started{again}: pid {slot.proc.pid}, {metrics}{note}")

    def _child_died(self, slot: _Slot, now: float) -> bool:
        """Report a child that exited unasked and schedule its restart; False: it died too often."""
        assert slot.proc is not None
        pid, code = slot.proc.pid, slot.proc.returncode
        slot.proc = None
        policy = self._policy
        slot.restarts = [t for t in slot.restarts if now - t < policy.window_seconds]
        if len(slot.restarts) >= policy.max_restarts:
            self._warn(
                f"worker {slot.index} (pid {pid}) exited with {describe_exit(code)}; it was restarted "
                f"{len(slot.restarts)} times within {policy.window_seconds:g} s: stopping the other worker "
                "processes and exiting 1 (let the service manager restart the whole)"
            )
            return False
        delay = policy.backoff(len(slot.restarts))
        slot.restarts.append(now + delay)
        slot.restart_at = now + delay
        self._warn(
            f"worker {slot.index} (pid {pid}) exited unexpectedly with {describe_exit(code)}; "
            f"restarting it in {delay:g} s"
        )
        return True

    def _stop_all(self, signum: int, why: str) -> bool:
        """Send `signum` to every running child and wait for all; True when each stopped cleanly."""
        running = [slot for slot in self._slots if slot.proc is not None and slot.proc.poll() is None]
        self._say(f"{why}: stopping {len(running)} worker process(es) (each finishes its in-flight activities)")
        for slot in running:
            if slot.proc is None:
                continue
            try:
                slot.proc.send_signal(signum)
            except ProcessLookupError:  # exited between poll() and here; its code is read below
                pass
        clean = True
        for slot in self._slots:
            if slot.proc is None:
                continue
            # A repeated Ctrl-C lands here as a second signal: the children got the first already
            # and are finishing their activities, so the wait goes on (as a single worker's does).
            while slot.proc.poll() is None:
                self._wake.clear()
                self._wake.wait(_POLL_SECONDS)
            code = slot.proc.returncode
            if code not in _STOPPED_BY_REQUEST:
                clean = False
                self._warn(f"worker {slot.index} (pid {slot.proc.pid}) stopped with {describe_exit(code)}")
        if clean:
            self._say(f"all {len(self._slots)} worker processes stopped")
        return clean


def supervise(children: Sequence[ChildProcess], *, policy: RestartPolicy = RestartPolicy()) -> int:
    """Run `children` under a `Supervisor` until SIGTERM/SIGINT; the exit code (0: all stopped cleanly)."""
    return Supervisor(children, policy=policy).run()
