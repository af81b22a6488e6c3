"""How every process reaches Temporal: address, namespace, TLS, mTLS, API key, and the one connect.

`TemporalConnection` is the connection part of the `temporal:` section (settings.sections.TemporalSettings
adds the rest) and of the worker's `WorkerSettings.temporal`. `connect_temporal` is the one place that
turns it into `Client.connect` arguments and connects: the worker, the triggers, the CLI and `runbooks dev`
all use it.

TLS is on when `tls: true`, when any of server_ca_*, server_name, client_cert_*, client_key_* is set, or
when there is an API key (Temporal Cloud requires TLS with one); `tls: false` turns it off (an API key is
then sent in clear: only behind a trusted proxy). No CA given: the system's trusted roots (Temporal Cloud).

Secrets never come from the YAML file (settings/load.py refuses them there): the API key comes from
RUNBOOKS_TEMPORAL__API_KEY, TEMPORAL_API_KEY, a Temporal profile, or `api_key_file`; a client key from
`client_key_file`, RUNBOOKS_TEMPORAL__CLIENT_KEY_PEM or TEMPORAL_TLS_CLIENT_KEY_DATA/_PATH.

Precedence, field by field (a certificate, a key, the CA and the API key each count as one, whether
given as a file or as PEM): command-line flags, then RUNBOOKS_TEMPORAL__* variables, then the YAML
file, then Temporal's own configuration (`temporalio.envconfig`: the profile TEMPORAL_PROFILE, default
"default", of the TOML file TEMPORAL_CONFIG_FILE, default ~/.config/temporalio/temporal.toml, with
TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_SERVER_NAME,
TEMPORAL_TLS_{SERVER_CA_CERT,CLIENT_CERT,CLIENT_KEY}_{PATH,DATA} and TEMPORAL_GRPC_META_* on top of it),
then the defaults. Ours setting `tls: false` drops TLS material that Temporal's configuration brings.

Files are read when a process connects (at its start; after rotating a certificate, restart it). A file
that is missing, unreadable or not PEM is a ConfigError naming the path and the reason, before any
connection is tried; a failed connection is a `TemporalConnectError` with one line saying what failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import TLSConfig

from settings.errors import ConfigError

# Each piece of TLS material: (our file field, our PEM field), the TLSConfig argument it feeds.
_MATERIAL = {
    "server CA": ("server_ca_file", "server_ca_pem"),
    "client certificate": ("client_cert_file", "client_cert_pem"),
    "client key": ("client_key_file", "client_key_pem"),
}
# Secrets that settings/load.py refuses in the YAML file, and where they go instead.
FILE_FORBIDDEN = {
    "api_key": "set RUNBOOKS_TEMPORAL__API_KEY (or TEMPORAL_API_KEY) in the environment, "
    "or temporal.api_key_file to a file holding it (e.g. a mounted Secret)",
    "client_key_pem": "set temporal.client_key_file to the key's file (e.g. a mounted Secret), "
    "or RUNBOOKS_TEMPORAL__CLIENT_KEY_PEM in the environment",
}


class TemporalConnectError(ConfigError):
    """Connecting to Temporal failed; the message is one line naming the address and what failed.
    `unreachable`: nothing answered (a later try may work), as opposed to a TLS or credentials refusal."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class TemporalConnection(BaseModel):
    """Where and how to connect. Paths are read at connect time; PEM fields hold the text itself."""

    model_config = ConfigDict(extra="forbid")

    address: str = "localhost:7233"
    namespace: str = Field(default="default", description="Temporal Cloud: name.account")
    tls: bool | None = Field(default=None, description="None: on when TLS material or an API key is set")
    server_ca_file: Path | None = Field(default=None, description="CA that signed the server's certificate")
    server_ca_pem: str | None = None
    server_name: str | None = Field(default=None, description="the name the server's certificate must carry (SNI)")
    client_cert_file: Path | None = Field(default=None, description="mTLS: our certificate (chain), PEM")
    client_cert_pem: str | None = None
    client_key_file: Path | None = Field(default=None, description="mTLS: its private key, PEM")
    client_key_pem: SecretStr | None = None
    api_key: SecretStr | None = Field(default=None, description="environment or profile only, never the file")
    api_key_file: Path | None = None
    rpc_metadata: dict[str, str] = Field(default_factory=dict, description="gRPC headers sent with every call")

    @model_validator(mode="after")
    def _consistent(self) -> TemporalConnection:
        for what, (file, pem) in _MATERIAL.items():
            if getattr(self, file) is not None and getattr(self, pem) is not None:
                raise ValueError(f"the {what} is given twice: set {file} or {pem}, not both")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("the API key is given twice: set api_key (environment) or api_key_file, not both")
        if self._has("client certificate") != self._has("client key"):
            raise ValueError("mTLS needs both a client certificate (client_cert_file) and its key (client_key_file)")
        if self.tls is False and (self._tls_material()):
            raise ValueError(f"tls is false but {', '.join(self._tls_material())} set: remove them or the tls: false")
        return self

    def _has(self, what: str) -> bool:
        return any(getattr(self, f) is not None for f in _MATERIAL[what])

    def _tls_material(self) -> list[str]:
        fields = [f for pair in _MATERIAL.values() for f in pair] + ["server_name"]
        return [f for f in fields if getattr(self, f) is not None]

    @property
    def tls_enabled(self) -> bool:
        if self.tls is not None:
            return self.tls
        return bool(self._tls_material()) or self.api_key is not None or self.api_key_file is not None

    def plaintext(self, address: str) -> Self:
        """The same settings aimed at a plain local server (`runbooks dev`'s): no TLS, no credentials."""
        cleared: dict[str, Any] = {f: None for f in _all_material()}
        cleared |= {"tls": None, "server_name": None, "api_key": None, "api_key_file": None, "rpc_metadata": {}}
        return self.model_copy(update={"address": address, **cleared})

    def describe_tls(self) -> str:
        """For messages: "plaintext", "TLS", "mTLS", with "+ API key"."""
        kind = ("mTLS" if self._has("client certificate") else "TLS") if self.tls_enabled else "plaintext"
        return kind + (" + API key" if self.api_key is not None or self.api_key_file is not None else "")


