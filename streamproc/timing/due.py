"""`LookAhead`: the delayed tasks a scheduler holds in memory, those due within a window (SPEC §13).

Pure bookkeeping, no Kafka: the scheduler feeds it the records of its schedules partitions in
order (`offer` a schedule, `remove` on a tombstone) and pops what fell due.

- Bounded memory: a schedule due after the partition's horizon (`high`, the time of its last
  scan plus the window) is not kept; it is skipped, so a far-future record never blocks one
  due earlier behind it. Every half window the scheduler scans each partition again from its
  beginning (`rescan`), moving the horizon on: then only schedules due in (old horizon, new
  horizon] are taken (`low`, the old horizon, excludes those already held or fired), so a
  re-read never holds a schedule twice.
- Nothing read during a replay (the first read of a newly assigned partition, or a rescan) can
  fire before the replay has reached the offset where reading stood when it began (`caught_up`):
  until then a tombstone further on may still delete it. Such schedules are staged.
- A fired schedule's id stays `unconfirmed` until its tombstone is read back, and is refused
  meanwhile: whatever the timing of a rescan, it cannot be taken again.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from streamproc.timing.schedule_record import Entry

NO_END = 2**63  # a replay whose end offset is not known yet


@dataclass(slots=True)
class _Partition:
    high: int  # schedules due after this are left to a later scan
    low: int | None = None  # during a rescan: schedules due at or before this are held or fired already
    replay_end: int | None = None  # the replay runs up to this offset; None: tailing
    staged: dict[str, Entry] = field(default_factory=dict)


class LookAhead:
    """Schedules due within `window_ms`, by schedules partition; see the module docstring."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._heap: list[tuple[int, int, str, Entry]] = []
        self._live: dict[str, Entry] = {}
        self._unconfirmed: dict[str, int] = {}  # fired id → its schedules partition
        self._partitions: dict[int, _Partition] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        """The schedules held (ready or staged)."""
        return len(self._live) + sum(len(p.staged) for p in self._partitions.values())

    @property
    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def assign(self, partition: int, now_ms: int, end_offset: int | None = None) -> None:
        """A newly assigned partition, read from its beginning up to `end_offset` (`set_end` once known)."""
        self.revoke(partition)
        self._partitions[partition] = _Partition(high=now_ms + self.window_ms, replay_end=_end(end_offset))

    def set_end(self, partition: int, end_offset: int) -> None:
        """The end of a newly assigned partition's first read."""
        state = self._partitions.get(partition)
        if state is not None and state.replay_end == NO_END:
            state.replay_end = end_offset

    def revoke(self, partition: int) -> None:
        """Forget a partition and everything held from it."""
        if self._partitions.pop(partition, None) is None:
            return
        for task_id in [i for i, entry in self._live.items() if entry.source_partition == partition]:
            del self._live[task_id]
        for task_id in [i for i, p in self._unconfirmed.items() if p == partition]:
            del self._unconfirmed[task_id]
        self._compact()

    def replaying(self, partition: int) -> bool:
        state = self._partitions.get(partition)
        return state is not None and state.replay_end is not None

    def loading(self, partition: int) -> bool:
        """Whether a newly assigned partition still waits for its end offset."""
        state = self._partitions.get(partition)
        return state is not None and state.replay_end == NO_END

    def rescan(self, partition: int, position: int, now_ms: int) -> bool:
        """Begin a rescan of `partition`, which has been read up to `position` (the caller seeks it to its
        beginning when this returns True; False: it is still being read from its beginning)."""
        state = self._partitions.get(partition)
        if state is None or state.replay_end is not None:
            return False
        state.low, state.high = state.high, max(state.high, now_ms + self.window_ms)
        state.replay_end = position
        return True

    def offer(self, offset: int, entry: Entry) -> bool:
        """A schedule read at `offset` of its partition; True if it is now held."""
        state = self._partitions.get(entry.source_partition)
        if state is None or entry.task_id in self._unconfirmed:
            return False
        if state.replay_end is not None and offset >= state.replay_end:
            self._finish(state)
        if entry.due_ms > state.high:
            return False
        if state.replay_end is None:
            self._push(entry)
            return True
        if state.low is not None and entry.due_ms <= state.low:
            return False
        state.staged[entry.task_id] = entry
        return True

    def remove(self, partition: int, offset: int, task_id: str) -> None:
        """A tombstone read at `offset`: `task_id` fired or was cancelled."""
        state = self._partitions.get(partition)
        if state is None:
            return
        if state.replay_end is not None and offset >= state.replay_end:
            self._finish(state)
        state.staged.pop(task_id, None)
        self._unconfirmed.pop(task_id, None)
        entry = self._live.get(task_id)
        if entry is not None and entry.source_partition == partition:
            del self._live[task_id]

    def caught_up(self, partition: int, position: int) -> None:
        """`partition` has been read up to `position`: a replay that got there is over."""
        state = self._partitions.get(partition)
        if state is not None and state.replay_end is not None and position >= state.replay_end:
            self._finish(state)

    def next_due(self) -> int | None:
        """When the earliest schedule held falls due (ms), None when none is held."""
        while self._heap and self._live.get(self._heap[0][2]) is not self._heap[0][3]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int, limit: int) -> list[Entry]:
        """Up to `limit` schedules due at `now_ms`, earliest first; each is `unconfirmed` until its
        tombstone is read (`remove`)."""
        due: list[Entry] = []
        while len(due) < limit and (at := self.next_due()) is not None and at <= now_ms:
            entry = heapq.heappop(self._heap)[3]
            del self._live[entry.task_id]
            self._unconfirmed[entry.task_id] = entry.source_partition
            due.append(entry)
        return due

    def _push(self, entry: Entry) -> None:
        self._live[entry.task_id] = entry
        heapq.heappush(self._heap, (entry.due_ms, next(self._seq), entry.task_id, entry))
        if len(self._heap) > 2 * len(self._live) + 1024:
            self._compact()

    def _finish(self, state: _Partition) -> None:
        staged, state.staged = state.staged, {}
        state.replay_end = state.low = None
        for entry in staged.values():
            if entry.task_id not in self._unconfirmed:
                self._push(entry)

    def _compact(self) -> None:
        """Drop heap items of schedules no longer held."""
        self._heap = [item for item in self._heap if self._live.get(item[2]) is item[3]]
        heapq.heapify(self._heap)


def _end(end_offset: int | None) -> int:
    return NO_END if end_offset is None else end_offset
