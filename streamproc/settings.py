"""Settings read from the environment: every `STREAMPROC_*` variable (SPEC §6), checked once.

`Settings` (pydantic-settings) reads the variables, and a `.env` file in the current directory
for those the environment does not set (a real variable wins over the file). Each value is
checked when it is read: a bad one is one line naming the variable and what is allowed
(`StreamprocError`), not a traceback from the first place that uses it.

`KafkaSettings` turns the connection part into aiokafka keyword arguments, so the worker, the
producer, the admin commands and the tests connect the same way. A misspelt protocol or
mechanism, or SASL without credentials, is one line naming the variable, not an aiokafka
assertion deep inside the first connection.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Annotated, Any

from dotenv import dotenv_values
from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamproc.errors import StreamprocError

ENV_PREFIX = "STREAMPROC_"
ENV_FILE = ".env"
DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What aiokafka can do with a username and password (GSSAPI and OAUTHBEARER need more than that).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_last_read: KafkaSettings | None = None


def last_read() -> KafkaSettings | None:
    """The settings a command last read with `from_env`: `main()` probes them to explain a failed
    connection, since aiokafka only logs why its bootstrap failed."""
    return _last_read


def _one_of(allowed: tuple[str, ...], upper: bool) -> BeforeValidator:
    def check(value: object) -> str | None:
        if value is None:  # an optional variable left unset
            return None
        text = str(value).strip()
        text = text.upper() if upper else text.lower()
        if text not in allowed:
            raise ValueError(f"use one of {', '.join(allowed)}")
        return text

    return BeforeValidator(check)


def _whole_number(low: int, high: int | None = None, what: str = "a whole number") -> BeforeValidator:
    wanted = f"{what} from {low} to {high}" if high is not None else f"{what}, at least {low}"

    def check(value: object) -> int:
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError(f"use {wanted}") from None
        if number < low or (high is not None and number > high):
            raise ValueError(f"use {wanted}")
        return number

    return BeforeValidator(check)


def _servers(value: object) -> str:
    text = str(value).strip()
    for server in text.split(","):
        host, colon, port = server.strip().rpartition(":")
        if not server.strip() or (colon and host.count(":") == 0 and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError("use HOST:PORT, several separated by commas (e.g. localhost:9092)")
    return text


def _not_blank(value: object) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("use a non-empty name")
    return text


Port = Annotated[int, _whole_number(0, 65535, "a port number")]


class Settings(BaseSettings):
    """Every `STREAMPROC_*` variable, from the environment over `.env`; an empty value counts as unset."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=ENV_FILE, env_ignore_empty=True, extra="ignore", frozen=True
    )

    bootstrap_servers: Annotated[str, BeforeValidator(_servers)] = DEFAULT_BOOTSTRAP_SERVERS
    security_protocol: Annotated[str, _one_of(SECURITY_PROTOCOLS, upper=True)] = "PLAINTEXT"
    sasl_mechanism: Annotated[str | None, _one_of(SASL_MECHANISMS, upper=True)] = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None  # read when TLS is used; an unreadable file is reported then
    topics_file: str | None = None
    group: Annotated[str, BeforeValidator(_not_blank)] = "streamproc"
    concurrency: Annotated[int, _whole_number(1)] = 64
    sync_threads: Annotated[int, _whole_number(1)] = 16
    metrics_port: Port = 9400
    log_format: Annotated[str, _one_of(LOG_FORMATS, upper=False)] = "json"
    log_level: Annotated[str, _one_of(LOG_LEVELS, upper=False)] = "info"
    home: str = "~/.cache/streamproc"
    broker_port: Annotated[int, _whole_number(1, 65534, "a port number")] = 9092  # the controller takes port + 1
    web_url: str | None = None  # `streamproc web`, where producers look task statuses up (SPEC §12)
    web_token: str | None = None  # what `streamproc web` asks of cancel and replay (SPEC §14); unset: read-only

    @classmethod
    def read(cls) -> Settings:
        """The settings now, or `StreamprocError`: `VARIABLE=value is not valid: what is allowed`."""
        try:
            return cls()
        except ValidationError as exc:
            raise StreamprocError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = ENV_PREFIX + str(error["loc"][0]).upper() if error["loc"] else ENV_PREFIX
        reason = str(error["ctx"]["error"]) if error["type"] == "value_error" and "ctx" in error else error["msg"]
        problems.append(f"{name}={error['input']} is not valid: {reason}")
    return "; ".join(problems)


def load_env_file() -> None:
    """Copy the `STREAMPROC_*` lines of `./.env` into `os.environ` where the environment does not
    set them, so that everything reading the environment (flags with a variable, the topics file,
    the local broker) sees the file too. The command line calls it first."""
    if not os.path.isfile(ENV_FILE):
        return
    for name, value in dotenv_values(ENV_FILE).items():
        if name.upper().startswith(ENV_PREFIX) and value is not None and name not in os.environ:
            os.environ[name] = value


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
        """Settings from `STREAMPROC_*` variables (and `.env`); an explicit flag value wins over
        the variable. Raises `StreamprocError` naming the variable when one is not valid or they
        do not fit together."""
        env = Settings.read()
        settings = cls(
            bootstrap_servers=bootstrap_servers or env.bootstrap_servers,
            security_protocol=env.security_protocol,
            sasl_mechanism=env.sasl_mechanism,
            sasl_username=env.sasl_username,
            sasl_password=env.sasl_password,
            ssl_cafile=env.ssl_cafile,
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
