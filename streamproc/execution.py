"""Run one task: find its handler, decode its payload, call it within its timeout.

Every way a task can end becomes an `Outcome`, never an exception, so one bad record cannot
stop the worker: a poison record (no or unknown task name, a value that is not JSON or does not
fit the model) and a `PermanentError` are dead on arrival; any other exception, a timeout
included, is a retryable failure. Sync handlers run in a bounded thread pool so they never
block the event loop, whose heartbeats keep the worker in its group.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

import structlog

from streamproc.app import App, Task
from streamproc.context import TaskContext
from streamproc.envelope import Envelope
from streamproc.errors import PermanentError, PoisonRecord
from streamproc.inline import run_in_place

log = structlog.get_logger("streamproc.task")

TIMEOUT_CHECK_S = 0.05  # a timed-out handler is cancelled at most this late


class Result(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retryable
    DEAD = "dead"  # straight to the DLQ
    DEFERRED = "deferred"  # not run: its circuit is open (built by the worker, never by `run`)
    CANCELLED = "cancelled"  # cancelled through the control topic, before or while it ran (the worker)
    SKIPPED = "skipped"  # not run: its task id already succeeded (the worker; SPEC §12 de-duplication)


@dataclass(slots=True)  # not frozen: one is built per task, and a frozen one takes twice as long (1 µs)
class Outcome:
    """How an attempt ended; never changed once built."""

    result: Result
    duration_s: float
    error: BaseException | None = None
    reason: str | None = None  # the DLQ reason of a dead task
    value: Any = None  # what the handler returned (succeeded): the task's result

    @property
    def error_type(self) -> str | None:
        return type(self.error).__name__ if self.error is not None else None

    def format_traceback(self) -> str | None:
        """The failing attempt's traceback, formatted as Python prints it (chained exceptions too);
        None when its error was never raised (a deferral) or the record itself is at fault (a poison
        record: the traceback would show only streamproc's own frames)."""
        error = self.error
        if error is None or error.__traceback__ is None or isinstance(error, PoisonRecord):
            return None
        return "".join(traceback.format_exception(error))


def failed(error: BaseException, duration_s: float) -> Outcome:
    """The outcome of an attempt that raised `error`: dead for a poison record or a `PermanentError`,
    else a retryable failure."""
    if isinstance(error, PoisonRecord):
        return Outcome(Result.DEAD, duration_s, error, error.reason)
    if isinstance(error, PermanentError):
        return Outcome(Result.DEAD, duration_s, error, "permanent_error")
    return Outcome(Result.FAILED, duration_s, error)


class TaskTimeout(TimeoutError):
    """The handler ran longer than its task's timeout."""


def task_context(
    task: str, envelope: Envelope, logger: Any = None, cancel_event: threading.Event | None = None
) -> TaskContext:
    """The `TaskContext` of the task `envelope` carries; `logger` defaults to the task logger bound to
    the task's log fields. The one definition, used by the worker and by `streamproc.testing`."""
    return TaskContext(
        task=task,
        task_id=envelope.task_id,
        attempt=envelope.attempt,
        priority=envelope.priority,
        topic=envelope.topic,
        partition=envelope.partition,
        offset=envelope.offset,
        key=envelope.key,
        headers=envelope.headers,
        enqueued_at=envelope.enqueued_at_ms,
        log=logger if logger is not None else log.bind(**envelope.log_fields()),
        cancel_event=cancel_event or threading.Event(),
    )


class Executor:
    """Runs tasks of one `App`; sync handlers share a pool of `threads` threads."""

    def __init__(self, app: App, threads: int) -> None:
        self._tasks = app.tasks
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="streamproc-sync")
        # Timeouts: one watchdog checks the running calls' deadlines every TIMEOUT_CHECK_S, because a
        # timer per call (`asyncio.timeout`) cost about 15% of a no-op task's time.
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._busy = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        self._cancel_events: dict[str, threading.Event] = {}  # task id → its running handler's `ctx.cancel_event`

    def task_for(self, envelope: Envelope) -> Task[Any, Any]:
        if envelope.undecodable is not None:
            raise PoisonRecord("undecodable", envelope.undecodable)
        if envelope.task is None:
            raise PoisonRecord("missing_task", "the record has no task header and its topic has no route")
        task = self._tasks.get(envelope.task)
        if task is None:
            raise PoisonRecord("unknown_task", f"no handler is registered for task {envelope.task!r}")
        return task

    async def run(self, envelope: Envelope) -> Outcome:
        begin = time.perf_counter()
        try:
            task = self.task_for(envelope)
            args: tuple[Any, ...] = (task.decode(envelope.value),)
            if task.wants_context:
                cancel_event = self._cancel_events[envelope.task_id] = threading.Event()
                args += (task_context(task.name, envelope, cancel_event=cancel_event),)
            try:
                value = await self.call(task, args)
            finally:
                if task.wants_context:
                    self._cancel_events.pop(envelope.task_id, None)
        except Exception as exc:
            return failed(exc, time.perf_counter() - begin)
        return Outcome(Result.SUCCEEDED, time.perf_counter() - begin, value=value)

    def run_in_place(self, envelope: Envelope) -> Outcome:
        """`run` for a task whose handler never suspends (`inline`): called in place, so it needs no
        deadline (nothing interrupts it) and no cancel event (no cancel can arrive while it runs)."""
        begin = time.perf_counter()
        try:
            task = self.task_for(envelope)
            args: tuple[Any, ...] = (task.decode(envelope.value),)
            if task.wants_context:
                args += (task_context(task.name, envelope),)
            value = run_in_place(task.fn, args)
        except Exception as exc:
            return failed(exc, time.perf_counter() - begin)
        return Outcome(Result.SUCCEEDED, time.perf_counter() - begin, value=value)

    async def call(self, task: Task[Any, Any], args: tuple[Any, ...]) -> Any:
        """The handler's return value; past its deadline the watchdog cancels it and this raises `TaskTimeout`."""
        current = asyncio.current_task()
        assert current is not None
        self._deadlines[current] = time.monotonic() + task.timeout
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch())
        if not self._busy.is_set():
            self._busy.set()
        try:
            if task.is_async:
                return await task.fn(*args)
            return await asyncio.get_running_loop().run_in_executor(self._pool, partial(task.fn, *args))
        except asyncio.CancelledError:
            if current not in self._expired:
                raise  # a revocation or shutdown, not a timeout
            current.uncancel()
            raise TaskTimeout(f"task {task.name!r} ran longer than its timeout of {task.timeout:g}s") from None
        finally:
            del self._deadlines[current]
            self._expired.discard(current)

    async def _watch(self) -> None:
        """Cancel the calls past their deadline; sleeps while no call runs."""
        while True:
            if not self._deadlines:
                self._busy.clear()
                await self._busy.wait()
            await asyncio.sleep(TIMEOUT_CHECK_S)
            now = time.monotonic()
            for running, deadline in list(self._deadlines.items()):
                if deadline <= now and running not in self._expired:
                    self._expired.add(running)
                    running.cancel()

    def signal_cancel(self, task_id: str) -> None:
        """Set `ctx.cancelled` of the running task `task_id`, if its handler takes a context."""
        event = self._cancel_events.get(task_id)
        if event is not None:
            event.set()

    def close(self) -> None:
        """Stop watching deadlines; let running sync handlers finish in the background, start no more."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
