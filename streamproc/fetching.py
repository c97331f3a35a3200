"""The fetch step of the worker: records of the owned partitions into their buffers, within bounds.

`Fetching.loop` calls `getmany` on the intake topics, routes and retry tiers, records each offset
as unfinished and hands the records to `Buffers` (the scheduler, or for a tier record whose
`retry-at` is still ahead, the delay queue). A partition holding more than half its `prefetch`,
or whose offsets past its commit reach `max_uncommitted`, is left out of the next fetch
(backpressure, and a bound on what a slow task holds back).

Pausing is done by leaving the partition out of `getmany(*partitions)`, not with
`consumer.pause()`: aiokafka discards a paused partition's already fetched records, so every
pause/resume would fetch them again, while an unrequested partition keeps its one fetched
response in aiokafka's buffer and is not fetched further until it is read. Each `getmany` takes
at most `prefetch // 2` records, so a partition never holds more than `prefetch`. Waiting
records (delayed or parked) count against it too, so memory stays bounded, and they wake the
loops at their due time: nothing polls while they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import cast

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition, errors
from aiokafka.errors import KafkaError

from streamproc.buffers import Buffers
from streamproc.envelope import Envelope
from streamproc.offsets import PartitionOffsets
from streamproc.scheduling import Job
from streamproc.worker_config import WorkerConfig

log = structlog.get_logger("streamproc.worker")


class Fetching:
    """Fetches for one worker's consumer; `fetched` is set whenever records arrive."""

    def __init__(
        self,
        config: WorkerConfig,
        buffers: Buffers,
        offsets: dict[TopicPartition, PartitionOffsets],
        fetched: asyncio.Event,
    ) -> None:
        self._config = config
        self._buffers = buffers
        self._offsets = offsets  # the owned partitions' trackers (`Ownership.offsets`)
        self._fetched = fetched
        self._room = asyncio.Event()  # a full partition may be fetched again (see `note_room`)
        self._waiting_for_room = False  # the loop waits on `_room`: every owned partition is full

    async def loop(self, consumer: AIOKafkaConsumer) -> None:
        max_records = max(1, self._config.prefetch // 2)
        while True:
            assigned = list(self._offsets)
            open_partitions = [tp for tp in assigned if self._has_room(tp)]
            if assigned and not open_partitions:
                # Every buffer is full: wait until a task starts. That takes at most the longest task
                # timeout or tier delay, which the poll interval covers, so the member stays in the group.
                self._room.clear()
                self._waiting_for_room = True
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._room.wait()
                finally:
                    self._waiting_for_room = False
                continue
            try:
                batches = await consumer.getmany(
                    *open_partitions, timeout_ms=self._poll_ms(assigned, open_partitions), max_records=max_records
                )
            except KafkaError as exc:
                if not passes_by_itself(exc):
                    raise
                log.warning("the consumer group's coordination failed; it rejoins", error=str(exc))
                continue
            for tp, records in batches.items():
                offsets = self._offsets.get(tp)
                if offsets is None:
                    if tp in consumer.assignment():  # assigned, but its tracker is still being set up
                        consumer.seek(tp, records[0].offset)  # fetch these again, not lose them
                    continue  # else revoked while this batch was on its way
                self._buffers.accept(tp, records, offsets)  # its jobs carry `tp` (`fetched_from`)
            if batches:
                self._fetched.set()

    def note_room(self, tp: TopicPartition) -> None:
        """Wake the loop, which waits while every partition is full, once `tp` has room (checked only
        while it waits: the check after each start and finish of a task cost 5% of a no-op task)."""
        if self._waiting_for_room and not self._room.is_set() and self._has_room(tp):
            self._room.set()

    def _has_room(self, tp: TopicPartition) -> bool:
        """Room for one more `getmany` batch without passing `prefetch` nor `max_uncommitted`."""
        held = self._buffers.held(tp)
        tracker = self._offsets.get(tp)
        span = tracker.open_span if tracker is not None else 0
        half = self._config.prefetch // 2
        return held <= half and span + half <= self._config.max_uncommitted

    def _poll_ms(self, assigned: list[TopicPartition], open_partitions: list[TopicPartition]) -> int:
        """How long `getmany` may wait for records of the open partitions (`Buffers.poll_ms`)."""
        if len(open_partitions) == len(assigned):
            return 500
        closed = set(assigned).difference(open_partitions)
        return self._buffers.poll_ms(((tp.topic, tp.partition) for tp in closed), time.monotonic())


def passes_by_itself(error: KafkaError) -> bool:
    """Whether an error `getmany` raised passes by itself. aiokafka's group coordinator hands a failed
    join or sync to the next `getmany` and then rejoins on its own; an answer it does not expect (a
    SyncGroup's GroupLoadInProgress while the broker recovers from a freeze) comes as a plain
    `KafkaError` naming the broker's error, which ended the worker until this read the name: a
    retriable error passes, anything else (an authorization failure) still ends the worker."""
    if error.retriable:
        return True
    if type(error) is not KafkaError or not error.args:
        return False
    named = getattr(errors, str(error.args[0]).removesuffix("()"), None)
    return isinstance(named, type) and issubclass(named, KafkaError) and bool(getattr(named, "retriable", False))


def fetched_from(job: Job[Envelope]) -> TopicPartition:
    """The partition of a fetched job: `Buffers.accept` was given the `TopicPartition` itself, so no
    new one is built per task (a `TopicPartition` is a `tuple[str, int]`, equal to and hashed as one)."""
    return cast(TopicPartition, job.partition)
