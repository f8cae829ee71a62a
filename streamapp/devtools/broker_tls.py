"""A throwaway CA and broker certificate for the local broker's SASL_SSL listener.

Development and tests only: the CA's key sits unprotected next to it. The CA is made once per
broker folder and kept, so a client's `kafka_ca_file` stays valid across broker restarts; the
broker certificate is signed again on every start, for the host it listens on then.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names every broker certificate holds besides the listener's host.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class BrokerTls:
    """The files a SASL_SSL listener needs, and the CA its clients trust."""

    ca_file: Path
    #: The broker certificate followed by the CA, PEM (Kafka's ssl.keystore.certificate.chain).
    chain: str
    #: The broker's private key, unencrypted PKCS#8 PEM (Kafka's ssl.keystore.key).
    key: str


def ensure_tls(folder: Path, host: str) -> BrokerTls:
    """The CA in `folder` (made on first use) and a fresh broker certificate for `host` and loopback."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ensure_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _broker_certificate(key, ca_key, ca_cert, {host, *LOOPBACK_NAMES})
    chain = _pem(cert) + _pem(ca_cert)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    _write_private(folder / "broker.key", key_pem)
    (folder / "broker.pem").write_text(chain, encoding="utf-8")
    return BrokerTls(folder / "ca.pem", chain, key_pem)


def _ensure_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_file, cert_file = folder / "ca.key", folder / "ca.pem"
    if key_file.is_file() and cert_file.is_file():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamapp local broker CA (throwaway)")])
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(key_file, pem.decode())
    cert_file.write_text(_pem(cert), encoding="utf-8")
    return key, cert


def _broker_certificate(
    key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, hosts: Iterable[str]
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    return (
        _builder(subject, ca.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in sorted(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _write_private(path: Path, text: str) -> None:
    """A key file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
