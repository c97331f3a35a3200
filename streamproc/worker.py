"""The worker: fetch → schedule → run → route the outcome → commit, for one consumer.

One aiokafka consumer per process feeds three cooperating coroutines:

- `_fetch_loop` calls `getmany` on the intake topics, routes and retry tiers, records each
  offset as unfinished and hands the records on: to the scheduler, or, for a tier record whose
  `retry-at` is still ahead, to the delay queue; a partition holding more than half its
  `prefetch` is left out of the next fetch (backpressure);
- `_dispatch_loop` moves due tier records into the scheduler and starts the scheduler's next
  job whenever a concurrency slot is free; a rate-limited job whose start lies ahead is parked
  until then, holding no slot;
- `_run` asks the task's circuit breaker, executes the job (or defers it when the circuit is
  open), routes its outcome (a retry tier or the DLQ, acknowledged by the broker), and only
  then marks its offset finished;
- `_commit_loop` commits, at most every `commit_interval`, each partition's lowest unfinished
  offset (SPEC §5).

Pausing is done by leaving the partition out of `getmany(*partitions)`, not with
`consumer.pause()`: aiokafka discards a paused partition's already fetched records, so every
pause/resume would fetch them again, while an unrequested partition keeps its one fetched
response in aiokafka's buffer and is not fetched further until it is read. Each `getmany` takes
at most `prefetch // 2` records, so a partition never holds more than `prefetch`. Waiting
records (delayed or parked) count against it too, so memory stays bounded, and they wake the
loops at their due time: nothing polls while they wait.

Revocation and shutdown take the same path: start nothing more from the partitions, drop their
buffered and waiting records, wait (bounded) for their running tasks, commit, and let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.app import App
from streamproc.breaker import CircuitBreaker, CircuitOpen, Permit
from streamproc.delays import DelayQueue
from streamproc.envelope import Envelope, read_envelope
from streamproc.execution import Executor, Outcome, Result
from streamproc.offsets import PartitionOffsets
from streamproc.ratelimit import RateLimiter
from streamproc.routing import OutcomeRouter, Routed
from streamproc.scheduling import Job, Ordering, Partition, Scheduler
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
    # Slots only the highest priority may take, so its tasks start at once on a worker saturated
    # by lower ones; None: one in 64, at least one from concurrency 8.
    reserved_slots: int | None = None

    @property
    def top_priority_slots(self) -> int:
        if self.reserved_slots is not None:
            return min(self.reserved_slots, self.concurrency - 1)
        return max(1, self.concurrency // 64) if self.concurrency >= 8 else 0


class TaskHooks(Protocol):
    """Observers of the task path (the demo's statistics, metrics); called on the event loop."""

    def task_started(self, envelope: Envelope) -> None:
        """The handler is about to be called."""

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        """The attempt's outcome is durable (a deferred task never started)."""


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
        self._router = OutcomeRouter(settings, topology, app.tasks)
        self._hooks = tuple(hooks)
        self._scheduler: Scheduler[Envelope] = Scheduler(ranks=len(topology.priorities) + 1)
        self._delayed: DelayQueue[Job[Envelope]] = DelayQueue()  # tier records before their retry-at
        self._parked: DelayQueue[Job[Envelope]] = DelayQueue()  # rate-limited jobs before their start
        self._ranks = {name: rank for rank, name in enumerate(topology.priorities)}
        specs = topology.topics()
        self._sources = {  # topic → (its priority, its route's task) for intake topics and routes
            spec.name: (spec.priority or "", spec.task) for spec in specs if spec.role in ("intake", "route")
        }
        self._tiers = {spec.name for spec in specs if spec.role == "tier"}
        self._limiters = {name: RateLimiter(task.rate_limit) for name, task in app.tasks.items() if task.rate_limit}
        self._breakers = {
            name: CircuitBreaker(task.failure_threshold, task.reset_timeout)
            for name, task in app.tasks.items()
            if task.failure_threshold is not None
        }
        # The longest time fetching may pause while every buffer is full: a task's timeout, or a
        # tier's delay when only tier partitions are assigned.
        self._longest_wait_s = max(
            [task.timeout for task in app.tasks.values()] + [(spec.delay_ms or 0) / 1000 for spec in specs]
        )
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._running: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()  # work to dispatch: records arrived or a task finished
        self._room = asyncio.Event()  # a buffer drained (set by the dispatcher)
        self._stopping = asyncio.Event()
        self._joined = asyncio.Event()
        self._in_flight = 0
        self._error: Exception | None = None  # a bug that stopped the worker
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def topics(self) -> list[str]:
        """Intake topics, routes and retry tiers."""
        return [*self._sources, *self._tiers]

    @property
    def in_flight(self) -> int:
        """Tasks running now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Fetched tasks waiting for a slot or for their key (not for a retry-at or a rate limit)."""
        return self._scheduler.waiting

    @property
    def delayed(self) -> int:
        """Fetched tier records waiting for their retry-at."""
        return len(self._delayed)

    def circuits(self) -> dict[str, bool]:
        """Each task with a circuit breaker: whether its circuit is open (or half-open) here."""
        return {task: breaker.is_open for task, breaker in self._breakers.items()}

    async def lag(self) -> dict[TopicPartition, int]:
        """End offset minus committed offset of each partition this worker owns (SPEC §7).

        The committed offset is this worker's last acknowledged commit, else the group's, else
        (never committed) the log start, where a new group begins. It queries the broker even
        when nothing is owned, so a caller also learns whether the broker answers.
        """
        consumer = self._consumer
        if consumer is None:
            return {}
        owned = list(self._offsets)
        if not owned:
            await consumer.topics()
            return {}
        ends = await consumer.end_offsets(owned)
        committed: dict[TopicPartition, int | None] = {
            tp: tracker.last_commit if (tracker := self._offsets.get(tp)) else None for tp in owned
        }
        for tp in [tp for tp, offset in committed.items() if offset is None]:
            committed[tp] = await consumer.committed(tp)
        never = [tp for tp, offset in committed.items() if offset is None]
        committed |= await consumer.beginning_offsets(never) if never else {}
        return {tp: max(0, end - (committed[tp] or 0)) for tp, end in ends.items()}

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
            # Fetching waits while every buffer is full; see `_longest_wait_s`.
            max_poll_interval_ms=int((max(300.0, self._longest_wait_s) + 60) * 1000),
        )
        consumer.subscribe(self.topics, listener=_Listener(self))
        await self._router.start()
        try:
            await consumer.start()
            self._consumer = consumer
            await self._consume()
        finally:
            self._consumer = None
            await consumer.stop()
            await self._router.stop()  # after the release, whose running tasks route their outcomes
            self._executor.close()

    async def _consume(self) -> None:
        loops = [asyncio.create_task(loop()) for loop in (self._fetch_loop, self._dispatch_loop, self._commit_loop)]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            for loop_task in loops:
                loop_task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        await self._release(set(self._offsets))
        for loop_task in loops:  # a loop that died (e.g. the broker refused us) ends the worker
            if not loop_task.cancelled():
                loop_task.result()
        if self._error is not None:
            raise self._error

    # fetch → schedule

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        max_records = max(1, self.config.prefetch // 2)
        while True:
            assigned = list(self._offsets)
            open_partitions = [tp for tp in assigned if self._has_room(tp)]
            self._room.clear()
            if assigned and not open_partitions:
                # Every buffer is full: wait until a task starts. That takes at most
                # `_longest_wait_s`, which max_poll_interval_ms covers, so the member stays in the group.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._room.wait()
                continue
            batches = await consumer.getmany(
                *open_partitions, timeout_ms=self._poll_ms(assigned, open_partitions), max_records=max_records
            )
            for tp, records in batches.items():
                offsets = self._offsets.get(tp)
                if offsets is None:  # revoked while this batch was on its way
                    continue
                self._accept(tp, records, offsets)
            if batches:
                self._wake.set()

    def _accept(self, tp: TopicPartition, records: list[Any], offsets: PartitionOffsets) -> None:
        """Track and queue one partition's fetched records."""
        partition = (tp.topic, tp.partition)
        priority, route_task = self._sources.get(tp.topic, ("", None))
        is_tier = tp.topic in self._tiers
        clock_offset = time.monotonic() - time.time()  # retry-at is wall-clock time, the queues are monotonic
        for record in records:
            envelope = read_envelope(record, route_task, priority)
            offsets.fetched(record.offset)
            rank = self._ranks.get(envelope.priority, len(self._ranks))
            job = Job(partition, record.offset, rank, self.config.ordering.lane(partition, record.key), envelope)
            retry_at_ms = envelope.retry_at_ms if is_tier else None
            if retry_at_ms is not None:
                self._delayed.add(partition, retry_at_ms / 1000 + clock_offset, job)  # released when due
            else:
                self._scheduler.add(job)

    def _has_room(self, tp: TopicPartition) -> bool:
        """Room for one more `getmany` batch without passing `prefetch`."""
        partition = (tp.topic, tp.partition)
        held = self._scheduler.buffered(partition) + self._delayed.count(partition) + self._parked.count(partition)
        return held <= self.config.prefetch // 2

    def _poll_ms(self, assigned: list[TopicPartition], open_partitions: list[TopicPartition]) -> int:
        """How long `getmany` may wait for records of the open partitions.

        A left-out partition with tasks ready to start resumes as soon as the dispatcher starts them,
        so poll briefly; one holding only waiting tasks resumes when they are due, so wait until then.
        """
        if len(open_partitions) == len(assigned):
            return 500
        closed = set(assigned).difference(open_partitions)
        if any(self._scheduler.buffered((tp.topic, tp.partition)) for tp in closed):
            return 10
        due = self._next_due()
        return 500 if due is None else min(500, max(1, int((due - time.monotonic()) * 1000) + 1))

    def _next_due(self) -> float | None:
        """The monotonic time the next delayed or parked job may start."""
        dues = [due for due in (self._delayed.next_due(), self._parked.next_due()) if due is not None]
        return min(dues, default=None)

    async def _dispatch_loop(self) -> None:
        concurrency = self.config.concurrency
        shared = concurrency - self.config.top_priority_slots  # slots any priority may take
        while True:
            now = time.monotonic()
            for job in self._delayed.pop_due(now):
                self._scheduler.add(job)
            while self._in_flight < concurrency:
                if self._parked and (cleared := self._parked.pop_due(now, limit=1)):
                    self._start(cleared[0])
                    continue
                popped = self._scheduler.pop(max_rank=None if self._in_flight < shared else 0)
                if popped is None:
                    break
                limiter = self._limiters.get(popped.item.task or "") if self._limiters else None
                wait = limiter.reserve(now) if limiter else 0.0
                if wait > 0:
                    self._parked.add(popped.partition, now + wait, popped)  # keeps its lane, holds no slot
                else:
                    self._start(popped)
            self._wake.clear()
            due = self._next_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else max(0.0, due - time.monotonic())):
                    await self._wake.wait()

    def _start(self, job: Job[Envelope]) -> None:
        tp = TopicPartition(*job.partition)
        if not self._room.is_set() and self._has_room(tp):
            self._room.set()
        self._in_flight += 1
        running = asyncio.create_task(self._run(job, self._offsets[tp]))
        self._running.setdefault(tp, set()).add(running)
        running.add_done_callback(self._running[tp].discard)

    # run → route outcome

    async def _run(self, job: Job[Envelope], offsets: PartitionOffsets) -> None:
        envelope = job.item
        try:
            outcome = await self._attempt(envelope)
            routed = await self._router.route(envelope, outcome)
            offsets.finished(envelope.offset)
            for hook in self._hooks:
                hook.task_finished(envelope, outcome, routed)
        except Exception as exc:
            # A bug, not a task failure (those are outcomes): the offset can never finish, so rather
            # than stall the partition silently, stop and let `run` raise it.
            log.exception("worker error; stopping", task=envelope.task, position=envelope.position)
            self._error = self._error or exc
            self.stop()
        finally:
            self._in_flight -= 1
            self._scheduler.done(job)
            self._wake.set()

    async def _attempt(self, envelope: Envelope) -> Outcome:
        """Run the task, unless its circuit is open: then it is deferred and its handler not called."""
        breaker = self._breakers.get(envelope.task or "")
        permit = breaker.allow(time.monotonic()) if breaker else Permit.CALL
        if permit is Permit.DENY:
            return Outcome(Result.DEFERRED, 0.0, CircuitOpen(f"the circuit of task {envelope.task!r} is open"))
        for hook in self._hooks:
            hook.task_started(envelope)
        try:
            outcome = await self._executor.run(envelope)
        except asyncio.CancelledError:
            if breaker:
                breaker.abandon(permit)
            raise
        if breaker:
            breaker.record(permit, outcome.result is not Result.FAILED, time.monotonic())
        return outcome

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
        gone: list[Partition] = [(tp.topic, tp.partition) for tp in released]
        dropped = self._scheduler.drop(gone) + len(self._delayed.drop(gone))
        for parked in self._parked.drop(gone):  # popped from the scheduler, so they hold their lanes
            self._scheduler.done(parked)
            dropped += 1
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
