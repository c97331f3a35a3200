"""Each consumed topic as a queue: pending, rates in and out, wait p95, and KEDA's decision.

Pure logic over the group's offsets (`lag.PartitionLag` samples taken every second by `live`):
pending is the lag `streamproc lag` shows (never a read of the intake topics), the incoming rate
is how fast the end offsets grow, the outgoing rate how fast the finished position (committed
offset plus the finished offsets above it) grows, both over the last `RATE_WINDOW_S`. The wait p95
comes from the workers' wait histograms (`board.Board.waits`), interpolated within a bucket as
Prometheus' `histogram_quantile` does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from streamproc.lag import LagReport, PartitionLag, keda_triggers, summarize
from streamproc.metrics import WAIT_BUCKETS
from streamproc.topology import CONSUMED_ROLES, Topology

RATE_WINDOW_S = 10.0


class QueueRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    role: str = Field(description="intake, route or tier")
    priority: str | None
    delay_s: float | None = Field(description="a retry tier's delay")
    partitions: int
    pending: int = Field(description="records not finished yet (the group's lag, as `streamproc lag` counts it)")
    in_per_s: float = Field(description="records written per second")
    out_per_s: float = Field(description="records finished per second")
    wait_p95_s: float | None = Field(description="95th percentile of enqueued-to-started in the last minute")
    keda_replicas: int | None = Field(description="what this KEDA trigger asks for (null: a tier, no trigger)")


def quantile(q: float, counts: Sequence[int], bounds: Sequence[float] = WAIT_BUCKETS) -> float | None:
    """The `q` quantile of a histogram (`counts` per bucket of `bounds`, then +Inf), None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank, below = q * total, 0
    for i, count in enumerate(counts):
        if below + count >= rank and count:
            if i >= len(bounds):
                return bounds[-1]  # in +Inf: the highest finite bound, as histogram_quantile does
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - below) / count
        below += count
    return bounds[-1]


class Queues:
    """Offset samples of the last `RATE_WINDOW_S`, turned into a row per consumed topic."""

    def __init__(self, topology: Topology, group: str, lag_threshold: int) -> None:
        self.group, self.lag_threshold = group, lag_threshold
        self._specs = [spec for spec in topology.topics() if spec.role in CONSUMED_ROLES]
        self.topics = topology.consumed_topics()
        self._triggers = keda_triggers(topology)
        self._samples: deque[tuple[float, list[PartitionLag]]] = deque()

    def add(self, at_s: float, partitions: list[PartitionLag]) -> None:
        self._samples.append((at_s, partitions))
        while len(self._samples) > 2 and self._samples[1][0] <= at_s - RATE_WINDOW_S:
            self._samples.popleft()

    def report(self) -> LagReport | None:
        """The latest sample as `streamproc lag` would show it (KEDA's decision included)."""
        if not self._samples:
            return None
        return summarize(self._samples[-1][1], self._triggers, self.group, self.lag_threshold)

    def rows(self, waits: dict[str, list[int]]) -> list[QueueRow]:
        report = self.report()
        if report is None:
            return []
        by_topic = {t.topic: t for t in report.topics}
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        span_s = last_at - first_at
        ins, outs = _rates(first, last, span_s)
        rows = []
        for spec in self._specs:
            lag = by_topic.get(spec.name)
            if lag is None:
                continue  # not on the cluster (yet)
            rows.append(
                QueueRow(
                    topic=spec.name,
                    role=spec.role,
                    priority=spec.priority,
                    delay_s=spec.delay_ms / 1000 if spec.delay_ms else None,
                    partitions=lag.partitions,
                    pending=lag.lag,
                    in_per_s=ins.get(spec.name, 0.0),
                    out_per_s=outs.get(spec.name, 0.0),
                    wait_p95_s=quantile(0.95, waits.get(spec.name, [])),
                    keda_replicas=lag.keda_replicas,
                )
            )
        return rows


def _done(p: PartitionLag) -> int:
    """The partition's finished position: everything below it, and `finished_ahead` above the commit."""
    return p.start if p.committed is None else p.committed + p.finished_ahead


def _rates(
    first: list[PartitionLag], last: list[PartitionLag], span_s: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Records written and finished per second per topic between two samples (a partition in only
    one of them, or whose offsets went back — a topic re-created — counts nothing)."""
    if span_s <= 0:
        return {}, {}
    before = {(p.topic, p.partition): p for p in first}
    ins: dict[str, float] = {}
    outs: dict[str, float] = {}
    for p in last:
        old = before.get((p.topic, p.partition))
        if old is None:
            continue
        ins[p.topic] = ins.get(p.topic, 0.0) + max(0, p.end - old.end) / span_s
        outs[p.topic] = outs.get(p.topic, 0.0) + max(0, _done(p) - _done(old)) / span_s
    return ins, outs
