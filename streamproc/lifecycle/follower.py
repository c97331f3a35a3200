"""`StatusFollower`: one reader per process that resolves every awaited task id (SPEC §12).

Awaiting a result must not poll: a waiter registers its task id with the status partition to read
and the offset to read from (the offset of the task's `pending` record, or the partition's end
before a lookup), and one consumer with no group reads those partitions and resolves the waiters
whose task reached a terminal state. With nothing awaited it does not fetch at all; while waiting
it sits in Kafka's long-poll fetch, so an idle wait costs no CPU. A waiter whose start lies behind
the reader's position moves the reader back: records read twice resolve nothing twice.

A partition to read that the reader does not read yet gets a fresh consumer for all of them: the
broker answers one connection's requests in order, so a fetch of the new partition would wait
behind the long poll in flight (FETCH_WAIT_MS) on the others, a 500 ms stall on the first await of
each status partition. A consumer costs a connection's set-up, once per partition per process.

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
        future: asyncio.Future[TaskStatus] = asyncio.get_running_loop().create_future()
        self._waiters[task_id].append(future)
        try:
            await self._follow(starts)
            return await future
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[task_id]
                    self._seen.pop(task_id, None)

    async def _follow(self, starts: dict[int, int]) -> None:
        async with self._starting:
            added = {p: offset for p, offset in starts.items() if p not in self._next}
            back = {p: offset for p, offset in starts.items() if p in self._next and offset < self._next[p]}
            read_before = bool(self._next)
            self._next |= added | back
            if self._consumer is None or (added and read_before):  # none (its start failed), or in a long poll
                await self._restart()
            elif added:  # the first partitions: nothing was fetched yet
                self._assign()
            else:
                self._seek(back)
            self._work.set()

    async def _started(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._consumer is None:
                await self._restart()
            assert self._consumer is not None
            return self._consumer

    async def _restart(self) -> None:
        """A fresh consumer reading every partition from `_next` on, and its reader, in place of the
        running ones (if any). Those stop first, and only between batches: `_next` is then where
        the reader got to, all it read applied."""
        await self._stop_reading()
        consumer = AIOKafkaConsumer(
            **self._settings.client_kwargs(), enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS
        )
        try:
            await consumer.start()
        except BaseException:  # the broker away, or the wait cancelled: close it, or aiokafka reports it unclosed
            await consumer.stop()
            raise
        self._consumer = consumer
        if self._next:
            self._assign()
        self._reader = asyncio.create_task(self._read(consumer))

    def _assign(self) -> None:
        """Read every partition of `_next` from there (assign() resets every position)."""
        assert self._consumer is not None
        self._consumer.assign([TopicPartition(self._topic, p) for p in self._next])
        self._seek(self._next)

    def _seek(self, offsets: dict[int, int]) -> None:
        assert self._consumer is not None
        for partition, offset in offsets.items():
            self._consumer.seek(TopicPartition(self._topic, partition), offset)

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
        async with self._starting:
            await self._stop_reading()

    async def _stop_reading(self) -> None:
        reader, consumer = self._reader, self._consumer
        self._reader = self._consumer = None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if consumer is not None:
            await consumer.stop()
