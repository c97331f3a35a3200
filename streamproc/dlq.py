"""Dead letters: read the DLQ, and replay dead letters to intake exactly once per replay group (SPEC §6).

Reading never joins or commits a consumer group: it assigns the DLQ's partitions, seeks, and
stops at the end offsets taken when it began, so a DLQ that keeps growing cannot keep a command
running.

Replay remembers what it sent in a consumer group of its own (the ledger). Per DLQ partition the
group's committed offset is the lowest offset not yet replayed, and the commit's metadata lists
the replayed offsets above it as ranges (`"12-40,45,50-51"`): a filtered replay leaves gaps that a
plain committed offset could not express. The ledger is committed only after the broker
acknowledged the replayed records, so a crash replays some records twice, never none
(at-least-once).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetMetadataTooLargeError
from aiokafka.structs import OffsetAndMetadata

from streamproc import lenient_decoding
from streamproc.admin import admin_client, committed_with_metadata, topic_partitions
from streamproc.envelope import (
    ATTEMPT,
    DLQ_REASON,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    ERROR_TYPE,
    FAILED_AT,
    MAX_TIME_MS,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    PRIORITY,
    TASK,
    TASK_ID,
    decode_headers,
    int_header,
    replay_headers,
)
from streamproc.errors import StreamprocError
from streamproc.producer import Producer, resolve_priority
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

MAX_METADATA_BYTES = 4096  # the broker's `offset.metadata.max.bytes` default
STALL_S = 30.0  # a read that makes no progress this long fails instead of hanging
REPLAY_CHUNK = 5_000  # records sent before the deliveries are awaited and the ledger committed

NO_TASK = "(no task)"  # how summaries and listings name a dead letter without a task header

LetterRef = tuple[int | None, int]
"""A dead letter as the user names it: (partition, offset), the partition None for a bare offset."""


def parse_ref(text: str) -> LetterRef:
    """`PARTITION:OFFSET` or a bare `OFFSET` (the id `dlq list` shows)."""
    partition, sep, offset = text.strip().rpartition(":")
    try:
        ref = (int(partition) if sep else None, int(offset))
    except ValueError:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET or OFFSET") from None
    if ref[1] < 0 or (ref[0] is not None and ref[0] < 0):
        raise ValueError(f"{text!r}: partitions and offsets are not negative")
    return ref


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record with its headers as text and the SPEC §3 headers as properties."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @classmethod
    def from_record(cls, record: Any) -> DeadLetter:
        """From an aiokafka `ConsumerRecord`; undecodable header bytes are replaced, never fatal."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            decode_headers(record.headers),
        )

    @property
    def id(self) -> str:
        """What `dlq list` shows and `dlq show`/`replay --offsets` accept."""
        return f"{self.partition}:{self.offset}"

    @property
    def position(self) -> str:
        """What a replayed record's `replayed-from` header carries."""
        return f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def task(self) -> str | None:
        return self.headers.get(TASK) or None

    @property
    def reason(self) -> str | None:
        return self.headers.get(DLQ_REASON) or None

    @property
    def priority(self) -> str | None:
        return self.headers.get(PRIORITY) or None

    @property
    def attempt(self) -> int:
        return int_header(self.headers, ATTEMPT, 1)

    @property
    def error_type(self) -> str:
        return self.headers.get(ERROR_TYPE, "")

    @property
    def error_message(self) -> str:
        return self.headers.get(ERROR_MESSAGE, "")

    @property
    def error_traceback(self) -> str | None:
        """The failing attempt's traceback (its last 8 KiB); None for a poison record or a letter
        written before tracebacks were kept."""
        return self.headers.get(ERROR_TRACEBACK) or None

    @property
    def failed_at_ms(self) -> int:
        """`failed-at`, else the record's timestamp; 0 if that is out of range too (any client may
        write the DLQ), so a listing can always show it as a date."""
        return int_header(self.headers, FAILED_AT, self.timestamp if 0 <= self.timestamp <= MAX_TIME_MS else 0)

    @property
    def task_id(self) -> str | None:
        return self.headers.get(TASK_ID) or None

    @property
    def original_position(self) -> str | None:
        """`<topic>-<partition>-<offset>` of the intake record the task failed from."""
        parts = [self.headers.get(name) for name in (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)]
        return "-".join(p for p in parts if p) if all(parts) else None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command works on: all, or those of one task and/or reason."""

    task: str | None = None
    reason: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (self.task is None or letter.task == self.task) and (self.reason is None or letter.reason == self.reason)


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
    """The most recent matching dead letters, oldest first, and how many matched in all."""

    letters: list[DeadLetter]
    matched: int


async def list_dead_letters(
    settings: KafkaSettings,
    topology: Topology,
    selection: Selection = Selection(),
    limit: int | None = None,
    progress: Progress | None = None,
) -> Listing:
    """The `limit` most recent (by record timestamp) dead letters that match, reading the whole DLQ
    while keeping only those in memory."""
    newest: list[tuple[int, int, int, DeadLetter]] = []
    matched = 0
    async with _open_dlq(settings, topology) as dlq, aclosing(dlq.read(dict(dlq.begin), progress=progress)) as letters:
        async for letter in letters:
            if not selection.matches(letter):
                continue
            matched += 1
            item = (letter.timestamp, letter.partition, letter.offset, letter)
            if limit is None or len(newest) < limit:
                heapq.heappush(newest, item)
            else:
                heapq.heappushpop(newest, item)
    return Listing([item[-1] for item in sorted(newest)], matched)


async def get_dead_letter(settings: KafkaSettings, topology: Topology, ref: LetterRef) -> DeadLetter:
    """The dead letter `ref` names; a bare offset must be held by one DLQ partition only."""
    async with _open_dlq(settings, topology) as dlq:
        [(partition, offset)] = dlq.locate([ref])
        async with aclosing(dlq.read({partition: offset}, {partition: offset + 1})) as letters:
            async for letter in letters:
                if letter.offset == offset:
                    return letter
    raise StreamprocError(f"no dead letter at {partition}:{offset}")


def _range_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _separators(ranges: int) -> int:
    return max(ranges - 1, 0)


class PartitionLedger:
    """What one replay group has replayed of one DLQ partition: every offset below `committed`, and
    the offsets in `ranges` (inclusive, ascending, above `committed`, never touching each other).

    Adding an offset keeps that shape: it joins its neighbours and, once the ranges reach down to
    `committed`, moves `committed` over them. The metadata's size is kept up to date at each step,
    so checking it against Kafka's limit costs nothing per record.
    """

    __slots__ = ("_ranges", "_size", "committed")

    def __init__(self, committed: int = 0, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.committed = committed
        self._ranges = list(ranges)
        self._size = sum(len(_range_text(lo, hi)) for lo, hi in self._ranges) + _separators(len(self._ranges))

    @classmethod
    def decode(cls, committed: int, metadata: str) -> PartitionLedger:
        """The ledger of a commit; ValueError says what is wrong with metadata it did not write."""
        ranges: list[tuple[int, int]] = []
        for item in metadata.split(",") if metadata else ():
            lo_text, dash, hi_text = item.partition("-")
            if not lo_text.isdigit() or (dash and not hi_text.isdigit()):
                raise ValueError(f"{item!r} is not OFFSET or FIRST-LAST")
            lo, hi = int(lo_text), int(hi_text) if dash else int(lo_text)
            floor = ranges[-1][1] + 2 if ranges else committed + 1
            if lo > hi or lo < floor:
                raise ValueError(f"{item!r} does not start above {floor - 1}, or ends before it starts")
            ranges.append((lo, hi))
        return cls(committed, ranges)

    def encode(self) -> str:
        return ",".join(_range_text(lo, hi) for lo, hi in self._ranges)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(self._ranges)

    @property
    def size(self) -> int:
        """Bytes of the encoded metadata (it is ASCII)."""
        return self._size

    @property
    def highest(self) -> int:
        """The highest replayed offset, -1 when none."""
        return self._ranges[-1][1] if self._ranges else self.committed - 1

    def holds(self, offset: int) -> bool:
        return self._plan(offset) is None

    def size_with(self, offset: int) -> int:
        """The metadata's size once `offset` is added."""
        plan = self._plan(offset)
        return self._size if plan is None else plan[3]

    def add(self, offset: int) -> None:
        """Record `offset` as replayed (adding one already held changes nothing)."""
        plan = self._plan(offset)
        if plan is not None:
            removed, replacement, self.committed, self._size = plan
            self._ranges[removed] = replacement

    def _plan(self, offset: int) -> tuple[slice, list[tuple[int, int]], int, int] | None:
        """How adding `offset` changes the ledger, None if it holds `offset` already: ranges[removed]
        become `replacement`, then the new committed offset and size."""
        ranges = self._ranges
        i = bisect.bisect_right(ranges, offset, key=lambda r: r[0])  # ranges[:i] start at or below offset
        if offset < self.committed or (i > 0 and ranges[i - 1][1] >= offset):
            return None
        joins_left = i > 0 and ranges[i - 1][1] == offset - 1
        joins_right = i < len(ranges) and ranges[i][0] == offset + 1
        removed = slice(i - joins_left, i + joins_right)
        gone = ranges[removed]
        size = self._size - sum(len(_range_text(lo, hi)) for lo, hi in gone) - _separators(len(ranges))
        if offset == self.committed:  # no range lies below it: the committed offset moves over the one above
            return removed, [], gone[-1][1] + 1 if gone else offset + 1, size + _separators(len(ranges) - len(gone))
        joined = (gone[0][0] if joins_left else offset, gone[-1][1] if joins_right else offset)
        size += len(_range_text(*joined)) + _separators(len(ranges) - len(gone) + 1)
        return removed, [joined], self.committed, size

    def forget_below(self, offset: int) -> PartitionLedger:
        """This ledger with offsets below `offset` counted as done: they left the log (retention), and
        gaps there, which nobody can fill any more, would only take up metadata."""
        committed = max(self.committed, offset)
        ranges = [(max(lo, committed), hi) for lo, hi in self._ranges if hi >= committed]
        if ranges and ranges[0][0] == committed:
            committed = ranges.pop(0)[1] + 1
        return PartitionLedger(committed, ranges)


def load_ledger(
    group: str, topic: str, partitions: Iterable[int], committed: Mapping[TopicPartition, OffsetAndMetadata]
) -> dict[int, PartitionLedger]:
    """The ledger of every partition of `topic` from the group's commits (none: nothing replayed)."""
    ledger = {}
    for partition in partitions:
        commit = committed.get(TopicPartition(topic, partition))
        try:
            ledger[partition] = PartitionLedger.decode(commit.offset, commit.metadata) if commit else PartitionLedger()
        except ValueError as exc:
            raise StreamprocError(
                f"replay group {group!r} has a commit on {topic} partition {partition} that is not a replay ledger "
                f"({exc}; metadata {commit.metadata if commit else ''!r}): is the group used by something else? "
                "Replay with another --group"
            ) from None
    return ledger


def default_replay_group(topology: Topology) -> str:
    return f"{topology.dlq_topic}-replay"


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
