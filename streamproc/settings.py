"""Connection settings for every Kafka client streamproc makes, read from the environment.

One place turns `STREAMPROC_*` variables (SPEC §6) into aiokafka keyword arguments, so the
worker, the producer, the admin commands and the tests connect the same way.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"


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
        """Settings from `STREAMPROC_*` variables; an explicit flag value wins over the variable."""
        env = os.environ
        return cls(
            bootstrap_servers=bootstrap_servers or env.get("STREAMPROC_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS,
            security_protocol=env.get("STREAMPROC_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=env.get("STREAMPROC_SASL_MECHANISM"),
            sasl_username=env.get("STREAMPROC_SASL_USERNAME"),
            sasl_password=env.get("STREAMPROC_SASL_PASSWORD"),
            ssl_cafile=env.get("STREAMPROC_SSL_CAFILE"),
        )

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
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return kwargs
