"""Delayed tasks: the scheduler that fires them when due (SPEC §13), one in every worker process.

It consumes `<prefix>.schedules` in its own consumer group, `<group>-schedules`, and commits no
offsets: on assignment it reads each of its partitions from the beginning to the end offset it
had then (nothing read fires before that: a tombstone further on may delete it), then follows
it. It holds only the schedules due within `look_ahead_s` (`due.LookAhead`), and reads its
partitions again every half window to take those that entered the window meanwhile, so its
memory is bounded by the window whatever the far-future backlog, and a far-future schedule
never delays an earlier one behind it: it is skipped, not waited for.

When schedules fall due (all those due at once in one batch, earliest first), each intake record
is sent (`AckedWriter`: `acks=all`, idempotent, retried through outages) to the intake topic,
partition and key the producer chose, with its `run-at` header; once the broker has them all,
their tombstones follow. A crash between the two fires a task again after the restart under the
same id and in the same key lane, where the SPEC §12 rule (a succeeded id never runs again) skips
it. A revocation waits for the batch in flight before it gives its partitions up.

Never fatal: a record it cannot read is skipped (logged, and never deleted: it may be someone
else's); a missing schedules topic is logged and looked for again every `TOPIC_CHECK_S`; a
broker outage is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamproc import backoff, lenient_decoding
from streamproc.acked import AckedWriter
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.timing.due import LookAhead
from streamproc.timing.schedule_record import Entry, Junk, Tombstone, parse
from streamproc.topology import Topology

LOOK_AHEAD_S = 60.0
TOPIC_CHECK_S = 10.0
FIRE_BATCH = 2_000  # schedules sent together at most; more due at once go in the next batches
POLL_MS = 200  # the longest a read waits for records (a stop or a rescan is noticed within it)
STOP_WITHIN_S = 10.0  # a batch in flight gets this long to be sent and tombstoned on stop or revocation
JUNK_REPORT_EVERY_S = 60.0
HEARTBEAT_MS = 500

log = structlog.get_logger("streamproc.scheduler")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Scheduler:
    """Fires the delayed tasks of the schedules partitions assigned to it while `run` runs."""

    def __init__(
        self, settings: KafkaSettings, topology: Topology, group: str, look_ahead_s: float = LOOK_AHEAD_S
    ) -> None:
        self._settings = settings
        self.topic = topology.schedules_topic
        self.group = f"{group}-schedules"
        self._intake_topics = frozenset(topology.intake_topic(p) for p in topology.priorities)
        self._intake_partitions = topology.intake.partitions
        self._rescan_every_s = look_ahead_s / 2
        self.queue = LookAhead(int(look_ahead_s * 1000))
        self._writer = AckedWriter(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # no batch in flight
        self._idle.set()
        self.fired = 0
        self._junk = 0
        self._junk_reported_at = 0.0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Schedule until `stop()`; never raises but for cancellation."""
        lenient_decoding.install()  # a header key that is not UTF-8 must not wedge a partition
        backoff.install()
        delay = 1.0
        while not self._stopping.is_set():
            try:
                await self._session()
            except (KafkaError, OSError, StreamprocError) as exc:  # an outage; a setting the worker reports too
                log.warning("the scheduler lost the broker; trying again", error=str(exc) or type(exc).__name__)
            except Exception:  # a bug here must not end the worker's process
                log.exception("the scheduler failed; starting it again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(2 * delay, 30.0)

    async def _session(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._settings.client_kwargs(),
            group_id=self.group,
            enable_auto_commit=False,  # no offsets: each assignment reads from the beginning
            auto_offset_reset="earliest",
            max_poll_records=5_000,
            # A member joining or leaving is noticed within this; nothing fires meanwhile (the default 3 s
            # made a rolling restart's tasks up to that late).
            heartbeat_interval_ms=HEARTBEAT_MS,
        )
        self.queue = LookAhead(self.queue.window_ms)
        try:
            await self._writer.start()
            await consumer.start()
            if not await self._topic_found(consumer):
                return
            consumer.subscribe([self.topic], listener=_Listener(self))
            self._consumer = consumer
            firing = asyncio.create_task(self._fire_loop())
            try:
                await self._read_loop(consumer)
                with contextlib.suppress(TimeoutError):  # a batch in flight is sent and tombstoned first
                    await asyncio.wait_for(self._idle.wait(), STOP_WITHIN_S)
            finally:
                firing.cancel()
                await asyncio.gather(firing, return_exceptions=True)
        finally:
            self._consumer = None
            await consumer.stop()
            await self._writer.stop()

    async def _topic_found(self, consumer: AIOKafkaConsumer) -> bool:
        """Wait until the schedules topic exists; False when stopped first."""
        first = True
        while self.topic not in await consumer.topics():
            if first:
                log.warning(
                    "delayed tasks wait until the topic exists: run `streamproc topics apply`", topic=self.topic
                )
                first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TOPIC_CHECK_S)
            if self._stopping.is_set():
                return False
        return True

    async def _read_loop(self, consumer: AIOKafkaConsumer) -> None:
        next_rescan = time.monotonic() + self._rescan_every_s
        while not self._stopping.is_set():
            try:
                await self._load_ends(consumer)
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                earliest = self.queue.next_due()
                for tp, records in batches.items():
                    for record in records:
                        self._take(record)
                    self.queue.caught_up(tp.partition, await consumer.position(tp))
                for tp in consumer.assignment():
                    if self.queue.replaying(tp.partition) and not self.queue.loading(tp.partition):
                        self.queue.caught_up(tp.partition, await consumer.position(tp))
                if time.monotonic() >= next_rescan:
                    next_rescan = time.monotonic() + self._rescan_every_s
                    await self._rescan(consumer)
                if self.queue.next_due() != earliest:
                    self._wake.set()
            except KafkaError as exc:  # an outage, a rebalance under our feet: read on after a pause
                log.warning("reading the schedules failed; trying again", error=str(exc) or type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)

    async def _load_ends(self, consumer: AIOKafkaConsumer) -> None:
        """The end offsets of newly assigned partitions: their first read fires nothing before them."""
        loading = [tp for tp in consumer.assignment() if self.queue.loading(tp.partition)]
        if loading:
            for tp, end in (await consumer.end_offsets(loading)).items():
                self.queue.set_end(tp.partition, end)

    async def _rescan(self, consumer: AIOKafkaConsumer) -> None:
        now = _now_ms()
        for tp in consumer.assignment():
            if self.queue.rescan(tp.partition, await consumer.position(tp), now):
                await consumer.seek_to_beginning(tp)

    def _take(self, record: Any) -> None:
        parsed = parse(record, self._intake_topics, self._intake_partitions)
        if isinstance(parsed, Entry):
            self.queue.offer(record.offset, parsed)
        elif isinstance(parsed, Tombstone):
            self.queue.remove(record.partition, record.offset, parsed.task_id)
        elif isinstance(parsed, Junk):
            self._report_junk(record, parsed.reason)

    def _report_junk(self, record: Any, reason: str) -> None:
        """A record that is no schedule is skipped: logged at first, then counted every minute."""
        self._junk += 1
        now = time.monotonic()
        if self._junk_reported_at and now - self._junk_reported_at < JUNK_REPORT_EVERY_S:
            return
        self._junk_reported_at = now
        log.warning(
            "skipping a record of the schedules topic that is no delayed task",
            reason=reason,
            partition=record.partition,
            offset=record.offset,
            skipped_so_far=self._junk,
        )

    async def _fire_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            now = _now_ms()
            due = self.queue.pop_due(now, FIRE_BATCH)
            if due:
                self._idle.clear()
                try:
                    await self._fire(due)
                finally:
                    self._idle.set()
                continue
            at = self.queue.next_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if at is None else max(at - now, 1) / 1000)

    async def _fire(self, due: list[Entry]) -> None:
        """Send the intake records, then (once the broker has them all) their tombstones. Shielded:
        a stop lets the batch finish (`STOP_WITHIN_S`) rather than cut it between the two."""
        sends = [self._writer.send(e.topic, e.value, e.key, e.headers, partition=e.partition) for e in due]
        for entry, outcome in zip(due, await asyncio.gather(*sends, return_exceptions=True), strict=True):
            if isinstance(outcome, BaseException):  # only what no retry helps (too large, a partition gone)
                log.error(
                    "a delayed task cannot be sent to its intake topic: dropping its schedule",
                    task_id=entry.task_id,
                    topic=entry.topic,
                    error=str(outcome) or type(outcome).__name__,
                )
        topic = self.topic
        await asyncio.gather(*(self._writer.send(topic, None, e.task_id.encode(), [], e.source_partition) for e in due))
        self.fired += len(due)

    async def _assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Newly assigned partitions are read from their beginning: the group never commits, so
        `auto_offset_reset="earliest"` puts them there."""
        now = _now_ms()
        partitions = [tp for tp in assigned if tp.topic == self.topic]
        for tp in partitions:
            self.queue.assign(tp.partition, now)
        log.info("schedules assigned", partitions=sorted(tp.partition for tp in partitions))

    async def _revoked(self, revoked: Iterable[TopicPartition]) -> None:
        with contextlib.suppress(TimeoutError):  # the batch in flight is tombstoned before a successor reads
            await asyncio.wait_for(self._idle.wait(), STOP_WITHIN_S)
        for tp in revoked:
            if tp.topic == self.topic:
                self.queue.revoke(tp.partition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._scheduler._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._scheduler._assigned(assigned)


@contextlib.asynccontextmanager
async def delayed_scheduling(
    settings: KafkaSettings, topology: Topology, group: str, look_ahead_s: float = LOOK_AHEAD_S
) -> AsyncIterator[Scheduler]:
    """Fire the delayed tasks of `topology` (in the group `<group>-schedules`) while the block runs;
    on exit a batch in flight is finished (within `STOP_WITHIN_S`) and the clients are closed."""
    scheduler = Scheduler(settings, topology, group, look_ahead_s)
    running = asyncio.create_task(scheduler.run())
    try:
        yield scheduler
    finally:
        scheduler.stop()
        try:
            await asyncio.wait_for(asyncio.shield(running), STOP_WITHIN_S + 5)
        except TimeoutError:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
