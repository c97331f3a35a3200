"""`CancelFollower`: the cancels of `<prefix>.control` (`control`) as every worker sees them (SPEC §12).

Every worker reads every partition of the control topic (`assign`, no group: a broadcast, as
Karafka Web's commands are), reads it to its end before it starts its first task, and then follows
it: a cancelled task is skipped wherever it waits, and a running one is cancelled. Celery keeps
revokes in worker memory and loses them on restart (celery#8888); here they are data.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.errors import StreamprocError
from streamproc.lifecycle.control import cancelled_id
from streamproc.lifecycle.reading import records_until
from streamproc.settings import KafkaSettings

log = structlog.get_logger("streamproc.worker")


class CancelFollower:
    """The ids cancelled within the control topic's retention, kept up to date while the worker runs."""

    def __init__(self, settings: KafkaSettings, topic: str, on_cancel: Callable[[str], None]) -> None:
        self._settings = settings
        self._topic = topic
        self._on_cancel = on_cancel
        self.cancelled: set[str] = set()  # read directly on every task's path
        self._consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the whole control topic, then follow it in the background."""
        consumer = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
        self._consumer = consumer
        await consumer.start()
        # `partitions_for_topic` knows only topics the consumer was given; ask the cluster itself.
        partitions = (await consumer._client.fetch_all_metadata()).partitions_for_topic(self._topic)
        if not partitions:
            raise StreamprocError(f"declared topic does not exist: {self._topic}; run `streamproc topics apply`")
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        self._apply([record async for record in records_until(consumer, ends)], announce=False)
        log.info("control topic read", topic=self._topic, cancelled=len(self.cancelled))
        self._follow = asyncio.create_task(self._follow_loop(consumer))

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow_loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
                self._apply(itertools.chain.from_iterable(batches.values()), announce=True)
            except KafkaError as exc:  # aiokafka reconnects by itself; the next fetch goes on
                log.warning("reading the control topic failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)

    def _apply(self, records: Iterable[Any], announce: bool) -> None:
        for record in records:
            task_id = cancelled_id(record.value)
            if task_id is not None and task_id not in self.cancelled:
                self.cancelled.add(task_id)
                if announce:
                    self._on_cancel(task_id)
