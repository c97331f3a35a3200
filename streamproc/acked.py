"""`AckedWriter`: the worker's writes that must be durable before a task's offset finishes.

Retry and DLQ records (`routing`) and status records (`lifecycle.status_writer`) share one
idempotent `acks=all` producer: `send` returns only once the broker has the record, so the worker
marks an offset finished only after its outcome is safe, and a retried send never duplicates it.
Transient errors are retried with backoff (the offset stays unfinished meanwhile); only a
too-large record is raised, since no retry helps. A producer wedged by a broker blip is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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

from streamproc.envelope import Headers
from streamproc.settings import KafkaSettings

log = structlog.get_logger("streamproc.task")
T = TypeVar("T")

TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
# Idempotent producer states a broker blip can leave behind for good (KAFKA-NOTES "Producing").
_WEDGED = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)
REPORT_EVERY_S = 10.0
_MAX_RECORD_BYTES = 16 * 1_048_576  # the broker's topic limit decides; this only bounds the client
_BATCH_BYTES = 256 * 1024  # a batch of statuses (`send_batch`): some 1,500 of them


class AckedWriter:
    """Writes records and returns once the broker acknowledged them to all in-sync replicas."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._failed_writes: dict[str, tuple[float, int]] = {}  # topic → (last report, failures since)

    async def start(self) -> None:
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
            # No linger: statuses come in batches already (`status_batches`), which aiokafka would
            # otherwise hold back 5 ms each; retry and DLQ records are few.
            linger_ms=0,
            max_request_size=_MAX_RECORD_BYTES,
            max_batch_size=_BATCH_BYTES,
        )

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers, partition: int | None = None
    ) -> Any:
        """Return (aiokafka's `RecordMetadata`) once the broker has the record; see the module docstring.
        A record with neither key nor value (which aiokafka refuses to send) gets `b""` as its value."""
        if key is None and value is None:
            value = b""

        async def attempt(producer: AIOKafkaProducer) -> Any:
            return await (await producer.send(topic, value, key=key, headers=headers, partition=partition))

        return await self._retrying(topic, attempt)

    async def send_batch(self, topic: str, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        """Send keyed records to one partition as one batch (a record each costs a fraction of
        `send`'s), returning once the broker has them all; retried whole like `send`."""

        async def attempt(producer: AIOKafkaProducer) -> None:
            deliveries = []
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: queue it, start anew
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
            # One batch is the rule (256 KiB, some 1,500 statuses): awaited alone, its acknowledgement
            # resumes this at once, where `gather` would take one more turn of the loop.
            await (deliveries[0] if len(deliveries) == 1 else asyncio.gather(*deliveries))

        await self._retrying(topic, attempt)

    async def _retrying(self, topic: str, attempt: Callable[[AIOKafkaProducer], Awaitable[T]]) -> T:
        """`attempt(producer)` until it succeeds: transient errors are retried with backoff, a wedged
        producer is replaced, and only a too-large record is raised."""
        backoff = 0.1
        while True:
            producer = self._producer
            if producer is None:
                raise RuntimeError("AckedWriter.start() was not awaited")
            try:
                return await attempt(producer)
            except TOO_LARGE:
                raise
            except KafkaError as exc:
                self._report_failed_write(topic, producer, exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 5.0)
                if isinstance(exc, _WEDGED) and producer is self._producer:
                    await self._replace(producer)

    def _report_failed_write(self, topic: str, producer: AIOKafkaProducer, exc: KafkaError) -> None:
        """Log a failed write at most once per topic every `REPORT_EVERY_S`, with the count since:
        while a topic is missing or the broker is away, every waiting task retries its write."""
        now = time.monotonic()
        last, count = self._failed_writes.get(topic, (0.0, 0))
        if now - last < REPORT_EVERY_S:
            self._failed_writes[topic] = (last, count + 1)
            return
        self._failed_writes[topic] = (now, 0)
        fields = {"topic": topic, "error": str(exc) or type(exc).__name__, "failures_since_last_report": count}
        if isinstance(exc, UnknownTopicOrPartitionError) or topic not in producer.client.cluster.topics():
            log.error(
                f"topic {topic} does not exist: the records for it wait (their tasks' offsets stay uncommitted) "
                "until it is created; run `streamproc topics apply`",
                **fields,
            )
        else:
            log.warning("writing a retry, DLQ or status record failed; trying again", **fields)

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
