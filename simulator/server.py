"""Runs the simulated cluster: the store, its behaviour ticking in the background, and the
Kubernetes API served by uvicorn on loopback, with a kubeconfig that points at it."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
import yaml

from simulator.api import AuditEntry, KubeApi
from simulator.store import Conflict, Store
from simulator.tls import self_signed_certificate

log = logging.getLogger(__name__)

CONTEXT = "simulated-llm-d"
TICK_SECONDS = 0.1  # the behaviour reconciles ~10 times a real second
# Namespaces the apiserver itself keeps, whatever the scenario seeds.
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class SimulatedCluster:
    """A started simulator.

    `api_url` (HTTPS, what the kubeconfig names) and `url` (plain HTTP on loopback) serve the
    same app: kubectl needs TLS to send its token; Prometheus and the model services' health
    URLs use `url`. Both require the bearer token for the Kubernetes API.
    """

    def __init__(
        self,
        *,
        scenario: str = "baseline",
        port: int = 0,
        time_scale: float = 1.0,
        kubeconfig_path: str | Path | None = None,
        token: str | None = None,
        behaviour_factory: Callable[..., Any] | None = None,
    ):
        self.scenario, self.port, self.time_scale = scenario, port, time_scale
        self.token = token or secrets.token_urlsafe(24)
        self._workdir = Path(tempfile.mkdtemp(prefix="llmd-sim-"))
        self.kubeconfig_path = Path(kubeconfig_path) if kubeconfig_path else (self._workdir / "kubeconfig")
        self.store = Store()
        self.url = self.api_url = ""
        self.behaviour: Any = None
        self.api: KubeApi | None = None
        self._behaviour_factory = behaviour_factory
        self._servers: list[uvicorn.Server] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> SimulatedCluster:
        from simulator.cluster import ClusterBehaviour

        factory = self._behaviour_factory or ClusterBehaviour
        api_socket, plain_socket = _listen(self.port), _listen(0)
        self.port = api_socket.getsockname()[1]
        self.api_url = f"https://127.0.0.1:{self.port}"
        self.url = f"http://127.0.0.1:{plain_socket.getsockname()[1]}"
        self.behaviour = factory(self.store, time_scale=self.time_scale, base_url=self.url)
        self.behaviour.seed(self.scenario)
        ensure_system_namespaces(self.store)
        self.api = KubeApi(self.store, self.behaviour, self.token)
        certificate = self_signed_certificate(self._workdir / "tls")
        self._serve(api_socket, ssl_certfile=str(certificate.cert_path), ssl_keyfile=str(certificate.key_path))
        self._serve(plain_socket)
        self._spawn("simulator-ticker", self._tick_forever)
        self._wait_until_serving()
        write_kubeconfig(self.kubeconfig_path, self.api_url, self.token, certificate.cert_pem)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.api is not None:
            self.api.stopping.set()
        for server in self._servers:
            server.should_exit = server.force_exit = True  # open keep-alives must not delay
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        shutil.rmtree(self._workdir / "tls", ignore_errors=True)

    def inject(self, fault: str) -> None:
        self.behaviour.inject(fault)

    def audit(self) -> list[AuditEntry]:
        return self.api.audit() if self.api else []

    def __enter__(self) -> SimulatedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, sock: socket.socket, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        assert self.api is not None, "start() makes the API before it serves"
        config = uvicorn.Config(
            self.api.app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            access_log=False,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        server = uvicorn.Server(config)
        self._servers.append(server)
        self._spawn("simulator-api", lambda: server.run(sockets=[sock]))

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick_forever(self) -> None:
        last_error = ""
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.behaviour.tick()
                last_error = ""
            except Exception as exc:  # keep the cluster alive; say it once per distinct failure
                if repr(exc) != last_error:
                    log.exception("simulated cluster tick failed")
                    last_error = repr(exc)

    def _wait_until_serving(self) -> None:
        for _ in range(400):
            if all(server.started for server in self._servers):
                return
            if not all(thread.is_alive() for thread in self._threads):
                break
            self._stop.wait(0.025)
        self.stop()
        raise RuntimeError(f"the simulator's API server did not start on {self.api_url}")


def _listen(port: int) -> socket.socket:
    # proto given explicitly: asyncio sets TCP_NODELAY on accepted sockets only for
    # IPPROTO_TCP ones, and without it every response waits ~40 ms on a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def ensure_system_namespaces(store: Store) -> None:
    for name in _SYSTEM_NAMESPACES:
        if store.get("namespaces", None, name) is None:
            try:
                store.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                        "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Active"},
                    }
                )
            except Conflict:
                pass


def write_kubeconfig(path: Path, url: str, token: str, ca_pem: bytes) -> Path:
    """A kubeconfig whose current context is the simulator, as bearer-token user."""
    cluster = {"server": url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": f"{CONTEXT}-admin", "user": {"token": token}}],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": f"{CONTEXT}-admin", "namespace": "default"}}
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_private_file(path, yaml.safe_dump(config, sort_keys=False))
    return path


def _replace_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600: it holds a token) so that a reader sees the old file or the
    whole new one, never a half-written one: a temporary file in the same folder, then os.replace."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_kubeconfig(path: str | Path) -> tuple[str, str, ssl.SSLContext | bool]:
    """(server URL, bearer token, TLS verification) of the kubeconfig's current context."""
    config = yaml.safe_load(Path(path).read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    verify: ssl.SSLContext | bool = True
    if cluster.get("certificate-authority-data"):
        verify = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    return cluster["server"], user.get("token", ""), verify


def inject_into(kubeconfig_path: str | Path, fault: str) -> dict:
    """Inject `fault` into the running simulator the kubeconfig points at.

    Raises ValueError with the simulator's message (e.g. the known fault names) if it refuses.
    """
    url, token, verify = read_kubeconfig(kubeconfig_path)
    response = httpx.post(
        f"{url}/admin/inject",
        json={"fault": fault},
        verify=verify,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if response.status_code != 200:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ValueError(f"the simulator refused fault {fault!r}: {message}")
    return response.json()


def stage_scenario_at(
    url: str, token: str, document: str | bytes, *, source: str = "<scenario>", verify: ssl.SSLContext | bool = True
) -> dict:
    """Stage a scenario file (its YAML text; simulator/scenario_files.py) on the running simulator at
    `url` with its admin `token`: {"name", "created", "patched", "deleted"}.

    Raises ValueError with the simulator's message (the file, each entry and what is wrong) if it
    refuses; then nothing of the file was applied.
    """
    body = document.encode() if isinstance(document, str) else document
    response = httpx.post(
        f"{url.rstrip('/')}/admin/scenario",
        params={"source": source},
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
        verify=verify,
        timeout=30,
    )
    if response.status_code != 200:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ValueError(f"the simulator refused scenario file {source}: {message}")
    return response.json()


def stage_file_into(kubeconfig_path: str | Path, path: str | Path) -> dict:
    """`stage_scenario_at` for the scenario file at `path`, on the simulator the kubeconfig points at
    (as `inject_into` does for a named fault); OSError if the file cannot be read."""
    url, token, verify = read_kubeconfig(kubeconfig_path)
    return stage_scenario_at(url, token, Path(path).read_bytes(), source=str(path), verify=verify)


def serve(
    scenario: str, port: int, kubeconfig_path: str | Path | None, time_scale: float, token: str | None = None
) -> None:
    """Run the simulator until SIGINT/SIGTERM (for `runbooks simulator`)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster = SimulatedCluster(
        scenario=scenario, port=port, time_scale=time_scale, kubeconfig_path=kubeconfig_path, token=token
    ).start()
    print(
        f"simulated llm-d cluster ({scenario}): API {cluster.api_url}, "
        f"health and /metrics {cluster.url}; kubeconfig: {cluster.kubeconfig_path}",
        flush=True,
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)
