"""The worker: fetch → schedule → run → route the outcome → commit, for one consumer.

One aiokafka consumer per process feeds three cooperating coroutines:

- `Fetching.loop` (`fetching`) fetches the owned partitions that have room into their buffers,
  recording each offset as unfinished (backpressure: `prefetch` and `max_uncommitted`);
- `_dispatch_loop` moves due tier records into the scheduler and starts the scheduler's next
  job whenever a concurrency slot is free: in a task of its own (started eagerly on Python 3.12+,
  `event_loop.start_task`), or, when its handler never suspends, run in place at once (`inline`;
  at most `concurrency` of them between two turns of the loop); a rate-limited job whose start
  lies ahead is parked until then, holding no slot; a job of a batch task gathers with others,
  and a full or due batch starts in one slot (`batches`);
- `_run` (`_run_batch`) skips a cancelled or already succeeded task, asks the task's circuit
  breaker, executes the job or batch (`attempts`), gives the key lanes back,
  routes its outcome (a retry tier or the DLQ, acknowledged by the broker; a write retried while a
  topic is missing holds no slot) and writes its status, which holds a slot until the broker has
  it: then its offset is finished (`_finished`);
- `Ownership.commit_loop` commits, at most every `commit_interval`, each partition's lowest
  unfinished offset with the finished offsets above it (`commits`); a newly assigned partition
  skips what its previous owner finished (SPEC §5).

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
from typing import Any

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
from streamproc.fetching import Fetching, fetched_from
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
        self._fetching = Fetching(config, self._buffers, self._offsets, self._wake)
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
        consumer = self._owned.consumer
        assert consumer is not None
        steps = (self._fetching.loop(consumer), self._dispatch_loop(), self._owned.commit_loop())
        loops = [asyncio.create_task(step) for step in steps]
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

    async def _dispatch_loop(self) -> None:
        concurrency, shared = self.config.concurrency, self._shared_slots
        parked, gathering = self._buffers.parked, self._buffers.gathering or None
        while True:
            now = time.monotonic()
            self._buffers.release_due(now)
            # Jobs run in place (`_start`) free their slot at once when no status holds it: at most
            # `concurrency` of them between two turns of the loop, so fetching and heartbeats go on.
            budget = concurrency
            while self._in_flight + self._settling < concurrency and budget:
                budget -= 1
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
            if not budget:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            due = self._buffers.next_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else max(0.0, due - time.monotonic())):
                    await self._wake.wait()

    def _start(self, job: Job[Envelope]) -> None:
        partitions = (fetched_from(job),)
        self._fetching.note_room(partitions[0])  # a started task leaves its partition's buffer
        offsets = self._offsets[partitions[0]]
        if self._attempts.runs_in_place(job.item):  # its handler never suspends: no task of its own
            try:
                outcome = self._attempts.in_place(job.item)
                self._scheduler.done(job)
                if not self._settle_now(job, offsets, outcome):  # a write to await: in a task after all
                    self._owned.track(start_task(self._settle_apart(job, offsets, outcome, partitions)), partitions)
            except Exception as exc:
                self._crashed(exc, job.item)
            return
        self._in_flight += 1
        self._owned.track(start_task(self._run(job, offsets, partitions)), partitions)

    def _start_batch(self, jobs: list[Job[Envelope]]) -> None:
        """Run the jobs of one batch task in one slot (`batches`)."""
        partitions = tuple({fetched_from(job) for job in jobs})
        for tp in partitions:
            self._fetching.note_room(tp)
        self._in_flight += 1
        trackers = [self._offsets[fetched_from(job)] for job in jobs]
        self._owned.track(start_task(self._run_batch(jobs, trackers, partitions)), partitions)

    # run → route outcome

    async def _run(self, job: Job[Envelope], offsets: PartitionOffsets, partitions: tuple[TopicPartition]) -> None:
        try:
            try:
                outcome = await self._attempts.one(job.item)
            finally:
                # The slot and the key lane are free once the handler returned: routing may wait
                # for the broker (a missing topic, an outage) without stopping other tasks. The slot
                # is taken again (`_settling`) while the status is on its way.
                self._in_flight -= 1
                self._scheduler.done(job)
                self._wake.set()
            if not self._settle_now(job, offsets, outcome):
                await self._settle(job, offsets, outcome)
        except Exception as exc:
            self._crashed(exc, job.item)
        finally:
            self._owned.untrack(_current_task(), partitions)

    def _settle_now(self, job: Job[Envelope], offsets: PartitionOffsets, outcome: Outcome) -> bool:
        """Route an outcome that needs no write (a success, a cancel, a skip) and send its status;
        False when routing must be awaited (`_settle`)."""
        routed = self._router.route_now(job.item, outcome)
        if routed is None:
            return False
        self._record(job, offsets, outcome, routed)
        return True

    async def _settle(self, job: Job[Envelope], offsets: PartitionOffsets, outcome: Outcome) -> None:
        """Route an outcome through its write (a retry tier, the DLQ, a workflow's next step), then send
        its status."""
        self._record(job, offsets, outcome, await self._router.route(job.item, outcome))

    async def _settle_apart(
        self, job: Job[Envelope], offsets: PartitionOffsets, outcome: Outcome, partitions: tuple[TopicPartition]
    ) -> None:
        """`_settle` in a task of its own, for a job that ran in place (`Ownership` tracks the task)."""
        try:
            await self._settle(job, offsets, outcome)
        except Exception as exc:
            self._crashed(exc, job.item)
        finally:
            self._owned.untrack(_current_task(), partitions)

    def _record(self, job: Job[Envelope], offsets: PartitionOffsets, outcome: Outcome, routed: Routed) -> None:
        """Send the status of a routed outcome; the offset finishes once the broker has it, and the
        slot (`_settling`) is held until then."""
        self._settling += 1
        self._lifecycle.record(job.item, outcome, routed, lambda: self._finished(job, offsets, outcome, routed))

    def _crashed(self, error: Exception, envelope: Envelope) -> None:
        log.exception("worker error; stopping", task=envelope.task, position=envelope.position)
        self._fail(error)

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
            self._crashed(exc, envelopes[0])
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
        self._fetching.note_room(fetched_from(job))  # it may have been held at `max_uncommitted`
        for hook in self._hooks:
            hook.task_finished(job.item, outcome, routed)

    def _fail(self, error: BaseException) -> None:
        """A bug, not a task failure (those are outcomes): an offset can never finish, so rather than
        stall its partition silently, stop and let `run` raise it."""
        if self._error is None and isinstance(error, Exception):
            self._error = error
        self.stop()


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None, "called from a task"
    return task
