"""Consumer lag of a group, and the replicas KEDA's Kafka scaler would ask for (SPEC §6).

KEDA's formula (kedacore/keda v2.21 `pkg/scalers/kafka_scaler.go`, the version the chart targets),
for one trigger: a partition's lag is end offset - committed offset, or end offset - log start
offset when the group never committed it (`offsetResetPolicy: earliest`; up to v2.20 KEDA counted
the end offset itself, too much once retention moved the log start); `totalLag` sums them; unless `allowIdleConsumers`,
if `totalLag / lagThreshold` (integer division) exceeds the partition count, `totalLag` becomes
partitions * lagThreshold; the HPA then wants ceil(totalLag / lagThreshold) replicas. With one
trigger per intake topic and route (what `streamproc lag` assumes), the HPA takes the largest.

The lag streamproc itself reports (`PartitionLag.lag`, the `streamproc_consumer_lag` gauge) is the
unfinished work: end offset - committed offset - the offsets above the commit that already
finished (the commit's offset map, `offsetmap`). KEDA cannot read that map, so its figure counts
finished work behind a slow task too, at most `--max-uncommitted` per partition.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamproc import admin, offsetmap
from streamproc.offsets import PartitionOffsets
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    start: int  # log start offset
    end: int
    committed: int | None  # None: the group never committed this partition
    finished_ahead: int = 0  # offsets above the committed one that finished (the commit's offset map)

    @property
    def lag(self) -> int:
        """Records not yet processed: from the committed offset (less those finished above it), or
        from the log start (where a new group begins)."""
        if self.committed is None:
            return max(0, self.end - self.start)
        return max(0, self.end - self.committed - self.finished_ahead)

    @property
    def keda_lag(self) -> int:
        """The lag as KEDA counts it: from the commit, or from the log start when never committed,
        and without the commit's offset map."""
        return max(0, self.end - (self.start if self.committed is None else self.committed))


def keda_replicas(partitions: Sequence[PartitionLag], lag_threshold: int) -> int:
    """Replicas one KEDA Kafka trigger over `partitions` asks for (before min/max replicas)."""
    total = sum(p.keda_lag for p in partitions)
    if total // lag_threshold > len(partitions):
        total = len(partitions) * lag_threshold
    return math.ceil(total / lag_threshold)


@dataclass(frozen=True, slots=True)
class TopicLag:
    """One topic's totals; `keda_replicas` is None for a topic that is no KEDA trigger (a retry tier)."""

    topic: str
    partitions: int
    lag: int
    keda_lag: int
    keda_replicas: int | None


