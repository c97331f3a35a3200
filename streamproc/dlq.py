"""Dead letters: read the DLQ, find one by id, and replay dead letters to intake exactly once per
replay group (SPEC §6).

Reading never joins or commits a consumer group: it assigns the DLQ's partitions, seeks, and
stops at the end offsets taken when it began, so a DLQ that keeps growing cannot keep a command
running.

Replay remembers what it sent in a consumer group of its own, the ledger (`replay_ledger`). The
ledger is committed only after the broker acknowledged the replayed records, so a crash replays
some records twice, never none (at-least-once).
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetMetadataTooLargeError

from streamproc import lenient_decoding
from streamproc.admin import admin_client, committed_with_metadata, topic_partitions
from streamproc.dead_letters import NO_TASK, DeadLetter, LetterRef, Selection
from streamproc.envelope import PRIORITY, replay_headers
from streamproc.errors import StreamprocError
from streamproc.producer import Producer
from streamproc.replay_ledger import PartitionLedger, default_replay_group, load_ledger, replayed_positions
from streamproc.settings import KafkaSettings
from streamproc.submission import resolve_priority
from streamproc.topology import Topology

MAX_METADATA_BYTES = 4096  # the broker's `offset.metadata.max.bytes` default
STALL_S = 30.0  # a read that makes no progress this long fails instead of hanging
REPLAY_CHUNK = 5_000  # records sent before the deliveries are awaited and the ledger committed

Progress = Callable[[int, int], None]
"""Called with (offsets scanned, offsets to scan) as a read advances."""


class _DlqReader:
    """A started consumer with every DLQ partition assigned (all paused until read) and the
    partitions' first and end offsets as they were when it started."""

    def __init__(self, consumer: Any, topic: str, begin: dict[int, int], end: dict[int, int]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.begin = begin
        self.end = end

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def locate(self, refs: Iterable[LetterRef]) -> list[tuple[int, int]]:
        """(partition, offset) of each ref; a bare offset must lie in exactly one partition."""
        located = []
        for partition, offset in refs:
            if partition is None:
                candidates = [p for p in self.end if self.begin[p] <= offset < self.end[p]]
                if not candidates:
                    raise StreamprocError(f"no dead letter at offset {offset} in any partition of {self.topic}")
                if len(candidates) > 1:
                    ids = ", ".join(f"{p}:{offset}" for p in candidates)
                    raise StreamprocError(f"offset {offset} is in several partitions of {self.topic}: {ids}; pick one")
                partition = candidates[0]
            elif partition not in self.end:
                raise StreamprocError(f"{self.topic} has no partition {partition} (it has 0-{len(self.end) - 1})")
            elif not self.begin[partition] <= offset < self.end[partition]:
                raise StreamprocError(
                    f"no dead letter at {partition}:{offset}: partition {partition} holds offsets "
                    f"{self.begin[partition]} to {self.end[partition] - 1}"
                    if self.end[partition] > self.begin[partition]
                    else f"no dead letter at {partition}:{offset}: partition {partition} is empty"
                )
            located.append((partition, offset))
        return located

    async def read(
        self, start: Mapping[int, int], stop: Mapping[int, int] | None = None, progress: Progress | None = None
    ) -> AsyncGenerator[DeadLetter, None]:
        """Dead letters of the partitions in `start`, from those offsets up to `stop` (default: the end
        offsets taken at start), each partition in offset order. Close it with `aclosing` when breaking early."""
        bounds: dict[TopicPartition, tuple[int, int]] = {}
        for partition, first in start.items():
            last = min(self.end[partition], (stop or self.end).get(partition, self.end[partition]))
            first = max(first, self.begin[partition])
            if first < last:
                bounds[self.tp(partition)] = (first, last)
        total = sum(last - first for first, last in bounds.values())
        scanned = dict.fromkeys(bounds, 0)
        for tp, (first, _) in bounds.items():
            self.consumer.seek(tp, first)
        self.consumer.resume(*bounds)
        loop = asyncio.get_running_loop()
        moved_at = loop.time()
        try:
            while bounds:
                batches = await self.consumer.getmany(*bounds, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset < bounds[tp][1]:
                            yield DeadLetter.from_record(record)
                for tp, (first, last) in list(bounds.items()):
                    done = min(await self.consumer.position(tp), last) - first
                    if done != scanned[tp]:
                        scanned[tp], moved_at = done, loop.time()
                    if done == last - first:
                        self.consumer.pause(tp)
                        del bounds[tp]
                if progress is not None:
                    progress(sum(scanned.values()), total)
                if bounds and loop.time() - moved_at > STALL_S:
                    raise StreamprocError(f"reading {self.topic} made no progress for {STALL_S:.0f}s")
        finally:
            self.consumer.pause(*bounds)


@asynccontextmanager
async def _open_dlq(
    settings: KafkaSettings, topology: Topology, group: str | None = None, also_needs: Collection[str] = ()
) -> AsyncIterator[_DlqReader]:
    """A reader of the DLQ. With `group` it can commit for that group, which it never joins:
    `assign()` keeps the group free of members, so the commits need no generation."""
    lenient_decoding.install()  # any client may write the DLQ: a header key that is not UTF-8 must not stop a listing
    topic = topology.dlq_topic
    async with admin_client(settings) as client:
        found = await topic_partitions(client, [topic, *also_needs])
    missing = sorted(t for t in (topic, *also_needs) if t not in found)
    if missing:
        raise StreamprocError(
            f"{', '.join(missing)} not found on {settings.bootstrap_servers}: run `streamproc topics apply`"
        )
    tps = [TopicPartition(topic, p) for p in found[topic]]
    consumer = AIOKafkaConsumer(
        **settings.client_kwargs(), group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()
        consumer.assign(tps)
        consumer.pause(*tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        yield _DlqReader(
            consumer, topic, {tp.partition: begin[tp] for tp in tps}, {tp.partition: end[tp] for tp in tps}
        )
    finally:
        await consumer.stop()


@dataclass(frozen=True, slots=True)
class Listing:
    """The most recent matching dead letters, oldest first, how many matched in all, and the ids
    (`partition:offset`) of those listed that the replay group `group` has replayed."""

    letters: list[DeadLetter]
    matched: int
    group: str
    replayed: frozenset[str] = frozenset()


def _oldest_first(letter: DeadLetter) -> tuple[int, int, int]:
    return letter.timestamp, letter.partition, letter.offset


class Located(Protocol):
    """A dead letter, or what the web's DLQ view keeps of one."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


async def replayed_ids(
    settings: KafkaSettings, topology: Topology, letters: Iterable[Located], group: str | None = None
) -> frozenset[str]:
    """The ids of `letters` that the replay group (default `<dlq>-replay`) has replayed, from its ledger."""
    positions = {(letter.partition, letter.offset) for letter in letters}
    group = group or default_replay_group(topology)
    done = await replayed_positions(settings, group, topology.dlq_topic, positions)
    return frozenset(f"{partition}:{offset}" for partition, offset in done)


async def list_dead_letters(
    settings: KafkaSettings,
    topology: Topology,
    selection: Selection = Selection(),
    limit: int | None = None,
    progress: Progress | None = None,
    group: str | None = None,
) -> Listing:
    """The `limit` most recent (by record timestamp) dead letters that match, reading the whole DLQ
    while keeping only those in memory, marked if the replay group replayed them."""
    newest: list[tuple[tuple[int, int, int], DeadLetter]] = []
    matched = 0
    async with _open_dlq(settings, topology) as dlq, aclosing(dlq.read(dict(dlq.begin), progress=progress)) as letters:
        async for letter in letters:
            if not selection.matches(letter):
                continue
            matched += 1
            item = (_oldest_first(letter), letter)
            if limit is None or len(newest) < limit:
                heapq.heappush(newest, item)
            else:
                heapq.heappushpop(newest, item)
    shown = [item[-1] for item in sorted(newest)]
    group = group or default_replay_group(topology)
    return Listing(shown, matched, group, await replayed_ids(settings, topology, shown, group))


async def get_dead_letter(settings: KafkaSettings, topology: Topology, ref: LetterRef) -> DeadLetter:
    """The dead letter `ref` names; a bare offset must be held by one DLQ partition only."""
    async with _open_dlq(settings, topology) as dlq:
        [(partition, offset)] = dlq.locate([ref])
        async with aclosing(dlq.read({partition: offset}, {partition: offset + 1})) as letters:
            async for letter in letters:
                if letter.offset == offset:
                    return letter
    raise StreamprocError(f"no dead letter at {partition}:{offset}")


async def find_by_task_id(
    settings: KafkaSettings, topology: Topology, task_id: str, progress: Progress | None = None
) -> list[DeadLetter]:
    """Every dead letter of the task id `task_id`, oldest first, by a scan of the whole DLQ (the
    `task-id` header is not an index). A task dead-lettered again after a replay has several;
    StreamprocError when there is none."""
    found: list[DeadLetter] = []
    async with _open_dlq(settings, topology) as dlq, aclosing(dlq.read(dict(dlq.begin), progress=progress)) as letters:
        async for letter in letters:
            if letter.task_id == task_id:
                found.append(letter)
    if not found:
        raise StreamprocError(f"no dead letter of task id {task_id!r} in {topology.dlq_topic}")
    return sorted(found, key=_oldest_first)


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    scanned: int
    total: int
    sent: int


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did. `already_replayed` counts the matching dead letters read and skipped;
    `not_read` those below the group's committed offsets, all replayed before (matching the filters
    or not), which a replay does not read again. `stopped_at` is the first dead letter left out
    because its partition's ledger would outgrow Kafka's metadata limit; the run ended there."""

    group: str
    by_task: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    already_replayed: int = 0
    not_read: int = 0
    not_found: list[str] = field(default_factory=list)
    stopped_at: DeadLetter | None = None

    @property
    def sent(self) -> int:
        return self.by_task.total()


async def replay(
    settings: KafkaSettings,
    topology: Topology,
    selection: Selection = Selection(),
    refs: Collection[LetterRef] | None = None,
    group: str | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> ReplaySummary:
    """Send the matching dead letters (of `refs` only, if given) that `group` has not replayed yet
    back to the intake topic of their priority, with `attempt` 1 and `replayed-from`.

    Deliveries are awaited before each commit of the ledger, every `REPLAY_CHUNK` records and at
    the end; a failure raises, leaving the ledger at its last commit.
    """
    summary = ReplaySummary(group or default_replay_group(topology))
    intake = [topology.intake_topic(p) for p in topology.priorities]
    default_priority = resolve_priority(topology, None)
    async with (
        _open_dlq(settings, topology, summary.group, also_needs=intake) as dlq,
        Producer(settings, topology) as producer,
    ):
        ledger = load_ledger(summary.group, dlq.topic, dlq.end, await committed_with_metadata(settings, summary.group))
        for partition, book in ledger.items():
            if book.highest >= dlq.end[partition]:
                raise StreamprocError(
                    f"replay group {summary.group!r} has replayed offset {book.highest} of {dlq.topic} partition "
                    f"{partition}, which ends at {dlq.end[partition]}: was the topic recreated? Use another --group"
                )
            ledger[partition] = book.forget_below(dlq.begin[partition])
        wanted: set[tuple[int, int]] | None = None
        start: dict[int, int] = {p: book.committed for p, book in ledger.items()}
        stop: dict[int, int] | None = None
        if refs is None:
            summary.not_read = sum(book.committed - dlq.begin[p] for p, book in ledger.items())
        else:
            wanted = set(dlq.locate(refs))
            start, stop = {}, {}
            for partition, offset in wanted:
                start[partition] = min(offset, start.get(partition, offset))
                stop[partition] = max(offset + 1, stop.get(partition, 0))

        def report(scanned: int, total: int) -> None:
            if progress is not None:
                progress(ReplayProgress(scanned, total, summary.sent))

        deliveries: list[asyncio.Future[Any]] = []
        async with aclosing(dlq.read(start, stop, report)) as letters:
            async for letter in letters:
                if wanted is not None:
                    if (letter.partition, letter.offset) not in wanted:
                        continue
                    wanted.discard((letter.partition, letter.offset))
                if not selection.matches(letter):
                    continue
                book = ledger[letter.partition]
                if book.holds(letter.offset):
                    summary.already_replayed += 1
                    continue
                if book.size_with(letter.offset) > max_metadata_bytes:
                    summary.stopped_at = letter
                    break
                priority = letter.priority if letter.priority in topology.priorities else default_priority
                topic = topology.intake_topic(priority)
                headers = replay_headers(letter.headers | {PRIORITY: priority}, letter.position)
                deliveries.append(await producer.send_record(topic, letter.value, key=letter.key, headers=headers))
                book.add(letter.offset)
                summary.by_task[letter.task or NO_TASK] += 1
                summary.by_topic[topic] += 1
                if len(deliveries) >= REPLAY_CHUNK:
                    await _commit(dlq, ledger, deliveries, summary.group, max_metadata_bytes)
        await _commit(dlq, ledger, deliveries, summary.group, max_metadata_bytes)
        summary.not_found = [f"{p}:{o}" for p, o in sorted(wanted or ())]
    return summary


async def _commit(
    dlq: _DlqReader,
    ledger: Mapping[int, PartitionLedger],
    deliveries: list[asyncio.Future[Any]],
    group: str,
    max_metadata_bytes: int,
) -> None:
    """Wait until the broker acknowledged every record sent, then commit the whole ledger (which also
    renews the group's offsets against `offsets.retention.minutes`)."""
    await asyncio.gather(*deliveries)
    deliveries.clear()
    try:
        await dlq.consumer.commit({dlq.tp(p): (book.committed, book.encode()) for p, book in ledger.items()})
    except OffsetMetadataTooLargeError:
        raise StreamprocError(
            f"the broker refused the ledger of replay group {group!r} as too large (its offset.metadata.max.bytes "
            f"is below {max_metadata_bytes}): the records sent since the last commit will be replayed again"
        ) from None
