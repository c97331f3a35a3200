"""Where a finished attempt goes, and the moment its offset may count as finished (SPEC §3, §5).

`route` returns only once the outcome is durable: a success at once; anything else once the
broker has acknowledged (`acks=all`, idempotent producer) its record on a delay tier or the DLQ.
Until then the worker keeps the offset unfinished, so a crash re-runs the task, never loses it.

- retryable failure of attempt n → the tier `RetryPolicy` picks, with `attempt` n+1 and
  `retry-at`; past `max_retries` → the DLQ, `retries_exhausted`;
- dead on arrival (poison record, `PermanentError`) → the DLQ with its reason;
- deferred (open circuit) → the first tier with the same `attempt`: no attempt is spent.

A record too large to copy (the original plus the failure headers exceed the tier's or DLQ's
`max.message.bytes`) goes to the DLQ with an empty value and `value-dropped: <size in bytes>`,
rather than blocking its partition. It keeps its reason; a retryable failure (or a deferral) whose
tier copy is too large can never be retried, so it is dead-lettered as `retries_exhausted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordTooLargeError,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
)

from streamproc.app import Task
from streamproc.envelope import Envelope, Headers, failure_headers, own_headers
from streamproc.execution import Outcome, Result
from streamproc.retry import RetryPolicy
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

log = structlog.get_logger("streamproc.task")

_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
# Idempotent producer states a broker blip can leave behind for good (KAFKA-NOTES "Producing").
_WEDGED = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)
REPORT_EVERY_S = 10.0
_MAX_RECORD_BYTES = 16 * 1_048_576  # the broker's topic limit decides; this only bounds the client


class Disposition(StrEnum):
    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    DEFERRED = "deferred"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class Routed:
    """Where an attempt went: `tier` for a retried or deferred task, `reason` for a dead letter."""

    disposition: Disposition
    tier: str | None = None
    reason: str | None = None


_SUCCEEDED = Routed(Disposition.SUCCEEDED)


def _now_ms() -> int:
    """Rounded up, so `retry-at` (failed-at + delay) is never before the failure plus the delay."""
    return -(-time.time_ns() // 1_000_000)


class OutcomeRouter:
    """Makes each outcome durable before the worker marks the task's offset finished."""

    def __init__(self, settings: KafkaSettings, topology: Topology, tasks: Mapping[str, Task[Any, Any]]) -> None:
        self._settings = settings
        self._policy = RetryPolicy(topology)
        self._dlq = topology.dlq_topic
        self._tasks = tasks
        self._producer: AIOKafkaProducer | None = None
        self._log_successes = False
        self._failed_writes: dict[str, tuple[float, int]] = {}  # topic → (last report, failures since)

    async def start(self) -> None:
        self._log_successes = log.is_enabled_for(logging.DEBUG)  # read once: logging is configured by now
        producer = self._new_producer()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # else aiokafka warns of an unclosed producer after the error line
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self._settings.client_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=_MAX_RECORD_BYTES,
        )

    async def route(self, envelope: Envelope, outcome: Outcome) -> Routed:
        if outcome.result is Result.SUCCEEDED:
            if self._log_successes:  # spare the hot path the fields nobody logs
                log.debug("task succeeded", **_task_fields(envelope, outcome))
            return _SUCCEEDED
        if outcome.result is Result.DEAD:
            return await self._dead_letter(envelope, outcome, outcome.reason or "permanent_error")
        if outcome.result is Result.DEFERRED:
            tier, attempt = self._policy.first, envelope.attempt
        else:
            task = self._tasks.get(envelope.task or "")
            next_tier = self._policy.after_failure(envelope.attempt, task.max_retries if task else None)
            if next_tier is None:
                return await self._dead_letter(envelope, outcome, "retries_exhausted")
            tier, attempt = next_tier, envelope.attempt + 1
        failed_at = _now_ms()
        trace = outcome.format_traceback()
        headers = failure_headers(
            envelope,
            attempt=attempt,
            error_type=outcome.error_type or "",
            error_message=str(outcome.error),
            failed_at_ms=failed_at,
            retry_at_ms=failed_at + tier.delay_ms,
            error_traceback=trace,
        )
        try:
            await self._send(tier.topic, envelope.value, envelope.key, headers)
        except _TOO_LARGE:
            return await self._dead_letter_without_value(envelope, outcome, tier.topic, "retries_exhausted", trace)
        routed = Routed(Disposition.DEFERRED if outcome.result is Result.DEFERRED else Disposition.RETRIED, tier.name)
        (log.info if outcome.result is Result.DEFERRED else log.warning)(
            f"task {routed.disposition}",
            tier=tier.name,
            **_failure_fields(envelope, outcome, trace),
        )
        return routed

    async def _dead_letter(self, envelope: Envelope, outcome: Outcome, reason: str) -> Routed:
        trace = outcome.format_traceback()
        headers = failure_headers(
            envelope,
            attempt=envelope.attempt,
            error_type=outcome.error_type or "",
            error_message=str(outcome.error),
            failed_at_ms=_now_ms(),
            dlq_reason=reason,
            error_traceback=trace,
        )
        try:
            await self._send(self._dlq, envelope.value, envelope.key, headers)
        except _TOO_LARGE:
            return await self._dead_letter_without_value(envelope, outcome, self._dlq, reason, trace)
        log.error(
            "task dead-lettered",
            reason=reason,
            **_failure_fields(envelope, outcome, trace),
        )
        return Routed(Disposition.DEAD_LETTERED, reason=reason)

    async def _dead_letter_without_value(
        self, envelope: Envelope, outcome: Outcome, topic: str, reason: str, trace: str | None
    ) -> Routed:
        """Dead-letter a task whose copy is too large for `topic`: with an empty value and its size in
        `value-dropped`. Should even that be too large (a huge key or headers), the key and every header
        but streamproc's own go too, those cut to 1 KiB each."""
        size = len(envelope.value or b"")
        headers = failure_headers(
            envelope,
            attempt=envelope.attempt,
            error_type=outcome.error_type or "",
            error_message=f"the {size}-byte value is too large to copy to {topic}, so it was dropped "
            f"(the attempt ended with {outcome.error_type}: {outcome.error})",
            failed_at_ms=_now_ms(),
            dlq_reason=reason,
            value_dropped=size,
            error_traceback=trace,
        )
        try:
            await self._send(self._dlq, b"", envelope.key, headers)
        except _TOO_LARGE:
            await self._send(self._dlq, b"", None, own_headers(headers))
        log.error(
            "task dead-lettered without its value",
            reason=reason,
            size=size,
            **_failure_fields(envelope, outcome, trace),
        )
        return Routed(Disposition.DEAD_LETTERED, reason=reason)

    async def _send(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        """Return once the broker has the record. Transient errors are retried with backoff (the
        offset stays unfinished meanwhile); only a too-large record is raised, since no retry helps.
        A record with neither key nor value (which aiokafka refuses to send) gets `b""` as its value."""
        if key is None and value is None:
            value = b""
        backoff = 0.1
        while True:
            producer = self._producer
            if producer is None:
                raise RuntimeError("OutcomeRouter.start() was not awaited")
            try:
                await (await producer.send(topic, value, key=key, headers=headers))
                return
            except _TOO_LARGE:
                raise
            except KafkaError as exc:
                self._report_failed_write(topic, producer, exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 5.0)
                if isinstance(exc, _WEDGED) and producer is self._producer:
                    await self._replace(producer)

    def _report_failed_write(self, topic: str, producer: AIOKafkaProducer, exc: KafkaError) -> None:
        """Log a failed write at most once per topic every `REPORT_EVERY_S`, with the count since:
        while a topic is missing or the broker is away, every failing task retries its write."""
        now = time.monotonic()
        last, count = self._failed_writes.get(topic, (0.0, 0))
        if now - last < REPORT_EVERY_S:
            self._failed_writes[topic] = (last, count + 1)
            return
        self._failed_writes[topic] = (now, 0)
        fields = {"topic": topic, "error": str(exc) or type(exc).__name__, "failures_since_last_report": count}
        if isinstance(exc, UnknownTopicOrPartitionError) or topic not in producer.client.cluster.topics():
            log.error(
                f"topic {topic} does not exist: its retry and DLQ records wait (their offsets stay uncommitted) "
                "until it is created; run `streamproc topics apply`",
                **fields,
            )
        else:
            log.warning("writing a retry or DLQ record failed; trying again", **fields)

    async def _replace(self, wedged: AIOKafkaProducer) -> None:
        """A fresh producer: a wedged one's sequence numbers never recover (aiokafka #1017)."""
        fresh = self._new_producer()
        try:
            await fresh.start()
        except KafkaError:
            await fresh.stop()  # the next failure tries again
            return
        self._producer = fresh
        with contextlib.suppress(KafkaError):
            await wedged.stop()


def _task_fields(envelope: Envelope, outcome: Outcome) -> dict[str, object]:
    """The task fields of SPEC §7 that every task event carries."""
    return envelope.log_fields() | {
        "duration_ms": round(outcome.duration_s * 1000, 3),
        "outcome": outcome.result.value,
    }


def _failure_fields(envelope: Envelope, outcome: Outcome, trace: str | None) -> dict[str, object]:
    """The task fields plus what every failure event adds: the error and its traceback."""
    return _task_fields(envelope, outcome) | {
        "error_type": outcome.error_type,
        "error": str(outcome.error),
        "traceback": trace,
    }
