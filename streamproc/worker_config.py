"""`WorkerConfig`: how one worker process runs (the `streamproc worker` flags, SPEC §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamproc import offsetmap
from streamproc.scheduling import Ordering

METADATA_MAX_AGE_MS = 15_000


@dataclass(frozen=True)
class WorkerConfig:
    group: str = "streamproc"
    concurrency: int = 64
    prefetch: int = 256  # at most this many fetched, not started records per partition
    ordering: Ordering = Ordering.KEY
    shutdown_timeout: float = 30.0  # also bounds the wait for running tasks on revocation
    commit_interval: float = 1.0
    # Most offsets of a partition between its lowest unfinished one and the next fetch: bounds what
    # a slow task holds back, what a crash re-runs and the commit's offset map (which must fit).
    max_uncommitted: int = 10_000
    sync_threads: int = 16
    # Slots only the highest priority may take, so its tasks start at once on a worker saturated
    # by lower ones; None: one in 64, at least one from concurrency 8.
    reserved_slots: int | None = None
    statuses: bool = True  # write status records (SPEC §12); off, results and de-duplication are off too

    def __post_init__(self) -> None:
        if not 1 <= self.max_uncommitted <= offsetmap.MAX_SPAN:
            raise ValueError(f"max_uncommitted must be within 1..{offsetmap.MAX_SPAN}, not {self.max_uncommitted}")

    @property
    def top_priority_slots(self) -> int:
        if self.reserved_slots is not None:
            return min(self.reserved_slots, self.concurrency - 1)
        return max(1, self.concurrency // 64) if self.concurrency >= 8 else 0

    def consumer_kwargs(self, longest_wait_s: float) -> dict[str, Any]:
        """The group consumer's settings that follow from this config; `longest_wait_s` is the
        longest the worker's fetching may pause while every buffer is full."""
        return {
            "group_id": self.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            # An aborted transaction's records are no tasks; the markers and the aborted records
            # aiokafka skips leave gaps, which a commit passes once nothing before them is unfinished.
            "isolation_level": "read_committed",
            # Revocation may wait this long for running tasks (KAFKA-NOTES "Rebalances").
            "rebalance_timeout_ms": int((self.shutdown_timeout + 15) * 1000),
            "max_poll_interval_ms": int((max(300.0, longest_wait_s) + 60) * 1000),
            # A declared topic deleted and created again is consumed within this (a rebalance follows).
            "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        }