def with_temporal_profile(section: Any, environ: Mapping[str, str]) -> Any:
    """The `temporal:` section as the file and RUNBOOKS_* variables give it (a mapping), with what
    Temporal's own configuration (envconfig; see the module docstring) says filling what it leaves unset.
    Raises ConfigError when that configuration cannot be read (a bad TOML file, an unknown profile)."""
    if not isinstance(section, Mapping):
        return section  # not a mapping: validation says so
    try:
        profile = ClientConfigProfile.load(override_env_vars=dict(environ))
    except Exception as err:  # noqa: BLE001 - the SDK's bridge raises its own ConfigError type
        where = environ.get("TEMPORAL_CONFIG_FILE") or "~/.config/temporalio/temporal.toml"
        raise ConfigError(
            f"Temporal's client configuration ({where}, profile {environ.get('TEMPORAL_PROFILE') or 'default'}): {err}"
        ) from None
    theirs: dict[str, Any] = {}
    if profile.address:
        theirs["address"] = profile.address
    if profile.namespace:
        theirs["namespace"] = profile.namespace
    if profile.api_key:
        theirs["api_key"] = profile.api_key
    if profile.grpc_meta:
        theirs["rpc_metadata"] = dict(profile.grpc_meta)
    tls = profile.tls
    if tls is not None:
        if tls.disabled is not None:
            theirs["tls"] = not tls.disabled
        if tls.server_name:
            theirs["server_name"] = tls.server_name
        for source, (file, pem) in zip(
            (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key), _MATERIAL.values(), strict=True
        ):
            if isinstance(source, Path):
                theirs[file] = source
            elif source is not None:
                theirs[pem] = source.decode() if isinstance(source, bytes) else source
    ours = dict(section)
    if ours.get("tls") in (False, "false", "False", "0"):
        theirs = {k: v for k, v in theirs.items() if k not in ("tls", "server_name", *_all_material())}
    merged = dict(ours)
    for key, value in theirs.items():
        group = _group_of(key)
        if not any(ours.get(k) is not None for k in group):
            merged[key] = value
    return merged


def _all_material() -> list[str]:
    return [f for pair in _MATERIAL.values() for f in pair]


def _group_of(key: str) -> tuple[str, ...]:
    """The fields that say the same thing as `key` (a file and its PEM; the API key and its file)."""
    for pair in _MATERIAL.values():
        if key in pair:
            return pair
    return ("api_key", "api_key_file") if key in ("api_key", "api_key_file") else (key,)


