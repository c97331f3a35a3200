"""Why a connection to Kafka failed, as one line that names what to fix.

aiokafka's bootstrap logs each server's real error (refused, TLS verification, SCRAM) and raises
only `KafkaConnectionError("Unable to bootstrap from …")`, so a wrong password looked like a
broker that is down. `explain` connects once more the way aiokafka does to get that error back,
and for an unsupported mechanism asks the broker which ones it enables (aiokafka drops that
list). Every command reports through it, the worker included.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, replace

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.admin import SaslHandShakeRequest
from aiokafka.protocol.metadata import MetadataRequest

from streamproc.settings import KafkaSettings

PROBE_TIMEOUT_S = 5.0
_UNREACHABLE_HINT = "run `streamproc broker start` or set STREAMPROC_BOOTSTRAP_SERVERS"


@dataclass(frozen=True)
class _Failure:
    error: BaseException
    host: str
    port: int
    offered: tuple[str, ...] = ()  # the mechanisms the listener enables, for an unsupported one


def explain(exc: BaseException, settings: KafkaSettings | None) -> str:
    """The message for an error a command ended with; `settings` are those it connected with."""
    if isinstance(exc, KafkaConnectionError) and settings is not None:
        failure = asyncio.run(_probe(settings))
        if failure is not None:
            return _describe(failure, settings)
        return f"cannot reach Kafka at {settings.bootstrap_servers} ({exc}): {_UNREACHABLE_HINT}"
    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach Kafka ({exc}): {_UNREACHABLE_HINT}"
    return str(exc)


async def _probe(settings: KafkaSettings) -> _Failure | None:
    """Connect to each bootstrap server and ask for metadata as aiokafka's bootstrap does: the
    first one's error, or None if one answers (the failure came later: the probe has nothing to add)."""
    kwargs = settings.client_kwargs()
    first: _Failure | None = None
    for host, port, _ in collect_hosts(kwargs.pop("bootstrap_servers"), randomize=False):
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                conn = await create_conn(host, port, request_timeout_ms=int(PROBE_TIMEOUT_S * 1000), **kwargs)
                try:  # a SASL listener takes an SSL client's connection, then drops its first request
                    await conn.send(MetadataRequest([]))
                finally:
                    conn.close()
        except (OSError, KafkaError, TimeoutError) as error:
            first = first or _Failure(error, host, port)
            continue
        return None
    if first is not None and isinstance(first.error, UnsupportedSaslMechanismError):
        return replace(first, offered=await _offered_mechanisms(settings, first.host, first.port))
    return first


async def _offered_mechanisms(settings: KafkaSettings, host: str, port: int) -> tuple[str, ...]:
    """The SASL mechanisms the listener enables, from a handshake without authenticating."""
    kwargs = settings.client_kwargs()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            conn = await create_conn(
                host,
                port,
                request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
                security_protocol="SSL" if settings.uses_tls else "PLAINTEXT",
                ssl_context=kwargs.get("ssl_context"),
            )
            try:
                response = await conn.send(SaslHandShakeRequest(settings.sasl_mechanism or "PLAIN"))
            finally:
                conn.close()
    except (OSError, KafkaError, TimeoutError):
        return ()
    return tuple(str(name) for name in response.enabled_mechanisms)


def _describe(failure: _Failure, settings: KafkaSettings) -> str:
    error, server = failure.error, f"{failure.host}:{failure.port}"
    protocol = f"STREAMPROC_SECURITY_PROTOCOL={settings.security_protocol}"
    if isinstance(error, SaslAuthenticationFailed):
        return (
            f"{settings.sasl_mechanism} authentication failed: {server} rejected user {settings.sasl_username!r} "
            "(check STREAMPROC_SASL_USERNAME and STREAMPROC_SASL_PASSWORD)"
        )
    if isinstance(error, UnsupportedSaslMechanismError):
        offered = f"it offers: {', '.join(failure.offered)}" if failure.offered else "it did not say which it offers"
        return (
            f"{server} does not enable SASL mechanism {settings.sasl_mechanism} (STREAMPROC_SASL_MECHANISM); {offered}"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        trusted = (
            f"against the CA file {settings.ssl_cafile} (STREAMPROC_SSL_CAFILE)"
            if settings.ssl_cafile
            else "against the system's CAs only: no CA file was given (STREAMPROC_SSL_CAFILE)"
        )
        return f"TLS verification of {server} failed ({error.verify_message}) {trusted}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake with {server} failed ({error.reason or error}): is it a TLS listener? ({protocol})"
    if isinstance(error, KafkaConnectionError | ConnectionResetError):  # it hung up on our handshake
        return f"{server} closed the connection while connecting: does {protocol} match its listener?"
    if isinstance(error, TimeoutError):
        reason = f"no answer within {PROBE_TIMEOUT_S:.0f}s"
    else:
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__
    return f"cannot reach Kafka at {server} ({reason}): {_UNREACHABLE_HINT}"
