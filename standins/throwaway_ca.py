"""A certificate authority made for one test run, and a server certificate it signed for 127.0.0.1.

Why: clients that insist on https (the official `pagerduty` client refuses any other base URL) can
talk to a local stand-in only over TLS, and a client that trusts exactly this CA (`ca_file`) checks
the stand-in's certificate as it would check the real service's. Keys are EC P-256, valid two days.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ServerCertificate:
    ca_file: Path  # PEM: what a client trusts
    cert_file: Path  # PEM: the server's certificate (SAN 127.0.0.1, localhost)
    key_file: Path  # PEM (PKCS#8), mode 0600

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this CA only (for httpx's `verify=`)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


Authority = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def authority(common_name: str) -> Authority:
    """A self-signed CA (key, certificate), valid two days."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def leaf(
    issuer: Authority, common_name: str, *, server: bool, dns_names: tuple[str, ...] = ("localhost",)
) -> Authority:
    """A certificate `issuer` signed: for a server (SAN `dns_names` and 127.0.0.1) or a client."""
    ca_key, ca_cert = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        names = [*map(x509.DNSName, dns_names), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_pem(folder: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    """`folder/name.pem` (the certificate) and `folder/name.key` (PKCS#8, mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def issue_server_certificate(folder: Path, common_name: str = "stand-in") -> ServerCertificate:
    """Write a fresh CA and a server certificate it signed into `folder`."""
    ca = authority(f"{common_name} throwaway CA")
    ca_file, _ = write_pem(folder, "ca", *ca)
    (folder / "ca.key").unlink()  # nobody signs with it again
    cert_file, key_file = write_pem(folder, "server", *leaf(ca, common_name, server=True))
    return ServerCertificate(ca_file, cert_file, key_file)
