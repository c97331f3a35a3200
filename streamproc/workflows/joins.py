"""`JoinReader`: the statuses of a chord's members, read by the worker whose member just succeeded.

A chord's members and callback all live in one intake partition, chosen at submit, so their
statuses all land in one status partition (`lifecycle.status`); and none is older than the chord's
submit time. A join therefore reads that one status partition from the submit time (less a
margin for clock skew; `offsets_for_times`) to its current end: a bounded read, as the status
lookup is (`lifecycle.lookup`), whose price is the status records written to that partition since
the chord was submitted. One consumer (no group) per worker serves every join, one at a time; it
starts with the first join, so a worker without chords never opens it. A read that fails on a
broker error is tried again (the member's offset stays unfinished meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.lifecycle.reading import records_until
from streamproc.lifecycle.status import TaskStatus, newer
from streamproc.settings import KafkaSettings

log = structlog.get_logger("streamproc.worker")
MARGIN_MS = 60_000  # clock skew between the submitting process and the broker


class JoinReader:
    """Reads the statuses of given task ids from one status partition (see the module docstring)."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def statuses(self, partition: int, since_ms: int, ids: Collection[str]) -> dict[str, TaskStatus]:
        """The latest status of each of `ids` found in status `partition` from `since_ms` on."""
        backoff = 0.2
        async with self._lock:
            while True:
                try:
                    return await self._read(partition, since_ms, ids)
                except KafkaError as exc:
                    log.warning("reading a chord's statuses failed; trying again", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, 5.0)

    async def _read(self, partition: int, since_ms: int, ids: Collection[str]) -> dict[str, TaskStatus]:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        tp = TopicPartition(self._topic, partition)
        consumer.assign([tp])
        start = (await consumer.offsets_for_times({tp: max(0, since_ms - MARGIN_MS)}))[tp]
        if start is None:  # nothing written since: not even this member's own status yet
            return {}
        consumer.seek(tp, start.offset)
        ends = await consumer.end_offsets([tp])
        wanted = {task_id.encode() for task_id in ids}
        found: dict[str, TaskStatus] = {}
        async for record in records_until(consumer, ends):
            if record.key in wanted and (status := TaskStatus.from_json(record.value)) is not None:
                found[status.task_id] = newer(found.get(status.task_id), status)
        return found
