"""Reading the workers' journal (see app.py) and what it says about each fault."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    event: str  # "start" or "done"
    task_id: str
    pid: int
    at: float  # wall-clock seconds
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Fault:
    """One fault: when it struck, which workers it hit and, for an outage, when it ended.

    A worker kill, SIGTERM or freeze hits that worker; a broker kill or freeze, or a member joining
    (a rebalance), hits every live worker.
    """

    kind: str
    at: float
    pids: frozenset[int]
    until: float | None = None  # the broker answered again, or the frozen process went on


class Journal:
    """The journal file, read incrementally: polling it must not re-read megabytes each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[Entry] = []
        self.done = Counter[str]()
        self._position = 0

    def refresh(self) -> None:
        """Read the lines appended since the last call (a line still being written waits)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            file.seek(self._position)
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._position += len(complete)
        for raw in complete.decode().splitlines():
            event, task_id, pid, at, topic, partition, offset = raw.split()
            entry = Entry(event, task_id, int(pid), float(at), topic, int(partition), int(offset))
            self.entries.append(entry)
            if event == "done":
                self.done[task_id] += 1

    @property
    def duplicates(self) -> int:
        """Done lines beyond the first of each task."""
        return sum(self.done.values()) - len(self.done)

    def running_pids(self) -> set[int]:
        return {entry.pid for entry in self.entries}

    def in_flight(self, at: float, pids: frozenset[int]) -> int:
        """Runs started by `pids` at or before `at` and not done by then."""
        open_runs = Counter[tuple[str, int]]()
        for entry in self.entries:
            if entry.at > at or entry.pid not in pids:
                continue
            open_runs[(entry.task_id, entry.pid)] += 1 if entry.event == "start" else -1
        return sum(n for n in open_runs.values() if n > 0)

    def finished_between(self, since: float, until: float, pids: frozenset[int]) -> int:
        return sum(1 for e in self.entries if e.event == "done" and e.pid in pids and since <= e.at <= until)

    def rerun_bound(self, fault: Fault, commit_interval: float) -> int:
        """SPEC §11's re-run bound for one fault: the runs in flight when it struck, plus those
        finished since the last commit (within one commit interval before it). During a broker
        outage nothing can be committed, so what finished until the broker answered counts too."""
        end = fault.at if fault.until is None else fault.until
        return self.in_flight(fault.at, fault.pids) + self.finished_between(fault.at - commit_interval, end, fault.pids)

    def last_start(self, task_id: str) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.task_id == task_id and e.event == "start"), None)
