"""The replay ledger: what a replay group has replayed of each DLQ partition (SPEC §6).

Per DLQ partition the group's committed offset is the lowest offset not yet replayed, and the
commit's metadata lists the replayed offsets above it as ranges (`"12-40,45,50-51"`): a filtered
replay leaves gaps that a plain committed offset could not express. `dlq replay` writes it;
`dlq list` and `dlq show` read it to mark the dead letters already replayed.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streamproc.admin import committed_with_metadata
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology


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


async def replayed_positions(
    settings: KafkaSettings, group: str, topic: str, positions: Collection[tuple[int, int]]
) -> set[tuple[int, int]]:
    """Which of `positions` ((partition, offset) of `topic`) the replay group `group` has replayed,
    from its ledger as committed now (a group that never replayed: none)."""
    if not positions:
        return set()
    ledger = load_ledger(
        group, topic, {partition for partition, _ in positions}, await committed_with_metadata(settings, group)
    )
    return {(partition, offset) for partition, offset in positions if ledger[partition].holds(offset)}