@dataclass(frozen=True, slots=True)
class LagReport:
    """What `streamproc lag` shows: totals per topic, KEDA's decision, and the partitions behind them."""

    group: str
    lag_threshold: int
    topics: list[TopicLag]
    partitions: list[PartitionLag]

    @property
    def lag(self) -> int:
        return sum(t.lag for t in self.topics)

    @property
    def keda_replicas(self) -> int:
        """What KEDA sets: the largest of its triggers' (one per intake topic and route), 0 without any."""
        return max((t.keda_replicas for t in self.topics if t.keda_replicas is not None), default=0)

    @property
    def never_committed(self) -> bool:
        """The group committed nothing on these partitions (a new group, or a mistyped name)."""
        return all(p.committed is None for p in self.partitions)

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON-ready document (`streamproc lag --json`)."""
        return {
            "group": self.group,
            "lag_threshold": self.lag_threshold,
            "lag": self.lag,
            "keda_replicas": self.keda_replicas,
            "committed": not self.never_committed,
            "topics": [
                {
                    "topic": t.topic,
                    "partitions": t.partitions,
                    "lag": t.lag,
                    "keda_lag": t.keda_lag,
                    "keda_trigger": t.keda_replicas is not None,
                    "keda_replicas": t.keda_replicas,
                }
                for t in self.topics
            ],
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "start": p.start,
                    "end": p.end,
                    "committed": p.committed,
                    "finished_ahead": p.finished_ahead,
                    "lag": p.lag,
                }
                for p in self.partitions
            ],
        }


def keda_triggers(topology: Topology) -> set[str]:
    """The topics with a KEDA trigger each: intake topics and routes (not retry tiers: their lag includes
    retries not yet due)."""
    return {spec.name for spec in topology.topics() if spec.role in ("intake", "route")}


def summarize(
    partitions: Sequence[PartitionLag], triggers: Collection[str], group: str, lag_threshold: int
) -> LagReport:
    """Totals per topic (in the order of `partitions`) and the replicas of each KEDA trigger among `triggers`."""
    by_topic: dict[str, list[PartitionLag]] = {}
    for p in partitions:
        by_topic.setdefault(p.topic, []).append(p)
    topics = [
        TopicLag(
            topic,
            len(rows),
            sum(p.lag for p in rows),
            sum(p.keda_lag for p in rows),
            keda_replicas(rows, lag_threshold) if topic in triggers else None,
        )
        for topic, rows in by_topic.items()
    ]
    return LagReport(group, lag_threshold, topics, list(partitions))


class LagProbe:
    """Reads a group's lag with clients kept open, for callers that ask every second (`streamproc web`,
    `streamproc top`); `read_lag` is the one-shot form."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(**self._settings.client_kwargs())
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
        self._admin = self._consumer = None

    async def read(self, group: str, topics: list[str]) -> list[PartitionLag]:
        """The lag of `group` on every partition of the existing `topics`, in topic then partition order."""
        assert self._admin is not None and self._consumer is not None, "start() the probe first"
        found = await admin.topic_partitions(self._admin, topics)
        partitions = [TopicPartition(topic, p) for topic in topics for p in found.get(topic, ())]
        if not partitions:
            return []
        starts = await self._consumer.beginning_offsets(partitions)
        ends = await self._consumer.end_offsets(partitions)
        offsets = await self._admin.list_consumer_group_offsets(group)
        rows = []
        for tp in partitions:
            commit = offsets.get(tp)
            if commit is None or commit.offset < 0:
                rows.append(PartitionLag(tp.topic, tp.partition, starts[tp], ends[tp], None))
            else:
                done = offsetmap.decode(commit.offset, commit.metadata)
                rows.append(PartitionLag(tp.topic, tp.partition, starts[tp], ends[tp], commit.offset, len(done)))
        return rows


async def read_lag(settings: KafkaSettings, group: str, topics: list[str]) -> list[PartitionLag]:
    """The lag of `group` on every partition of the existing `topics`, in topic then partition order."""
    probe = LagProbe(settings)
    try:
        await probe.start()
        return await probe.read(group, topics)
    finally:
        await probe.stop()


async def owned_lag(
    consumer: AIOKafkaConsumer, trackers: Mapping[TopicPartition, PartitionOffsets]
) -> dict[TopicPartition, int]:
    """A worker's view of the partitions it owns (the `streamproc_consumer_lag` gauge): end offset -
    committed offset - the offsets above it that finished.

    The committed offset is the worker's last acknowledged commit, else the group's, else (never
    committed) the log start, where a new group begins. It queries the broker even when nothing is
    owned, so a caller also learns whether the broker answers.
    """
    trackers = dict(trackers)  # a revocation may remove partitions during the awaits
    owned = list(trackers)
    if not owned:
        await consumer.topics()
        return {}
    ends = await consumer.end_offsets(owned)
    committed: dict[TopicPartition, int | None] = {tp: trackers[tp].last_commit for tp in owned}
    for tp in [tp for tp, offset in committed.items() if offset is None]:
        committed[tp] = await consumer.committed(tp)
    never = [tp for tp, offset in committed.items() if offset is None]
    committed |= await consumer.beginning_offsets(never) if never else {}
    return {tp: max(0, end - (committed[tp] or 0) - trackers[tp].finished_ahead) for tp, end in ends.items()}
