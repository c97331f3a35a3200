"""A throwaway CA and a server certificate for the local broker's SASL_SSL listener.

Clients verify the broker against `ca.pem` (STREAMPROC_SSL_CAFILE), so TLS is checked for real,
hostname included, without touching the machine's trust store. The CA's key is not kept: nothing
can sign another certificate with it. Kafka reads `server.pem` as a PEM key store (an
unencrypted PKCS#8 key followed by the certificate chain) and `ca.pem` as a PEM trust store.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=1)


@dataclass(frozen=True)
class BrokerCertificates:
    ca_file: Path
    keystore_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _still_valid(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE


def ca_certificate(
    key: ec.EllipticCurvePrivateKey, name: x509.Name, start: datetime.datetime, end: datetime.datetime
) -> x509.Certificate:
    """A self-signed CA certificate that signs end-entity certificates only (path length 0)."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def ensure_certificates(directory: Path, label: str) -> BrokerCertificates:
    """The CA and server certificate in `directory`, made anew if absent or about to expire."""
    certs = BrokerCertificates(directory / "ca.pem", directory / "server.pem")
    if _still_valid(certs.ca_file) and _still_valid(certs.keystore_file):
        return certs
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + VALIDITY  # a little slack for clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"streamproc local CA ({label})")
    ca_cert = ca_certificate(ca_key, ca_name, start, end)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain_pem = server_cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    certs.keystore_file.touch(mode=0o600)
    certs.keystore_file.write_bytes(key_pem + chain_pem)
    certs.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return certs
