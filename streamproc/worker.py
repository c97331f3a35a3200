"""The worker: fetch → schedule → run → route the outcome → commit, for one consumer.

One aiokafka consumer per process feeds three cooperating coroutines:

- `_fetch_loop` calls `getmany` on the intake topics, routes and retry tiers, records each
  offset as unfinished and hands the records on: to the scheduler, or, for a tier record whose
  `retry-at` is still ahead, to the delay queue; a partition holding more than half its
  `prefetch`, or whose offsets past its commit reach `max_uncommitted`, is left out of the next
  fetch (backpressure, and a bound on what a slow task holds back);
- `_dispatch_loop` moves due tier records into the scheduler and starts the scheduler's next
  job whenever a concurrency slot is free (in a task of its own, started eagerly on Python 3.12+:
  `event_loop.start_task`); a rate-limited job whose start lies ahead is parked
  until then, holding no slot; a job of a batch task gathers with others, and a full or due
  batch starts in one slot (`batches`);
- `_run` (`_run_batch`) skips a cancelled or already succeeded task, asks the task's circuit
  breaker, executes the job or batch (`attempts`), gives the key lanes back,
  routes its outcome (a retry tier or the DLQ, acknowledged by the broker; a write retried while a
  topic is missing holds no slot) and writes its status, which holds a slot until the broker has
  it: then its offset is finished (`_finished`);
- `Ownership.commit_loop` commits, at most every `commit_interval`, each partition's lowest
  unfinished offset with the finished offsets above it (`commits`); a newly assigned partition
  skips what its previous owner finished (SPEC §5).

Pausing is done by leaving the partition out of `getmany(*partitions)`, not with
`consumer.pause()`: aiokafka discards a paused partition's already fetched records, so every
pause/resume would fetch them again, while an unrequested partition keeps its one fetched
response in aiokafka's buffer and is not fetched further until it is read. Each `getmany` takes
at most `prefetch // 2` records, so a partition never holds more than `prefetch`. Waiting
records (delayed or parked) count against it too, so memory stays bounded, and they wake the
loops at their due time: nothing polls while they wait.

Revocation and shutdown take the same path (`ownership`): start nothing more from the
partitions, drop their buffered and waiting records, wait (bounded) for their running tasks and
their statuses, commit, and let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc import backoff
from streamproc.acked import AckedWriter
from streamproc.app import App
from streamproc.attempts import Attempts
from streamproc.buffers import Buffers
from streamproc.envelope import Envelope
from streamproc.errors import StreamprocError
from streamproc.event_loop import start_task
from streamproc.execution import Executor, Outcome
from streamproc.hooks import TaskHooks
from streamproc.lag import owned_lag
from streamproc.lenient_decoding import install as install_lenient_decoding
from streamproc.lifecycle.tracking import TaskLifecycle
from streamproc.offsets import PartitionOffsets
from streamproc.ownership import Ownership
from streamproc.ratelimit import RateLimiter
from streamproc.routing import OutcomeRouter, Routed
from streamproc.scheduling import Job
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker_config import WorkerConfig
from streamproc.workflows.continuation import WorkflowContinuation

log = structlog.get_logger("streamproc.worker")


class Worker:
    """Runs the tasks of `app` from the topics of `topology` in consumer group `config.group`."""

    def __init__(
        self,
        app: App,
        settings: KafkaSettings,
        topology: Topology,
        config: WorkerConfig | None = None,
        hooks: Sequence[TaskHooks] = (),
    ) -> None:
        self.config = config = config or WorkerConfig()
        self._settings = settings
        self._executor = Executor(app, threads=config.sync_threads)
        self._writer = AckedWriter(settings)
        self._router = OutcomeRouter(
            self._writer, topology, app.tasks, WorkflowContinuation(settings, topology, self._writer)
        )
        self._lifecycle = TaskLifecycle(settings, topology, app.tasks, self._writer, statuses=config.statuses)
        self._lifecycle.on_error = self._fail
        self._hooks = tuple(hooks)
        self._attempts = Attempts(app.tasks, self._executor, self._lifecycle, self._hooks)
        self._buffers = Buffers(topology, config.ordering, app.tasks)
        self._scheduler = self._buffers.scheduler
        specs = topology.topics()
        self._limiters = {name: RateLimiter(task.rate_limit) for name, task in app.tasks.items() if task.rate_limit}
        # The longest time fetching may pause while every buffer is full (a task's timeout, or a
        # tier's delay when only tier partitions are assigned): the consumer's poll interval covers it.
        self._longest_wait_s = max(
            [task.timeout for task in app.tasks.values()] + [(spec.delay_ms or 0) / 1000 for spec in specs]
        )
        self._owned = Ownership(config, self._buffers, self._lifecycle)
        self._offsets = self._owned.offsets  # the owned partitions' trackers, the one dict `Ownership` keeps
        self._wake = asyncio.Event()  # work to dispatch: records arrived or a task finished
        self._room = asyncio.Event()  # a full partition may be fetched again (see `_note_room`)
        self._waiting_for_room = False  # the fetch loop waits on `_room`: every owned partition is full
        self._stopping = asyncio.Event()
        self._in_flight = 0
        # Tasks whose handler returned and whose status is on its way: they count against the
        # concurrency too, so what a SIGKILL can lose (and a successor re-runs) stays within it.
        self._settling = 0
        self._shared_slots = config.concurrency - config.top_priority_slots  # slots any priority may take
        self._error: Exception | None = None  # a bug that stopped the worker

    @property
    def topics(self) -> list[str]:
        """Intake topics, routes and retry tiers."""
        return self._buffers.topics

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions this worker owns now."""
        return list(self._offsets)

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
        return len(self._buffers.delayed)

    def circuits(self) -> dict[str, bool]:
        """Each task with a circuit breaker: whether its circuit is open (or half-open) here."""
        return self._attempts.circuits.states()

    async def lag(self) -> dict[TopicPartition, int]:
        """The unfinished work of each partition this worker owns (SPEC §7, `lag.owned_lag`); an
        empty answer when it owns none still means the broker answered."""
        consumer = self._owned.consumer
        return await owned_lag(consumer, self._offsets) if consumer is not None else {}

    @property
    def joined(self) -> asyncio.Event:
        """Set once the group gave this worker its first assignment."""
        return self._owned.joined

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`, then drain, commit and leave the group."""
        install_lenient_decoding()  # a header key that is not UTF-8 must not wedge a partition
        backoff.install()  # an outage must not spin aiokafka's metadata waits
        group_kwargs = self.config.consumer_kwargs(self._longest_wait_s)
        consumer = AIOKafkaConsumer(**self._settings.client_kwargs(), **group_kwargs)
        try:
            await self._writer.start()
            await consumer.start()
            missing = sorted({*self.topics, *self._lifecycle.topics} - await consumer.topics())
            if missing:  # the group would never settle on them; one run of `topics apply` fixes it
                raise StreamprocError(
                    f"declared topics do not exist: {', '.join(missing)}; run `streamproc topics apply`"
                )
            await self._lifecycle.start()  # reads every cancel before the first task can start
            consumer.subscribe(self.topics, listener=self._owned)
            self._owned.consumer = consumer
            await self._consume()
        finally:
            self._owned.consumer = None
            await consumer.stop()
            await self._lifecycle.stop()
            await self._router.stop()
            await self._writer.stop()  # after the release, whose running tasks route their outcomes
            self._executor.close()

    async def _consume(self) -> None:
        steps = (self._fetch_loop, self._dispatch_loop, self._owned.commit_loop)
        loops = [asyncio.create_task(loop()) for loop in steps]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            for loop_task in loops:
                loop_task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        await self._owned.release(set(self._offsets))
        for loop_task in loops:  # a loop that died (e.g. the broker refused us) ends the worker
            if not loop_task.cancelled():
                loop_task.result()
        if self._error is not None:
            raise self._error

    # fetch → schedule

    async def _fetch_loop(self) -> None:
        consumer = self._owned.consumer
        assert consumer is not None
        max_records = max(1, self.config.prefetch // 2)
        while True:
            assigned = list(self._offsets)
            open_partitions = [tp for tp in assigned if self._has_room(tp)]
            if assigned and not open_partitions:
                # Every buffer is full: wait until a task starts. That takes at most
                # `_longest_wait_s`, which the poll interval covers, so the member stays in the group.
                self._room.clear()
                self._waiting_for_room = True
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._room.wait()
                finally:
                    self._waiting_for_room = False
                continue
            batches = await consumer.getmany(
                *open_partitions, timeout_ms=self._poll_ms(assigned, open_partitions), max_records=max_records
            )
            for tp, records in batches.items():
                offsets = self._offsets.get(tp)
                if offsets is None:
                    if tp in consumer.assignment():  # assigned, but its tracker is still being set up
                        consumer.seek(tp, records[0].offset)  # fetch these again, not lose them
                    continue  # else revoked while this batch was on its way
                self._buffers.accept(tp, records, offsets)  # its jobs carry `tp` (`_fetched_from`)
            if batches:
                self._wake.set()

    def _has_room(self, tp: TopicPartition) -> bool:
        """Room for one more `getmany` batch without passing `prefetch` nor `max_uncommitted`."""
        held = self._buffers.held(tp)
        tracker = self._offsets.get(tp)
        span = tracker.open_span if tracker is not None else 0
        return held <= self.config.prefetch // 2 and span + self.config.prefetch // 2 <= self.config.max_uncommitted

    def _note_room(self, tp: TopicPartition) -> None:
        """Wake the fetch loop, which waits while every partition is full, once `tp` has room (checked
        only while it waits: the check after each start and finish cost 5% of a no-op task)."""
        if self._waiting_for_room and not self._room.is_set() and self._has_room(tp):
            self._room.set()

    def _poll_ms(self, assigned: list[TopicPartition], open_partitions: list[TopicPartition]) -> int:
        """How long `getmany` may wait for records of the open partitions (`Buffers.poll_ms`)."""
        if len(open_partitions) == len(assigned):
            return 500
        closed = set(assigned).difference(open_partitions)
        return self._buffers.poll_ms(((tp.topic, tp.partition) for tp in closed), time.monotonic())

    async def _dispatch_loop(self) -> None:
        concurrency, shared = self.config.concurrency, self._shared_slots
        parked, gathering = self._buffers.parked, self._buffers.gathering or None
        while True:
            now = time.monotonic()
            self._buffers.release_due(now)
            while self._in_flight + self._settling < concurrency:
                if parked and (cleared := parked.pop_due(now, limit=1)):
                    self._start(cleared[0])
                    continue
                if gathering and (batch := gathering.pop_ready(now)):
                    self._start_batch(batch)
                    continue
                popped = self._scheduler.pop(max_rank=None if self._in_flight + self._settling < shared else 0)
                if popped is None:
                    break
                if gathering and gathering.takes(popped):
                    gathering.add(popped, now)  # holds its lane, not a slot, until its batch starts
                    continue
                limiter = self._limiters.get(popped.item.task or "") if self._limiters else None
                wait = limiter.reserve(now) if limiter else 0.0
                if wait > 0:
                    parked.add(popped.partition, now + wait, popped)  # keeps its lane, holds no slot
                else:
                    self._start(popped)
            self._wake.clear()
            due = self._buffers.next_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else max(0.0, due - time.monotonic())):
                    await self._wake.wait()

    def _start(self, job: Job[Envelope]) -> None:
        partitions = (_fetched_from(job),)
        self._note_room(partitions[0])  # a started task leaves its partition's buffer
        self._in_flight += 1
        self._owned.track(start_task(self._run(job, self._offsets[partitions[0]], partitions)), partitions)

    def _start_batch(self, jobs: list[Job[Envelope]]) -> None:
        """Run the jobs of one batch task in one slot (`batches`)."""
        partitions = tuple({_fetched_from(job) for job in jobs})
        for tp in partitions:
            self._note_room(tp)
        self._in_flight += 1
        trackers = [self._offsets[_fetched_from(job)] for job in jobs]
        self._owned.track(start_task(self._run_batch(jobs, trackers, partitions)), partitions)

    # run → route outcome

    async def _run(self, job: Job[Envelope], offsets: PartitionOffsets, partitions: tuple[TopicPartition]) -> None:
        envelope = job.item
        try:
            try:
                outcome = await self._attempts.one(envelope)
            finally:
                # The slot and the key lane are free once the handler returned: routing may wait
                # for the broker (a missing topic, an outage) without stopping other tasks. The slot
                # is taken again (`_settling`) while the status is on its way.
                self._in_flight -= 1
                self._scheduler.done(job)
                self._wake.set()
            routed = self._router.route_now(envelope, outcome) or await self._router.route(envelope, outcome)
            # Its status goes in a batch of statuses; the offset finishes once the broker has it.
            self._settling += 1
            self._lifecycle.record(envelope, outcome, routed, lambda: self._finished(job, offsets, outcome, routed))
        except Exception as exc:
            log.exception("worker error; stopping", task=envelope.task, position=envelope.position)
            self._fail(exc)
        finally:
            self._owned.untrack(_current_task(), partitions)

    async def _run_batch(
        self, jobs: list[Job[Envelope]], trackers: list[PartitionOffsets], partitions: tuple[TopicPartition, ...]
    ) -> None:
        """`_run` for a batch: one slot, one outcome per job, each routed on its own."""
        envelopes = [job.item for job in jobs]
        try:
            try:
                outcomes = await self._attempts.batch(envelopes)
            finally:
                self._in_flight -= 1
                for job in jobs:
                    self._scheduler.done(job)
                self._wake.set()
            routes = [
                self._router.route_now(e, outcome) or await self._router.route(e, outcome)
                for e, outcome in zip(envelopes, outcomes, strict=True)
            ]
            self._settling += 1  # the batch's slot, until the last of its statuses is durable
            unsettled = len(jobs)

            def finished(i: int) -> None:
                nonlocal unsettled
                unsettled -= 1
                self._finished(jobs[i], trackers[i], outcomes[i], routes[i], frees_slot=unsettled == 0)

            for i, envelope in enumerate(envelopes):
                self._lifecycle.record(envelope, outcomes[i], routes[i], partial(finished, i))
        except Exception as exc:
            log.exception("worker error; stopping", task=envelopes[0].task, position=envelopes[0].position)
            self._fail(exc)
        finally:
            self._owned.untrack(_current_task(), partitions)

    def _finished(
        self, job: Job[Envelope], offsets: PartitionOffsets, outcome: Outcome, routed: Routed, frees_slot: bool = True
    ) -> None:
        """The task's outcome and status are durable: its offset is finished (and its slot free)."""
        if frees_slot:
            self._settling -= 1
            if self._in_flight + self._settling + 1 >= self._shared_slots:  # the dispatcher may wait for it
                self._wake.set()
        offsets.finished(job.item.offset)
        self._note_room(_fetched_from(job))  # it may have been held at `max_uncommitted`
        for hook in self._hooks:
            hook.task_finished(job.item, outcome, routed)

    def _fail(self, error: BaseException) -> None:
        """A bug, not a task failure (those are outcomes): an offset can never finish, so rather than
        stall its partition silently, stop and let `run` raise it."""
        if self._error is None and isinstance(error, Exception):
            self._error = error
        self.stop()


def _fetched_from(job: Job[Envelope]) -> TopicPartition:
    """The partition of a fetched job: `Buffers.accept` was given the `TopicPartition` itself, so no
    new one is built per task (a `TopicPartition` is a `tuple[str, int]`, equal to and hashed as one)."""
    return cast(TopicPartition, job.partition)


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None, "called from a task"
    return task
