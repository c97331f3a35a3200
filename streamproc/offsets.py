"""Commit-after-success bookkeeping for one partition (SPEC §5).

The committed offset is the lowest unfinished offset, or the next offset to fetch when nothing
is unfinished, so it never passes a task that has not finished. Offsets are tracked as a set of
unfinished ones, not as "last + 1", because transaction markers and compaction leave gaps
(KAFKA-NOTES "Commits"). Offsets arrive in increasing order and finish in any order: a deque of
fetched offsets plus the set of finished ones that are not yet at its head keeps each step O(1)
amortised.

Work finished behind a slow head is not lost at a hand-over: the commit carries those offsets in
its metadata (`offsetmap`), and the partition's next owner starts its tracker from that commit
and skips them. The span from the head to the next offset to fetch is what the worker bounds
(`open_span`), which bounds this tracker's memory, the metadata, and what a crash can re-run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from streamproc import offsetmap


class PartitionOffsets:
    """Unfinished offsets of one partition, and the commit (offset and metadata) that is safe to make."""

    __slots__ = ("_committed", "_finished", "_inherited", "_next_fetch", "_pending", "_version")

    def __init__(self, inherited: Iterable[int] = ()) -> None:
        self._pending: deque[int] = deque()  # fetched, in offset order, head not yet finished
        self._finished: set[int] = set()  # finished, but behind an unfinished head
        self._inherited = set(inherited)  # finished by a previous owner, above its commit
        self._next_fetch: int | None = None
        self._committed: tuple[int, int, bool] | None = None  # (offset, version, final) last acknowledged
        self._version = 0  # counts changes to what a commit would say

    def fetched(self, offset: int) -> bool:
        """A record at `offset` was fetched; False when a previous owner finished it (it counts as
        finished at once and must not run again)."""
        if self._next_fetch is not None and offset < self._next_fetch:
            raise ValueError(f"offset {offset} fetched after {self._next_fetch - 1}: offsets must grow")
        self._pending.append(offset)
        self._next_fetch = offset + 1
        if self._inherited and offset in self._inherited:
            self._inherited.discard(offset)
            self.finished(offset)
            return False
        return True

    def finished(self, offset: int) -> None:
        """The task at `offset` finished (succeeded, or its retry/DLQ record was acknowledged)."""
        self._version += 1
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            finished = self._finished
            while pending and pending[0] in finished:
                finished.remove(pending.popleft())
        else:
            self._finished.add(offset)

    def passed(self, position: int) -> None:
        """The consumer will next hand out `position` or later: it skipped the offsets before it that
        carry no task (transaction markers, aborted transactions, compacted records). With nothing
        unfinished, the commit moves past them too, so a partition ending in a marker shows no lag."""
        if not self._pending and self._next_fetch is not None and position > self._next_fetch:
            self._next_fetch = position
            self._version += 1

    @property
    def unfinished(self) -> int:
        return len(self._pending) - len(self._finished)

    @property
    def finished_ahead(self) -> int:
        """Finished offsets above the committable one: done work that lag must not count as backlog."""
        return len(self._finished)

    @property
    def open_span(self) -> int:
        """Offsets from the lowest unfinished one to the next to fetch: what a crash could re-run."""
        return self._next_fetch - self._pending[0] if self._pending and self._next_fetch is not None else 0

    def committable(self) -> int | None:
        """The offset to commit: the lowest unfinished, else the next to fetch; None before any fetch."""
        return self._pending[0] if self._pending else self._next_fetch

    def to_commit(self, at_ms: int | None = None, final: bool = False) -> tuple[int, str, int, bool] | None:
        """(offset, metadata, version, final) of a commit, if anything changed since the last
        acknowledged one (or it was not final and this one is), else None. The metadata lists the
        finished offsets above the committed one, and with `at_ms` notes the time and `final`
        (`offsetmap.encode`)."""
        offset = self.committable()
        if offset is None or self._committed in ((offset, self._version, True), (offset, self._version, final)):
            return None
        # Inherited offsets not fetched yet stay known too, should the partition move on again.
        done = self._finished.union(o for o in self._inherited if o > offset) if self._inherited else self._finished
        return offset, offsetmap.encode(offset, done, at_ms=at_ms, final=final), self._version, final

    def committed(self, offset: int, version: int, final: bool = False) -> None:
        """The broker acknowledged the commit `to_commit` returned."""
        self._committed = (offset, version, final)

    @property
    def last_commit(self) -> int | None:
        """The offset last acknowledged by `committed()`, None before the first."""
        return self._committed[0] if self._committed else None
