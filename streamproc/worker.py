"""The worker: fetch → schedule → run → route the outcome → commit, for one consumer.

One aiokafka consumer per process feeds four cooperating coroutines:

- `_fetch_loop` calls `getmany`, records each offset as unfinished and hands the records to the
  scheduler; a partition whose buffer is more than half full is paused (backpressure);
- `_dispatch_loop` starts the scheduler's next job whenever a concurrency slot is free, which
  drains the buffers and so resumes their partitions;
- `_run` executes a job, routes its outcome, and only then marks its offset finished;
- `_commit_loop` commits, at most every `commit_interval`, each partition's lowest unfinished
  offset (SPEC §5).

Pausing is done by leaving the partition out of `getmany(*partitions)`, not with
`consumer.pause()`: aiokafka discards a paused partition's already fetched records, so every
pause/resume would fetch them again, while an unrequested partition keeps its one fetched
response in aiokafka's buffer and is not fetched further until it is read. Each `getmany` takes
at most `prefetch // 2` records, so a buffer never holds more than `prefetch`.

Revocation and shutdown take the same path: start nothing more from the partitions, drop their
buffered records, wait (bounded) for their running tasks, commit, and let go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.app import App
from streamproc.envelope import Envelope, read_envelope
from streamproc.execution import Executor, Outcome
from streamproc.offsets import PartitionOffsets
from streamproc.routing import OutcomeRouter
from streamproc.scheduling import Job, Ordering, Scheduler
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

log = structlog.get_logger("streamproc.worker")


@dataclass(frozen=True)
class WorkerConfig:
    group: str = "streamproc"
    concurrency: int = 64
    prefetch: int = 256  # at most this many fetched, not started records per partition
    ordering: Ordering = Ordering.KEY
    shutdown_timeout: float = 30.0  # also bounds the wait for running tasks on revocation
    commit_interval: float = 1.0
    sync_threads: int = 16


class TaskHooks(Protocol):
    """Observers of the task path (the demo's statistics, metrics); called on the event loop."""

    def task_started(self, envelope: Envelope) -> None: ...

    def task_finished(self, envelope: Envelope, outcome: Outcome) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker._release(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._worker._adopt(set(assigned))


class Worker:
    """Runs the tasks of `app` from the topics of `topology` in consumer group `config.group`."""

    def __init__(
        self,
        app: App,
        settings: KafkaSettings,
        topology: Topology,
        config: WorkerConfig = WorkerConfig(),
        hooks: Sequence[TaskHooks] = (),
    ) -> None:
        self.config = config
        self._settings = settings
        self._executor = Executor(app, threads=config.sync_threads)
        self._longest_timeout = max((task.timeout for task in app.tasks.values()), default=0.0)
        self._router = OutcomeRouter()
        self._hooks = tuple(hooks)
        self._scheduler: Scheduler[Envelope] = Scheduler(ranks=len(topology.priorities) + 1)
        self._ranks = {name: rank for rank, name in enumerate(topology.priorities)}
        self._intake = {  # topic → (its priority, its route's task)
            spec.name: (spec.priority or "", spec.task)
            for spec in topology.topics()
            if spec.role in ("intake", "route")
        }
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._running: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()  # work to dispatch: records arrived or a task finished
        self._room = asyncio.Event()  # a buffer drained (set by the dispatcher)
        self._stopping = asyncio.Event()
        self._joined = asyncio.Event()
        self._in_flight = 0
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def topics(self) -> list[str]:
        return list(self._intake)

    @property
    def in_flight(self) -> int:
        """Tasks running now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Fetched tasks waiting for a slot or for their key."""
        return self._scheduler.waiting

    @property
    def joined(self) -> asyncio.Event:
        """Set once the group gave this worker its first assignment."""
        return self._joined

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`, then drain, commit and leave the group."""
        consumer = AIOKafkaConsumer(
            **self._settings.client_kwargs(),
            group_id=self.config.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Revocation may wait this long for running tasks (KAFKA-NOTES "Rebalances").
            rebalance_timeout_ms=int((self.config.shutdown_timeout + 15) * 1000),
            # Fetching waits while every buffer is full, at most the longest task timeout.
            max_poll_interval_ms=int((max(300.0, self._longest_timeout) + 60) * 1000),
        )
        consumer.subscribe(self.topics, listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        loops = [asyncio.create_task(loop()) for loop in (self._fetch_loop, self._dispatch_loop, self._commit_loop)]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            for loop_task in loops:
                loop_task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        try:
            await self._release(set(self._offsets))
            for loop_task in loops:  # a loop that died (e.g. the broker refused us) ends the worker
                if not loop_task.cancelled():
                    loop_task.result()
        finally:
            self._consumer = None
            await consumer.stop()
            self._executor.close()

    # fetch → schedule

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        max_records = max(1, self.config.prefetch // 2)
        while True:
            assigned = list(self._offsets)
            open_partitions = [tp for tp in assigned if self._has_room(tp)]
            if assigned and not open_partitions:
                # Every buffer is full: wait until a task starts. That takes at most the longest
                # task timeout, which max_poll_interval_ms covers, so the member stays in the group.
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._room.wait()
                continue
            paused = len(open_partitions) < len(assigned)
            self._room.clear()
            # While some partition is paused, poll briefly so its resumption is noticed soon.
            batches = await consumer.getmany(
                *open_partitions, timeout_ms=10 if paused else 500, max_records=max_records
            )
            for tp, records in batches.items():
                offsets = self._offsets.get(tp)
                if offsets is None:  # revoked while this batch was on its way
                    continue
                priority, route_task = self._intake[tp.topic]
                for record in records:
                    envelope = read_envelope(record, route_task, priority)
                    offsets.fetched(record.offset)
                    rank = self._ranks.get(envelope.priority, len(self._ranks))
                    lane = self.config.ordering.lane((tp.topic, tp.partition), record.key)
                    self._scheduler.add(Job((tp.topic, tp.partition), record.offset, rank, lane, envelope))
            if batches:
                self._wake.set()

    def _has_room(self, tp: TopicPartition) -> bool:
        """Room for one more `getmany` batch without passing `prefetch`."""
        return self._scheduler.buffered((tp.topic, tp.partition)) <= self.config.prefetch // 2

    async def _dispatch_loop(self) -> None:
        while True:
            while self._in_flight < self.config.concurrency and (job := self._scheduler.pop()) is not None:
                self._start(job)
            self._wake.clear()
            await self._wake.wait()

    def _start(self, job: Job[Envelope]) -> None:
        tp = TopicPartition(*job.partition)
        if not self._room.is_set() and self._has_room(tp):
            self._room.set()
        self._in_flight += 1
        for hook in self._hooks:
            hook.task_started(job.item)
        running = asyncio.create_task(self._run(job, self._offsets[tp]))
        self._running.setdefault(tp, set()).add(running)
        running.add_done_callback(self._running[tp].discard)

    # run → route outcome

    async def _run(self, job: Job[Envelope], offsets: PartitionOffsets) -> None:
        envelope = job.item
        try:
            outcome = await self._executor.run(envelope)
            await self._router.route(envelope, outcome)
            offsets.finished(envelope.offset)
            for hook in self._hooks:
                hook.task_finished(envelope, outcome)
        finally:
            self._in_flight -= 1
            self._scheduler.done(job)
            self._wake.set()

    # commit

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval)
            await self._commit(self._offsets)

    async def _commit(self, trackers: dict[TopicPartition, PartitionOffsets]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()  # read right before the commit (KAFKA-NOTES "Commits")
        # The trackers themselves, not their dict: a revocation may remove them during the await.
        due = [
            (tp, tracker, offset)
            for tp, tracker in trackers.items()
            if tp in assigned and (offset := tracker.to_commit()) is not None
        ]
        if not due:
            return
        try:
            await consumer.commit({tp: offset for tp, _, offset in due})
        except KafkaError as exc:
            # A rebalance took the partitions (their next owner resumes from the last commit), or
            # the broker is unreachable for now (the next commit carries the same offsets).
            log.warning("commit failed", error=str(exc), error_type=type(exc).__name__, partitions=len(due))
            return
        for _, tracker, offset in due:
            tracker.committed(offset)

    # rebalance and shutdown

    def _adopt(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._offsets.setdefault(tp, PartitionOffsets())
        self._joined.set()
        log.info("partitions assigned", partitions=len(assigned), group=self.config.group)

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Stop starting tasks of `partitions`, drop their buffers, wait for their running tasks
        (at most the shutdown timeout; later ones are cancelled, unfinished), commit, forget them."""
        # Forgotten at once, so records of these partitions still arriving from a fetch are ignored.
        released = {tp: self._offsets.pop(tp) for tp in partitions if tp in self._offsets}
        if not released:
            return
        dropped = self._scheduler.drop((tp.topic, tp.partition) for tp in released)
        running = set().union(*(self._running.pop(tp, set()) for tp in released))
        if running:
            _, late = await asyncio.wait(running, timeout=self.config.shutdown_timeout)
            if late:
                log.warning("tasks cancelled at release; their offsets stay uncommitted", tasks=len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
        await self._commit(released)
        log.info("partitions released", partitions=len(released), dropped=dropped, waited=len(running))
