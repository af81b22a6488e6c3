"""The Temporal connection settings (settings/temporal.py): what the file, RUNBOOKS_* variables,
Temporal's own TEMPORAL_* variables and profile file each give, which wins, the secrets the file may
not hold, and the files read before any connection (tests/test_temporal_tls.py connects for real)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from temporalio.service import TLSConfig

from cli.dev import DevStack
from settings import ConfigError, Settings, load_settings, worker_settings
from settings.temporal import TemporalConnection, connect_arguments
from worker.worker import add_arguments, settings_from_args

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "client.pem", "key": tmp_path / "client.key"}
    paths["ca"].write_text(PEM.replace("MIIB", "CAAA"))
    paths["cert"].write_text(PEM)
    paths["key"].write_text(KEY)
    return paths


def load(tmp_path: Path, temporal: dict | None = None, **environ: str) -> Settings:
    path = tmp_path / "runbooks.yaml"
    path.write_text(yaml.safe_dump({"temporal": temporal} if temporal is not None else {}))
    # No Temporal profile file but one a test writes: the machine's own ~/.config/temporalio is not read.
    return load_settings(path, environ={"TEMPORAL_CONFIG_FILE": str(tmp_path / "none.toml")} | environ)


def test_plaintext_unless_something_asks_for_tls(tmp_path: Path):
    temporal = load(tmp_path).temporal
    assert connect_arguments(temporal) == {
        "target_host": "localhost:7233",
        "namespace": "default",
        "tls": False,
        "api_key": None,
        "rpc_metadata": {},
    }
    assert connect_arguments(load(tmp_path, {"tls": True}).temporal)["tls"] == TLSConfig()  # the system's CAs


def test_mtls_from_the_file_reads_each_file(tmp_path: Path, files: dict[str, Path]):
    temporal = load(
        tmp_path,
        {
            "address": "temporal.internal:7233",
            "server_ca_file": str(files["ca"]),
            "server_name": "temporal.internal",
            "client_cert_file": str(files["cert"]),
            "client_key_file": str(files["key"]),
        },
    ).temporal
    arguments = connect_arguments(temporal)
    assert arguments["tls"] == TLSConfig(
        server_root_ca_cert=files["ca"].read_bytes(),
        domain="temporal.internal",
        client_cert=files["cert"].read_bytes(),
        client_private_key=files["key"].read_bytes(),
    )
    assert temporal.describe_tls() == "mTLS"


def test_an_api_key_comes_from_the_environment_or_a_file_and_turns_tls_on(tmp_path: Path):
    from_env = load(tmp_path, {"address": "x.tmprl.cloud:7233"}, RUNBOOKS_TEMPORAL__API_KEY="secret-1").temporal
    assert connect_arguments(from_env)["api_key"] == "secret-1"
    assert connect_arguments(from_env)["tls"] == TLSConfig()
    assert "secret-1" not in repr(from_env)

    key_file = tmp_path / "api-key"
    key_file.write_text("secret-2\n")
    from_file = load(tmp_path, {"api_key_file": str(key_file)}).temporal
    assert connect_arguments(from_file)["api_key"] == "secret-2"  # the file's newline is not part of it


@pytest.mark.parametrize("secret", ["api_key", "client_key_pem"])
def test_a_secret_written_in_the_file_is_refused_and_the_error_says_where_it_goes(tmp_path: Path, secret: str):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, {secret: KEY})
    message = str(refused.value)
    assert f"temporal.{secret}" in message and "do not belong in the configuration file" in message
    assert ("RUNBOOKS_TEMPORAL__API_KEY" if secret == "api_key" else "client_key_file") in message


def test_a_missing_unreadable_or_non_pem_file_is_named_with_the_reason_before_connecting(tmp_path: Path, files):
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigError, match=f"cannot read the server CA file {missing}: No such file or directory"):
        connect_arguments(TemporalConnection(server_ca_file=missing))
    with pytest.raises(ConfigError, match=f"cannot read the client key file {tmp_path}: Is a directory"):
        connect_arguments(TemporalConnection(client_cert_file=files["cert"], client_key_file=tmp_path))
    with pytest.raises(ConfigError, match=rf"the client certificate file {files['key']} holds no PEM certificate"):
        connect_arguments(TemporalConnection(client_cert_file=files["key"], client_key_file=files["key"]))
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=f"the API key file {empty} is empty"):
        connect_arguments(TemporalConnection(api_key_file=empty))


@pytest.mark.parametrize(
    ("temporal", "reason"),
    [
        ({"client_cert_file": "/c.pem"}, "mTLS needs both a client certificate"),
        ({"client_key_file": "/c.key"}, "mTLS needs both a client certificate"),
        ({"tls": False, "server_ca_file": "/ca.pem"}, "tls is false but server_ca_file set"),
        ({"server_ca_file": "/ca.pem", "server_ca_pem": PEM}, "the server CA is given twice"),
    ],
)
def test_contradictions_are_refused_at_load(tmp_path: Path, temporal: dict, reason: str):
    with pytest.raises(ConfigError, match=reason):
        load(tmp_path, temporal)


def test_temporals_own_variables_fill_what_the_configuration_leaves_unset(tmp_path: Path, files):
    environ = {
        "TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233",
        "TEMPORAL_NAMESPACE": "ns.acct",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(files["cert"]),
        "TEMPORAL_TLS_CLIENT_KEY_DATA": KEY,
        "TEMPORAL_GRPC_META_X_TEAM": "sre",
    }
    alone = load(tmp_path, **environ).temporal
    assert (alone.address, alone.namespace) == ("ns.acct.tmprl.cloud:7233", "ns.acct")
    tls = connect_arguments(alone)["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key) == (files["cert"].read_bytes(), KEY.encode())
    assert connect_arguments(alone)["rpc_metadata"] == {"x-team": "sre"}

    # Ours win: the file over TEMPORAL_*, RUNBOOKS_* over the file; a key given as a file replaces theirs as PEM.
    ours = load(
        tmp_path,
        {"address": "file:7233", "namespace": "from-file", "client_key_file": str(files["key"])},
        RUNBOOKS_TEMPORAL__ADDRESS="env:7233",
        **environ,
    ).temporal
    assert (ours.address, ours.namespace) == ("env:7233", "from-file")
    assert (ours.client_key_file, ours.client_key_pem) == (files["key"], None)


def test_a_temporal_profile_file_is_read_and_tls_false_of_ours_drops_its_tls(tmp_path: Path, files):
    profiles = tmp_path / "temporal.toml"
    profiles.write_text(
        f"""
