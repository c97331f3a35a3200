"""Commit-after-success bookkeeping for one partition (SPEC §5).

The committed offset is the lowest unfinished offset, or the next offset to fetch when nothing
is unfinished, so it never passes a task that has not finished. Offsets are tracked as a set of
unfinished ones, not as "last + 1", because transaction markers and compaction leave gaps
(KAFKA-NOTES "Commits"). Offsets arrive in increasing order and finish in any order: a deque of
fetched offsets plus the set of finished ones that are not yet at its head keeps each step O(1)
amortised.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Unfinished offsets of one partition, and the offset that is safe to commit."""

    __slots__ = ("_committed", "_finished", "_next_fetch", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # fetched, in offset order, head not yet finished
        self._finished: set[int] = set()  # finished, but behind an unfinished head
        self._next_fetch: int | None = None
        self._committed: int | None = None

    def fetched(self, offset: int) -> None:
        """A record at `offset` was fetched and is now unfinished."""
        if self._next_fetch is not None and offset < self._next_fetch:
            raise ValueError(f"offset {offset} fetched after {self._next_fetch - 1}: offsets must grow")
        self._pending.append(offset)
        self._next_fetch = offset + 1

    def finished(self, offset: int) -> None:
        """The task at `offset` finished (succeeded, or its retry/DLQ record was acknowledged)."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            finished = self._finished
            while pending and pending[0] in finished:
                finished.remove(pending.popleft())
        else:
            self._finished.add(offset)

    @property
    def unfinished(self) -> int:
        return len(self._pending) - len(self._finished)

    def committable(self) -> int | None:
        """The offset to commit: the lowest unfinished, else the next to fetch; None before any fetch."""
        return self._pending[0] if self._pending else self._next_fetch

    def to_commit(self) -> int | None:
        """The committable offset if it moved since the last `committed()`, else None."""
        offset = self.committable()
        return offset if offset is not None and offset != self._committed else None

    def committed(self, offset: int) -> None:
        """The broker acknowledged a commit of `offset`."""
        self._committed = offset

    @property
    def last_commit(self) -> int | None:
        """The offset last acknowledged by `committed()`, None before the first."""
        return self._committed
