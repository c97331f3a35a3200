"""`StatusFollower`: one reader per process that resolves every awaited task id (SPEC §12).

Awaiting a result must not poll: a waiter registers its task id with the status partition to read
and the offset to read from (the offset of the task's `pending` record, or the partition's end
before a lookup), and one consumer with no group reads those partitions and resolves the waiters
whose task reached a terminal state. With nothing awaited it does not fetch at all; while waiting
it sits in Kafka's long-poll fetch, so an idle wait costs no CPU. A waiter whose start lies behind
the reader's position moves the reader back: records read twice resolve nothing twice.

Spring's ReplyingKafkaTemplate needs a reply topic per instance or every instance reads every
reply (spring-kafka#731); here each process reads only the partitions its waiters name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.lifecycle.status import TaskStatus, newer
from streamproc.settings import KafkaSettings

FETCH_WAIT_MS = 500


class StatusFollower:
    """Resolves awaited task ids from `topic` (the status topic); start lazily with the first wait."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()
        self._waiters: dict[str, list[asyncio.Future[TaskStatus]]] = defaultdict(list)
        self._seen: dict[str, TaskStatus] = {}  # latest non-terminal status of each awaited id
        self._next: dict[int, int] = {}  # partition → next offset to read
        self._work = asyncio.Event()  # someone waits
        self._reader: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Task ids awaited now."""
        return len(self._waiters)

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The current end of each status partition: where to follow from after a lookup."""
        consumer = await self._started()
        ends = await consumer.end_offsets([TopicPartition(self._topic, p) for p in partitions])
        return {tp.partition: end for tp, end in ends.items()}

    async def wait(self, task_id: str, starts: dict[int, int]) -> TaskStatus:
        """The first terminal status of `task_id` in the status partitions `starts` names, each read
        from its offset on (bound it with `asyncio.timeout`)."""
        await self._started()
        future: asyncio.Future[TaskStatus] = asyncio.get_running_loop().create_future()
        self._waiters[task_id].append(future)
        self._follow(starts)
        try:
            return await future
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[task_id]
                    self._seen.pop(task_id, None)

    def _follow(self, starts: dict[int, int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        added = {p: offset for p, offset in starts.items() if p not in self._next}
        back = {p: offset for p, offset in starts.items() if p in self._next and offset < self._next[p]}
        self._next |= added | back
        if added:  # assign() resets every position, so set them all again
            consumer.assign([TopicPartition(self._topic, p) for p in self._next])
            back = self._next
        for partition, offset in back.items():
            consumer.seek(TopicPartition(self._topic, partition), offset)
        self._work.set()

    async def _started(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    **self._settings.client_kwargs(), enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS
                )
                await consumer.start()
                self._consumer = consumer
                self._reader = asyncio.create_task(self._read(consumer))
            return self._consumer

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            if not self._waiters:
                self._work.clear()
                await self._work.wait()
            try:
                batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS)
            except KafkaError as exc:  # aiokafka reconnects; the waiters' timeouts bound the wait
                import structlog  # here, not at the top: it imports rich, which code that submits must not load

                structlog.get_logger("streamproc.producer").warning(
                    "reading task statuses failed", error=str(exc) or type(exc).__name__
                )
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                for record in records:
                    self._apply(record.value)
                self._next[tp.partition] = records[-1].offset + 1

    def _apply(self, value: bytes | None) -> None:
        status = TaskStatus.from_json(value)
        if status is None or status.task_id not in self._waiters:
            return
        merged = newer(self._seen.get(status.task_id), status)
        if not merged.state.terminal:
            self._seen[status.task_id] = merged
            return
        for future in self._waiters.pop(status.task_id):
            if not future.done():
                future.set_result(merged)
        self._seen.pop(status.task_id, None)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.stop()
        self._consumer = None