[profile.default]
address = "default:7233"

[profile.cloud]
address = "ns.acct.tmprl.cloud:7233"
namespace = "ns.acct"
api_key = "profile-key"
[profile.cloud.tls]
server_name = "ns.acct.tmprl.cloud"
server_ca_cert_path = "{files["ca"]}"
"""
    )
    environ = {"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "cloud"}
    cloud = load_settings(None, environ=environ).temporal
    arguments = connect_arguments(cloud)
    assert (arguments["target_host"], arguments["namespace"], arguments["api_key"]) == (
        "ns.acct.tmprl.cloud:7233",
        "ns.acct",
        "profile-key",
    )
    assert arguments["tls"] == TLSConfig(server_root_ca_cert=files["ca"].read_bytes(), domain="ns.acct.tmprl.cloud")

    path = tmp_path / "runbooks.yaml"
    path.write_text(yaml.safe_dump({"temporal": {"tls": False}}))
    plain = load_settings(path, environ=environ).temporal
    assert connect_arguments(plain)["tls"] is False and plain.server_name is None

    with pytest.raises(ConfigError, match="profile nope"):
        load_settings(None, environ=environ | {"TEMPORAL_PROFILE": "nope"})


def test_the_worker_gets_the_connection_from_the_configuration_and_from_its_flags(tmp_path: Path, files):
    configured = load(
        tmp_path,
        {"client_cert_file": str(files["cert"]), "client_key_file": str(files["key"])},
        RUNBOOKS_TEMPORAL__API_KEY="k",
    )
    assert (
        worker_settings(configured).temporal.model_dump()
        == TemporalConnection.model_validate(
            configured.temporal.model_dump(include=set(TemporalConnection.model_fields))
        ).model_dump()
    )

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = parser.parse_args(
        [
            *("--temporal-address", "t:7233", "--temporal-tls-ca", str(files["ca"])),
            *("--temporal-tls-cert", str(files["cert"]), "--temporal-tls-key", str(files["key"])),
            *("--temporal-server-name", "t.internal"),
        ]
    )
    worker = settings_from_args(flags, {"RUNBOOKS_TEMPORAL__API_KEY": "k2", "TEMPORAL_NAMESPACE": "from-env"}).temporal
    assert (worker.address, worker.namespace, worker.server_name) == ("t:7233", "from-env", "t.internal")
    assert connect_arguments(worker)["api_key"] == "k2"
    assert settings_from_args(parser.parse_args([]), {}).temporal.address == "127.0.0.1:7233"
    with pytest.raises(ConfigError, match="mTLS needs both"):
        settings_from_args(parser.parse_args(["--temporal-tls-cert", str(files["cert"])]), {})


def test_runbooks_dev_talks_plain_to_its_own_server_whatever_the_configuration_says(tmp_path: Path, files):
    configured = load(tmp_path, {"client_cert_file": str(files["cert"]), "client_key_file": str(files["key"])})
    dev = DevStack(settings=configured, home=tmp_path)._settings_for("127.0.0.1:7233", "http://127.0.0.1:8233")
    assert connect_arguments(dev.temporal) | {"namespace": None} == {
        "target_host": "127.0.0.1:7233",
        "namespace": None,
        "tls": False,
        "api_key": None,
        "rpc_metadata": {},
    }
