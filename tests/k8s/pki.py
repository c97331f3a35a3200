"""The test cluster's certificates: its own CAs, and the certificates and keys they sign, as files.

Made fresh for each cluster so that nothing outside the test (no kubeadm, no cert-manager) is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamproc.localbroker.certs import ca_certificate


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


class Pki:
    """The cluster's certificates, all ECDSA P-256, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

    def ca(self, name: str, common_name: str) -> tuple[CertPair, ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = ca_certificate(key, subject, self._now, self._now + datetime.timedelta(days=2))
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, pair.key)
        return pair, key, cert

    def issue(
        self,
        name: str,
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
        common_name: str,
        *,
        organization: str | None = None,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        directory: Path | None = None,
        file_names: tuple[str, str] | None = None,
    ) -> CertPair:
        ca_key, ca_cert = ca
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now)
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        target = directory or self.dir
        target.mkdir(parents=True, exist_ok=True)
        cert_name, key_name = file_names or (f"{name}.crt", f"{name}.key")
        pair = CertPair(target / cert_name, target / key_name)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, pair.key)
        return pair

    def key_pair(self, name: str) -> tuple[Path, Path]:
        """A bare key pair, `<name>.key` and `<name>.pub` (the service accounts' token signing key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        private, public = self.dir / f"{name}.key", self.dir / f"{name}.pub"
        write_key(key, private)
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return private, public
