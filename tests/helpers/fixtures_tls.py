"""Temporal behind a real TLS terminator: Debian's nginx in front of the dev server, with certificates
made here (the `cryptography` package).

`tls_certs`: a CA, a server certificate it signed (for 127.0.0.1 and SERVER_NAME), a client certificate
it signed, and a "rogue" client certificate signed by another CA (also given, as a wrong server CA).
`tls_terminator`: one unprivileged nginx (its own prefix, config and pid in a temporary folder, logs on
stderr) with two gRPC listeners on free ports, both passing to the session's dev server:
  mtls     TLS, client certificate required and checked against the CA (`ssl_verify_client on`)
  api_key  TLS, only requests that carry `authorization: Bearer API_KEY` (what Temporal's api_key sends)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from standins.throwaway_ca import authority, leaf, write_pem

SERVER_NAME = "temporal.test"  # a DNS name in the server certificate besides 127.0.0.1
API_KEY = "test-api-key-0123456789"


@dataclass(frozen=True)
class Certs:
    ca: Path
    other_ca: Path  # signed neither the server's nor our client certificate
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by other_ca: the terminator refuses it
    rogue_key: Path


@dataclass(frozen=True)
class Terminator:
    mtls: str  # host:port
    api_key: str  # host:port
    certs: Certs


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    ours, other = authority("llm-runbooks test CA"), authority("some other CA")
    ca, _ = write_pem(folder, "ca", *ours)
    other_ca, _ = write_pem(folder, "other-ca", *other)
    server = write_pem(folder, "server", *leaf(ours, SERVER_NAME, server=True, dns_names=(SERVER_NAME,)))
    client = write_pem(folder, "client", *leaf(ours, "llm-runbooks-worker", server=False))
    rogue = write_pem(folder, "rogue", *leaf(other, "llm-runbooks-worker", server=False))
    return Certs(ca, other_ca, *server, *client, *rogue)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nginx_conf(prefix: Path, certs: Certs, upstream: str, mtls: int, api_key: int) -> str:
    tls = f"ssl_certificate {certs.server_cert}; ssl_certificate_key {certs.server_key};"
    temp = " ".join(
        f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # One process as whoever runs the tests (no master forking workers as `nobody`, who could not read
    # this folder): SIGTERM stops it.
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  {temp}
  server {{
    listen 127.0.0.1:{mtls} ssl http2;
    {tls}
    ssl_client_certificate {certs.ca};
    ssl_verify_client on;
    location / {{ grpc_pass grpc://{upstream}; }}
  }}
  server {{
    listen 127.0.0.1:{api_key} ssl http2;
    {tls}
    location / {{
      if ($http_authorization != "Bearer {API_KEY}") {{ return 401; }}
      grpc_pass grpc://{upstream};
    }}
  }}
}}
"""


@pytest.fixture(scope="session")
def tls_terminator(temporal_dev, tls_certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminator]:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx-light)")
    prefix = tmp_path_factory.mktemp("nginx")
    upstream = temporal_dev.client.service_client.config.target_host
    mtls, api_key = _free_port(), _free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, tls_certs, upstream, mtls, api_key))
    log = open(prefix / "stderr.log", "wb")
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        for port in (mtls, api_key):
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"nginx exited ({proc.returncode}): {(prefix / 'stderr.log').read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"nginx did not listen on {port}") from None
                    time.sleep(0.05)
        yield Terminator(f"127.0.0.1:{mtls}", f"127.0.0.1:{api_key}", tls_certs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
