"""The materialised view of `<prefix>.status` (SPEC §12): follows the topic into a `StatusStore`.

One consumer with no group reads every partition of the status topic, from the positions the
store committed (else from the beginning), and rechecks the topic's partitions now and then, so
partitions added later are read too. Nothing is committed to Kafka: the store's positions are the
only progress, written in the same transaction as the rows.

Fetching and writing overlap: the fetcher keeps reading into a mailbox while the writer thread
applies the previous batch, so a slow write makes the next batch larger, not the fetch slower
(SQLite writes random ids much faster in large transactions). Decoding happens in the writer
thread too, so lookups on the event loop wait for neither. Values `TaskStatus.from_json` does not
accept are counted and skipped: junk on the topic never stops the view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamproc.admin import admin_client, topic_partitions
from streamproc.lifecycle.status import TaskStatus
from streamproc.settings import KafkaSettings
from streamproc.tailing import partitions_when_present
from streamproc.topology import Topology
from streamproc.web.store import PRUNE_CHUNK, Row, StatusStore, row

# What the view may hold besides the store: with these (and the store's caches), 50,000 statuses/s under
# the monitor's load run peaked at 169-173 MB of RSS and ingest ran at 73,000-74,000/s; with 100,000
# pending, 64 and 16 MiB fetches and 64 MiB SQLite caches, 385 MB (610 MB when the view fell behind on a
# loaded machine) for 77,948/s.
MAX_RECORDS = 20_000  # per getmany
MAX_PENDING = 40_000  # fetched records waiting for the writer before fetching waits
FETCH_MAX_BYTES = 16 * 1024 * 1024
PARTITION_FETCH_BYTES = 4 * 1024 * 1024
PARTITION_CHECK_S = 30.0  # how often to look for partitions added to the status topic
PRUNE_EVERY_S = 60.0

log = structlog.get_logger("streamproc.web")


class _Mailbox:
    """Records fetched and not yet handed to the writer, and the positions after them."""

    def __init__(self) -> None:
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.positions: dict[int, int] = {}
        self.filled = asyncio.Event()
        self.drained = asyncio.Event()

    def take(self) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[int, int]]:
        taken = self.records, self.positions
        self.records, self.positions = [], {}
        self.filled.clear()
        self.drained.set()
        return taken


class StatusView:
    """Follows the status topic of `topology` into `store` while `run` runs."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        store: StatusStore,
        *,
        partition_check_s: float = PARTITION_CHECK_S,
        prune_every_s: float = PRUNE_EVERY_S,
    ) -> None:
        self.settings = settings
        self.topic = topology.status_topic
        self.store = store
        self.caught_up = asyncio.Event()  # set once the store holds everything up to the end offsets seen at start
        self.statuses = 0  # statuses applied since start
        self.ignored = 0  # records that are no status (junk, tombstones)
        self._partition_check_s = partition_check_s
        self._prune_every_s = prune_every_s
        self._written: dict[int, int] = {}  # partition → next offset, as committed to the store
        self._targets: dict[int, int] | None = None  # partition → end offset when the view started
        self._consumer: AIOKafkaConsumer | None = None

    def lookup(self, task_id: str) -> TaskStatus:
        """The status of `task_id` (µs: a primary-key lookup on the store's read connection)."""
        return self.store.get(task_id)

    def positions(self) -> dict[int, int]:
        """Each partition's next offset the store holds everything before: what a lookup made now
        has seen, so a client awaiting the status follows the topic from there (no gap)."""
        return dict(self._written)

    @property
    def lag(self) -> int | None:
        """Records on the topic not yet in the store; None until every partition's end is known."""
        consumer = self._consumer
        if consumer is None:
            return None
        total = 0
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                return None
            total += max(0, end - self._written.get(tp.partition, 0))
        return total

    async def run(self) -> None:
        """Follow the topic until cancelled; Kafka and store errors end it (the caller reports them)."""
        writer = ThreadPoolExecutor(1, thread_name_prefix="status-store")  # SQLite writes, one at a time
        loop = asyncio.get_running_loop()
        consumer = AIOKafkaConsumer(
            **self.settings.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        )
        try:
            await consumer.start()
            self._consumer = consumer
            self._written = await loop.run_in_executor(writer, self.store.positions)
            mailbox = _Mailbox()
            async with admin_client(self.settings) as admin, asyncio.TaskGroup() as group:
                group.create_task(self._prune(writer))
                group.create_task(self._write(writer, mailbox))
                group.create_task(self._fetch(consumer, admin, mailbox))
        finally:
            self._consumer = None
            await consumer.stop()
            await asyncio.to_thread(writer.shutdown)  # a write under way finishes before the store is closed

    async def _fetch(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, mailbox: _Mailbox) -> None:
        partitions = [tp.partition for tp in await partitions_when_present(self.settings, self.topic)]
        await self._assign(consumer, partitions, self._written)
        ends = await consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        self._targets = {tp.partition: end for tp, end in ends.items()}
        self._check_caught_up()
        fetched = dict(self._written)  # partition → next offset, as fetched
        next_check = time.monotonic() + self._partition_check_s
        while True:
            if time.monotonic() >= next_check:
                partitions = await self._recheck(consumer, admin, partitions, fetched)
                next_check = time.monotonic() + self._partition_check_s
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            for records in batches.values():
                mailbox.records += records
            for tp in consumer.assignment():
                position = await consumer.position(tp)
                if fetched.get(tp.partition) != position:
                    fetched[tp.partition] = mailbox.positions[tp.partition] = position
            if mailbox.positions:
                mailbox.filled.set()
            if len(mailbox.records) >= MAX_PENDING:
                mailbox.drained.clear()
                await mailbox.drained.wait()

    async def _write(self, writer: ThreadPoolExecutor, mailbox: _Mailbox) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await mailbox.filled.wait()
            records, positions = mailbox.take()
            applied, ignored = await loop.run_in_executor(writer, self._apply, records, positions)
            self.statuses += applied
            self.ignored += ignored
            self._written.update(positions)
            self._check_caught_up()

    def _apply(self, records: Sequence[ConsumerRecord[bytes, bytes]], positions: dict[int, int]) -> tuple[int, int]:
        """In the writer thread: decode `records` and merge them into the store; (applied, ignored)."""
        rows: list[Row] = []
        for record in records:
            status = TaskStatus.from_json(record.value)
            if status is not None and record.value is not None:
                rows.append(row(status, record.value, status.at_ms or record.timestamp))
        self.store.apply(rows, positions)
        return len(rows), len(records) - len(rows)

    def _check_caught_up(self) -> None:
        targets = self._targets
        if targets is None or self.caught_up.is_set():
            return
        if all(self._written.get(p, 0) >= end for p, end in targets.items()):
            self.caught_up.set()
            log.info("status view caught up", topic=self.topic, statuses=self.statuses)

    async def _recheck(
        self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, partitions: list[int], fetched: dict[int, int]
    ) -> list[int]:
        """The topic's partitions now; new ones are read from their beginning."""
        try:
            found = (await topic_partitions(admin, [self.topic])).get(self.topic, [])
        except KafkaError as exc:  # the broker is away: the consumer waits for it, and so can this
            log.warning("cannot read the status topic's partitions", topic=self.topic, error=str(exc))
            return partitions
        if not set(found) - set(partitions):
            return partitions
        log.info("status topic has new partitions", topic=self.topic, partitions=len(found))
        await self._assign(consumer, found, fetched)
        return found

    async def _assign(self, consumer: AIOKafkaConsumer, partitions: list[int], positions: dict[int, int]) -> None:
        """Read `partitions`, each from its position (assigning anew forgets the old ones), else the beginning."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in positions:
                consumer.seek(tp, positions[tp.partition])
        if new := [tp for tp in tps if tp.partition not in positions]:
            await consumer.seek_to_beginning(*new)

    async def _prune(self, writer: ThreadPoolExecutor) -> None:
        """Delete statuses older than the TTL now and then, a chunk per write so lookups stay fast."""
        loop = asyncio.get_running_loop()
        while True:
            deleted = 0
            while (chunk := await loop.run_in_executor(writer, self.store.prune)) == PRUNE_CHUNK:
                deleted += chunk
            if deleted + chunk:
                log.info("pruned statuses older than the TTL", topic=self.topic, statuses=deleted + chunk)
            await asyncio.sleep(self._prune_every_s)
