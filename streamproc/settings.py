"""Connection settings for every Kafka client streamproc makes, read from the environment.

One place turns `STREAMPROC_*` variables (SPEC §6) into aiokafka keyword arguments, so the
worker, the producer, the admin commands and the tests connect the same way. The variables are
checked when they are read: a misspelt protocol or mechanism, or SASL without credentials, is one
line naming the variable, not an aiokafka assertion deep inside the first connection.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from streamproc.errors import StreamprocError

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What aiokafka can do with a username and password (GSSAPI and OAUTHBEARER need more than that).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_last_read: KafkaSettings | None = None


def last_read() -> KafkaSettings | None:
    """The settings a command last read with `from_env`: `main()` probes them to explain a failed
    connection, since aiokafka only logs why its bootstrap failed."""
    return _last_read


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value.upper() not in allowed:
        raise StreamprocError(f"{name}={value} is not valid: use one of {', '.join(allowed)}")
    return value.upper()


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster: bootstrap servers plus optional SASL/TLS."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None

    @classmethod
    def from_env(cls, bootstrap_servers: str | None = None) -> KafkaSettings:
        """Settings from `STREAMPROC_*` variables; an explicit flag value wins over the variable.
        Raises `StreamprocError` naming the variable when they do not fit together."""
        env = os.environ
        protocol = _choice("STREAMPROC_SECURITY_PROTOCOL", env.get("STREAMPROC_SECURITY_PROTOCOL"), SECURITY_PROTOCOLS)
        settings = cls(
            bootstrap_servers=bootstrap_servers or env.get("STREAMPROC_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS,
            security_protocol=protocol or "PLAINTEXT",
            sasl_mechanism=_choice("STREAMPROC_SASL_MECHANISM", env.get("STREAMPROC_SASL_MECHANISM"), SASL_MECHANISMS),
            sasl_username=env.get("STREAMPROC_SASL_USERNAME") or None,
            sasl_password=env.get("STREAMPROC_SASL_PASSWORD") or None,
            ssl_cafile=env.get("STREAMPROC_SSL_CAFILE") or None,
        )
        settings._check_sasl()
        global _last_read
        _last_read = settings
        return settings

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def _check_sasl(self) -> None:
        protocol = f"STREAMPROC_SECURITY_PROTOCOL={self.security_protocol}"
        if not self.uses_sasl:
            if self.sasl_mechanism:
                raise StreamprocError(
                    f"STREAMPROC_SASL_MECHANISM is set but {protocol} sends no credentials: "
                    "use SASL_SSL or SASL_PLAINTEXT, or unset it"
                )
            return
        missing = [
            name
            for name, value in (
                ("STREAMPROC_SASL_MECHANISM", self.sasl_mechanism),
                ("STREAMPROC_SASL_USERNAME", self.sasl_username),
                ("STREAMPROC_SASL_PASSWORD", self.sasl_password),
            )
            if not value
        ]
        if missing:
            which = "which is" if len(missing) == 1 else "which are"
            raise StreamprocError(f"{protocol} needs {' and '.join(missing)}, {which} not set")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by AIOKafkaProducer, AIOKafkaConsumer and the admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.uses_tls:
            kwargs["ssl_context"] = self._ssl_context()
        return kwargs

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ssl_cafile)
        except OSError as exc:  # ssl.SSLError too: the file holds no PEM certificate
            reason = exc.strerror or str(exc)
            raise StreamprocError(
                f"cannot read the CA file {self.ssl_cafile} (STREAMPROC_SSL_CAFILE): {reason}"
            ) from exc
