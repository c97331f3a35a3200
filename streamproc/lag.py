"""Consumer lag of a group, and the replicas KEDA's Kafka scaler would ask for (SPEC §6).

KEDA's formula (kedacore/keda `pkg/scalers/kafka_scaler.go`, see KAFKA-NOTES), for one trigger:
a partition's lag is end offset - committed offset, or the end offset itself when the group never
committed it (`offsetResetPolicy: earliest`); `totalLag` sums them; unless `allowIdleConsumers`,
if `totalLag / lagThreshold` (integer division) exceeds the partition count, `totalLag` becomes
partitions * lagThreshold; the HPA then wants ceil(totalLag / lagThreshold) replicas. With one
trigger per intake topic and route (what `streamproc lag` assumes), the HPA takes the largest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from streamproc import admin
from streamproc.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    start: int  # log start offset
    end: int
    committed: int | None  # None: the group never committed this partition

    @property
    def lag(self) -> int:
        """Records not yet processed: from the committed offset, or from the log start (where a new group begins)."""
        return max(0, self.end - (self.start if self.committed is None else self.committed))

    @property
    def keda_lag(self) -> int:
        """The lag as KEDA counts it: the end offset itself when never committed."""
        return self.end if self.committed is None else max(0, self.end - self.committed)


def keda_replicas(partitions: Sequence[PartitionLag], lag_threshold: int) -> int:
    """Replicas one KEDA Kafka trigger over `partitions` asks for (before min/max replicas)."""
    total = sum(p.keda_lag for p in partitions)
    if total // lag_threshold > len(partitions):
        total = len(partitions) * lag_threshold
    return math.ceil(total / lag_threshold)


async def read_lag(settings: KafkaSettings, group: str, topics: list[str]) -> list[PartitionLag]:
    """The lag of `group` on every partition of the existing `topics`, in topic then partition order."""
    bounds = await admin.log_bounds(settings, topics)
    committed = await admin.committed_offsets(settings, group)
    order = {topic: i for i, topic in enumerate(topics)}
    return [
        PartitionLag(tp.topic, tp.partition, start, end, committed.get(tp))
        for tp, (start, end) in sorted(bounds.items(), key=lambda item: (order[item[0].topic], item[0].partition))
    ]
