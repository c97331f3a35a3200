"""Fetched tasks that have not started yet, and why each waits (the "schedule" step of the worker).

A fetched record becomes a `Job` in one of four places:
- the `scheduler`, waiting for a concurrency slot or for its key's lane;
- `delayed`, a tier record before its `retry-at`;
- `parked`, a rate-limited job before its reserved start (it holds its lane, not a slot);
- `gathering`, a job of a batch task before its batch starts (it holds its lane, not a slot).
The first three are the partition's prefetch buffer: `held` counts them, so the worker's
backpressure bounds memory whatever waits for what. Gathering jobs are bounded by their batches'
`max_size` instead, so a batch can fill up from a single partition. Pure logic, no Kafka and no asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from streamproc.app import Task
from streamproc.batches import Gathering
from streamproc.delays import DelayQueue
from streamproc.envelope import Envelope, read_envelope
from streamproc.offsets import PartitionOffsets
from streamproc.scheduling import Job, Ordering, Partition, Scheduler
from streamproc.topology import Topology


class Buffers:
    """The waiting jobs of every partition a worker owns."""

    def __init__(self, topology: Topology, ordering: Ordering, tasks: Mapping[str, Task[Any, Any]]) -> None:
        self.scheduler: Scheduler[Envelope] = Scheduler(ranks=len(topology.priorities) + 1)
        self.delayed: DelayQueue[Job[Envelope]] = DelayQueue()  # tier records before their retry-at
        self.parked: DelayQueue[Job[Envelope]] = DelayQueue()  # rate-limited jobs before their start
        self.gathering = Gathering(tasks)  # jobs of batch tasks before their batch starts
        self._ordering = ordering
        self._ranks = topology.priority_ranks()
        specs = topology.topics()
        self._sources = {  # topic → (its priority, its route's task) for intake topics and routes
            spec.name: (spec.priority or "", spec.task) for spec in specs if spec.role in ("intake", "route")
        }
        self._tier_delays_s = {spec.name: (spec.delay_ms or 0) / 1000 for spec in specs if spec.role == "tier"}

    @property
    def topics(self) -> list[str]:
        """The topics jobs come from: intake topics, routes and retry tiers."""
        return [*self._sources, *self._tier_delays_s]

    def accept(self, partition: Partition, records: Iterable[Any], offsets: PartitionOffsets) -> None:
        """Track one partition's fetched records (aiokafka `ConsumerRecord`s) and queue their jobs."""
        priority, route_task = self._sources.get(partition[0], ("", None))
        tier_delay_s = self._tier_delays_s.get(partition[0])
        now = time.time()
        clock_offset = time.monotonic() - now  # retry-at is wall-clock time, the queues are monotonic
        for record in records:
            if not offsets.fetched(record.offset):
                continue  # finished under the partition's previous owner (the commit's offset map)
            envelope = read_envelope(record, route_task, priority, self._ranks)
            rank = self._ranks.get(envelope.priority, len(self._ranks))
            job = Job(partition, record.offset, rank, self._ordering.lane(partition, record.key), envelope)
            retry_at_ms = envelope.retry_at_ms if tier_delay_s is not None else None
            if retry_at_ms is not None and tier_delay_s is not None:
                # Never later than the tier's delay after the record was written, nor after now: a
                # retry-at far ahead (a clock jump, a hand-made record) would pin the commit for ever.
                due = min(retry_at_ms / 1000, record.timestamp / 1000 + tier_delay_s, now + tier_delay_s)
                self.delayed.add(partition, due + clock_offset, job)  # released when due
            else:
                self.scheduler.add(job)

    def held(self, partition: Partition) -> int:
        """The partition's jobs waiting for anything: what its prefetch bounds."""
        return self.scheduler.buffered(partition) + self.delayed.count(partition) + self.parked.count(partition)

    def poll_ms(self, closed: Iterable[Partition], now: float) -> int:
        """How long a fetch of the other partitions may wait while `closed` ones are left out of it.

        A left-out partition with tasks ready to start resumes as soon as the dispatcher starts them,
        so poll briefly; one holding only waiting tasks resumes when they are due, so wait until then.
        """
        if any(self.scheduler.buffered(partition) for partition in closed):
            return 10
        due = self.next_due()
        return 500 if due is None else min(500, max(1, int((due - now) * 1000) + 1))

    def release_due(self, now: float) -> None:
        """Tier records whose retry-at has come join the scheduler, with their original priority."""
        for job in self.delayed.pop_due(now):
            self.scheduler.add(job)

    def next_due(self) -> float | None:
        """The monotonic time the next delayed or parked job may start, or a gathering batch falls due."""
        dues = [
            due
            for due in (self.delayed.next_due(), self.parked.next_due(), self.gathering.next_due())
            if due is not None
        ]
        return min(dues, default=None)

    def drop(self, partitions: Iterable[Partition]) -> int:
        """Forget every waiting job of `partitions` (revoked); their count."""
        gone = list(partitions)
        dropped = self.scheduler.drop(gone) + len(self.delayed.drop(gone))
        for popped in [*self.parked.drop(gone), *self.gathering.drop(gone)]:  # started: they hold their lanes
            self.scheduler.done(popped)
            dropped += 1
        return dropped
