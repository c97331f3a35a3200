"""The partitions one worker owns: taken over, committed, and let go (the "commit" step of the worker).

`Ownership` is the consumer group's rebalance listener. A partition it is assigned gets an offset
tracker that starts from what its last commit's map says already finished (`commits.inherited`),
after the task ids its previous owner finished are remembered (`lifecycle.restore`); the worker
fetches a partition only once it has a tracker. Every `commit_interval` the trackers are committed.
A partition that is revoked, or every partition at shutdown, is let go the same way: its waiting
jobs are dropped, its running tasks get the shutdown timeout to finish (later ones are cancelled
and stay uncommitted), their statuses are awaited, and a final commit goes out before the group
may hand it on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from streamproc import commits
from streamproc.buffers import Buffers
from streamproc.lifecycle.tracking import TaskLifecycle
from streamproc.offsets import PartitionOffsets
from streamproc.worker_config import WorkerConfig

log = structlog.get_logger("streamproc.worker")


class Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """The owned partitions' offset trackers (`offsets`) and what runs for each (`running`)."""

    def __init__(self, config: WorkerConfig, buffers: Buffers, lifecycle: TaskLifecycle) -> None:
        self._config = config
        self._buffers = buffers
        self._lifecycle = lifecycle
        self.offsets: dict[TopicPartition, PartitionOffsets] = {}
        self.running: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self.consumer: AIOKafkaConsumer | None = None  # set while the worker consumes
        self.joined: asyncio.Event = asyncio.Event()  # set at the first assignment
        self._releasing = asyncio.Lock()

    def track(self, running: asyncio.Task[None], partitions: Iterable[TopicPartition]) -> None:
        """Note a task that runs for `partitions`: letting them go waits for it until it calls
        `untrack` (an eagerly started one may be done already)."""
        if running.done():
            return
        for tp in partitions:
            self.running.setdefault(tp, set()).add(running)

    def untrack(self, running: asyncio.Task[Any], partitions: Iterable[TopicPartition]) -> None:
        """The task `track` noted ends: called by the task itself as it ends, since a done callback
        costs a turn of the loop per task."""
        for tp in partitions:
            tasks = self.running.get(tp)
            if tasks is not None:
                tasks.discard(running)

    async def commit_loop(self) -> None:
        """A commit starts every `commit_interval` (its own duration included, which bounds what a
        crash re-runs to the work finished within one interval)."""
        while True:
            begun = time.monotonic()
            await self._commit(self.offsets)
            await asyncio.sleep(max(0.0, self._config.commit_interval - (time.monotonic() - begun)))

    async def _commit(self, trackers: dict[TopicPartition, PartitionOffsets], final: bool = False) -> None:
        if self.consumer is not None:
            await commits.commit(self.consumer, trackers, final)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Track the new partitions, starting from what their last commits say already finished."""
        assigned = set(assigned)
        new = [tp for tp in assigned if tp not in self.offsets]
        done = await commits.inherited(self.consumer, new) if new and self.consumer is not None else {}
        await self._lifecycle.restore(new, done)  # what the previous owners finished
        for tp in new:
            self.offsets[tp] = PartitionOffsets(done[tp].finished if tp in done else ())
        self.joined.set()
        skipping = sum(len(commit.finished) for commit in done.values())
        log.info("partitions assigned", partitions=len(assigned), group=self._config.group, skipping=skipping)

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.release(set(revoked))

    async def release(self, partitions: set[TopicPartition]) -> None:
        """Let `partitions` go (see the module docstring).

        One release at a time: a revocation during the shutdown's release waits for it, so the
        group hands the partitions on only after their commit (else the shutdown's commit came
        after the new assignment, was filtered out, and finished work ran again elsewhere)."""
        async with self._releasing:
            await self._release_now(partitions)

    async def _release_now(self, partitions: set[TopicPartition]) -> None:
        # Forgotten at once, so records of these partitions still arriving from a fetch are ignored.
        released = {tp: self.offsets.pop(tp) for tp in partitions if tp in self.offsets}
        if not released:
            return
        dropped = self._buffers.drop((tp.topic, tp.partition) for tp in released)
        running = set().union(*(self.running.pop(tp, set()) for tp in released))
        if running:
            _, late = await asyncio.wait(running, timeout=self._config.shutdown_timeout)
            if late:
                log.warning("tasks cancelled at release; their offsets stay uncommitted", tasks=len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
        await self._lifecycle.settled()  # the statuses of what finished, so their offsets commit
        await self._commit(released, final=True)
        log.info("partitions released", partitions=len(released), dropped=dropped, waited=len(running))