# What each piece must hold: a certificate, or a private key of any kind (PKCS#8, EC, RSA).
_PEM = {
    "CERTIFICATE": re.compile(rb"-----BEGIN CERTIFICATE-----"),
    "PRIVATE KEY": re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as err:
        raise ConfigError(f"temporal: cannot read the {what} {path}: {err.strerror or err}") from None


def connect_arguments(conn: TemporalConnection) -> dict[str, Any]:
    """`Client.connect` keyword arguments (target_host, namespace, tls, api_key, rpc_metadata), every
    file read now; raises ConfigError naming the path and the reason for a file that cannot be used."""
    material: dict[str, bytes | None] = {}
    for what, (file, pem) in _MATERIAL.items():
        path, text = getattr(conn, file), getattr(conn, pem)
        kind = "PRIVATE KEY" if what == "client key" else "CERTIFICATE"
        if path is not None:
            data, where = _read(path, f"{what} file"), f"the {what} file {path}"
        elif text is not None:
            data, where = (text.get_secret_value() if isinstance(text, SecretStr) else text).encode(), pem
        else:
            material[what] = None
            continue
        if not _PEM[kind].search(data):  # e.g. a key and a certificate swapped, or DER instead of PEM
            raise ConfigError(f"temporal: {where} holds no PEM {kind.lower()} (no '-----BEGIN {kind}-----' line)")
        material[what] = data
    api_key = conn.api_key.get_secret_value() if conn.api_key else None
    if conn.api_key_file is not None:
        api_key = _read(conn.api_key_file, "API key file").decode().strip()
        if not api_key:
            raise ConfigError(f"temporal: the API key file {conn.api_key_file} is empty")
    tls: bool | TLSConfig = False
    if conn.tls_enabled:
        tls = TLSConfig(
            server_root_ca_cert=material["server CA"],
            domain=conn.server_name,
            client_cert=material["client certificate"],
            client_private_key=material["client key"],
        )
    return {
        "target_host": conn.address,
        "namespace": conn.namespace,
        "tls": tls,
        "api_key": api_key,
        "rpc_metadata": dict(conn.rpc_metadata),
    }


async def connect_temporal(conn: TemporalConnection, **extra: Any) -> Client:
    """A connected client with the pydantic data converter; `extra` (runtime, identity, lazy, ...) goes
    to `Client.connect` as is. Raises ConfigError (files) or TemporalConnectError (one line)."""
    arguments = connect_arguments(conn) | {"data_converter": pydantic_data_converter} | extra
    try:
        return await Client.connect(**arguments)
    except RuntimeError as err:  # the SDK's connection failure: a long Rust debug dump
        reason, unreachable = explain(str(err), conn)
        raise TemporalConnectError(
            f"cannot connect to Temporal at {conn.address} ({conn.describe_tls()}): {reason}", unreachable=unreachable
        ) from None


def explain(message: str, conn: TemporalConnection) -> tuple[str, bool]:
    """One line for the SDK's connection failure, and whether it means "nothing answered" (True) rather
    than a refusal a retry cannot mend (TLS, certificates, credentials: False)."""
    ca = f"the CA in {conn.server_ca_file}" if conn.server_ca_file else "the configured CA"
    if conn.server_ca_file is None and conn.server_ca_pem is None:
        ca = "the system's trusted CAs (set temporal.server_ca_file for a private CA)"
    name = re.search(r'expected: DnsName\("([^"]+)"\)', message) or re.search(r"expected: (\S+?),", message)
    if "NotValidForName" in message:
        presented = ", ".join(re.findall(r'(?:DnsName|IpAddress)\(\\?"?([^"\\)]+)', message.split("presented")[-1]))
        wanted = name.group(1) if name else conn.server_name or conn.address
        return (
            f"TLS handshake failed: the server's certificate is not valid for {wanted}"
            + (f" (it names {presented}); set temporal.server_name to one of those" if presented else ""),
            False,
        )
    certificate = re.search(r"InvalidCertificate\((\w+)", message)
    if certificate:
        why = {
            "UnknownIssuer": f"is not signed by {ca}",
            "BadSignature": f"is not signed by {ca}",
            "Expired": "has expired",
            "NotValidYet": "is not valid yet",
            "Revoked": "is revoked",
        }.get(certificate.group(1), f"was rejected ({certificate.group(1)})")
        return f"TLS handshake failed: the server's certificate {why}", False
    if "KeyMismatch" in message or "InconsistentKeys" in message:
        return "the client certificate and the client key do not belong together", False
    alert = re.search(r"AlertReceived\((\w+)\)|received fatal alert: (\w+)", message)
    if alert:
        return (
            f"the server refused the TLS handshake ({alert.group(1) or alert.group(2)}): it wants a client "
            "certificate it trusts (temporal.client_cert_file / client_key_file)",
            False,
        )
    status = re.search(r"status: (\d{3}) ([A-Za-z ]+?)\"", message)
    http = (status.group(1), status.group(2)) if status else None
    if http and http[0] == "400" and conn.tls_enabled:
        return (
            "the server refused the client certificate (HTTP 400 Bad Request from its TLS terminator: "
            + (
                "the certificate is not signed by a CA it trusts)"
                if conn.client_cert_file or conn.client_cert_pem
                else "it wants a client certificate; set temporal.client_cert_file and client_key_file)"
            ),
            False,
        )
    if (http and http[0] == "401") or "code: Unauthenticated" in message:
        return "the server refused the credentials (unauthenticated): check the API key or client certificate", False
    if (http and http[0] == "403") or "code: PermissionDenied" in message:
        return f"permission denied: the credentials have no access to namespace {conn.namespace}", False
    if "InvalidContentType" in message or "InvalidMessage" in message or "CorruptMessage" in message:
        return "the server does not speak TLS (a plaintext Temporal? then leave TLS off)", False
    if not conn.tls_enabled and ("GoAway" in message or "http2 error" in message or "broken pipe" in message):
        return "the server did not answer plain gRPC (does it want TLS? set temporal.tls or a server CA)", False
    if "ConnectionRefused" in message or "Connection refused" in message:
        return "connection refused (is Temporal running there?)", True
    if "dns error" in message:
        return "the host name does not resolve", True
    if "timed out" in message.lower() or "deadline" in message.lower():
        return "timed out", True
    return message.replace("\n", " ")[:300], True
