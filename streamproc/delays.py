"""Jobs that may not start before a moment: tier records before their `retry-at`, rate-limited
tasks before their reserved start (SPEC §5).

Pure logic. The worker releases due jobs from the event loop and sleeps until `next_due()`, so
waiting costs neither a busy loop nor a concurrency slot; per-partition counts let those jobs
count against the partition's prefetch, keeping memory bounded whatever the backlog.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from typing import Generic, TypeVar

from streamproc.scheduling import Partition

T = TypeVar("T")


class DelayQueue(Generic[T]):
    """Items with a due time, released in due-time order (insertion order among equals)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Partition, T]] = []
        self._sequence = itertools.count()
        self._counts: Counter[Partition] = Counter()

    def add(self, partition: Partition, due: float, item: T) -> None:
        heapq.heappush(self._heap, (due, next(self._sequence), partition, item))
        self._counts[partition] += 1

    def pop_due(self, now: float, limit: int | None = None) -> list[T]:
        """The items due at `now` (at most `limit`), earliest first, removed from the queue."""
        due: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            _, _, partition, item = heapq.heappop(heap)
            self._counts[partition] -= 1
            due.append(item)
        return due

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def count(self, partition: Partition) -> int:
        return self._counts[partition]

    def __len__(self) -> int:
        return len(self._heap)

    def drop(self, partitions: Iterable[Partition]) -> list[T]:
        """Remove and return the items of `partitions` (revoked)."""
        gone = set(partitions)
        dropped = [entry[3] for entry in self._heap if entry[2] in gone]
        self._heap = [entry for entry in self._heap if entry[2] not in gone]
        heapq.heapify(self._heap)
        for partition in gone:
            del self._counts[partition]
        return dropped
