"""Which fetched task starts next: strict priority, within the ordering rules of SPEC §5.

Pure logic, no Kafka and no asyncio. A job carries its partition, its priority rank (0 is the
highest) and its lane. Jobs of one lane start one at a time, in the order they were added (which
is offset order within a partition): the lane is the key in `key` ordering (across topics, so
one key's high and low priority tasks do not overlap in a process either), the partition in
`partition` ordering, and None (no constraint) in `unordered` ordering or for a record without a
key. Among jobs free to start, the highest priority starts first, oldest first within a priority.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")
Partition = tuple[str, int]


class Ordering(StrEnum):
    KEY = "key"
    PARTITION = "partition"
    UNORDERED = "unordered"

    def lane(self, partition: Partition, key: bytes | None) -> Hashable | None:
        if self is Ordering.KEY:
            return None if key is None else key
        if self is Ordering.PARTITION:
            return partition
        return None


@dataclass(slots=True, eq=False)
class Job(Generic[T]):
    partition: Partition
    offset: int
    rank: int
    lane: Hashable | None
    item: T
    started: bool = False
    arrival: int = 0  # set by `Scheduler.add`: the job's place in the oldest-first order


@dataclass(slots=True)
class _Lane(Generic[T]):
    holder: Job[T]  # ready to start, or running
    waiting: deque[Job[T]] = field(default_factory=deque)


class Scheduler(Generic[T]):
    """Buffered jobs, waiting for a concurrency slot and for their lane."""

    def __init__(self, ranks: int) -> None:
        self._ready: list[deque[Job[T]]] = [deque() for _ in range(ranks)]  # in arrival order
        self._released: list[list[tuple[int, Job[T]]]] = [[] for _ in range(ranks)]  # heaps by arrival
        self._lanes: dict[Hashable, _Lane[T]] = {}
        self._buffered: dict[Partition, int] = {}
        self._arrivals = 0

    def add(self, job: Job[T]) -> None:
        self._arrivals += 1
        job.arrival = self._arrivals
        self._buffered[job.partition] = self._buffered.get(job.partition, 0) + 1
        if job.lane is None:
            self._ready[job.rank].append(job)
            return
        lane = self._lanes.get(job.lane)
        if lane is None:
            self._lanes[job.lane] = _Lane(job)
            self._ready[job.rank].append(job)
        else:
            lane.waiting.append(job)

    def pop(self, max_rank: int | None = None) -> Job[T] | None:
        """The next job to start (of rank <= `max_rank` if given), marked started; None when none may."""
        ranks = len(self._ready) if max_rank is None else max_rank + 1
        for rank in range(ranks):
            queue, released = self._ready[rank], self._released[rank]
            if released and (not queue or released[0][0] < queue[0].arrival):
                job = heapq.heappop(released)[1]
            elif queue:
                job = queue.popleft()
            else:
                continue
            job.started = True
            self._buffered[job.partition] -= 1
            return job
        return None

    def done(self, job: Job[T]) -> None:
        """A started job finished: the next job of its lane may start."""
        if job.lane is not None:
            self._pass_lane(job.lane)

    def _pass_lane(self, key: Hashable) -> None:
        lane = self._lanes[key]
        if lane.waiting:
            holder = lane.holder = lane.waiting.popleft()
            heapq.heappush(self._released[holder.rank], (holder.arrival, holder))
        else:
            del self._lanes[key]

    @property
    def waiting(self) -> int:
        """All buffered jobs not yet started."""
        return sum(self._buffered.values())

    def buffered(self, partition: Partition) -> int:
        """Jobs of `partition` added and not yet started (the prefetch buffer)."""
        return self._buffered.get(partition, 0)

    def drop(self, partitions: Iterable[Partition]) -> int:
        """Forget the buffered (not started) jobs of `partitions`, e.g. on revocation; their count."""
        gone = set(partitions)
        dropped = 0
        for rank, queue in enumerate(self._ready):
            kept = deque(job for job in queue if job.partition not in gone)
            dropped += len(queue) - len(kept)
            self._ready[rank] = kept
        for rank, released in enumerate(self._released):
            kept_released = [entry for entry in released if entry[1].partition not in gone]
            dropped += len(released) - len(kept_released)
            heapq.heapify(kept_released)
            self._released[rank] = kept_released
        for key, lane in list(self._lanes.items()):
            kept_waiting = deque(job for job in lane.waiting if job.partition not in gone)
            dropped += len(lane.waiting) - len(kept_waiting)
            lane.waiting = kept_waiting
            if lane.holder.partition in gone and not lane.holder.started:
                self._pass_lane(key)
        for partition in gone:
            self._buffered.pop(partition, None)
        return dropped
