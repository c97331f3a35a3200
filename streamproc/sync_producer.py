"""`SyncProducer`: `Producer` for synchronous code (Django, Flask, scripts), SPEC §15.

An `asyncio` event loop runs in a private daemon thread and owns one `Producer`; each call hands
its coroutine to that loop (`asyncio.run_coroutine_threadsafe`) and blocks until the broker
acknowledged the record, so a returned task id is as durable as with `Producer`. Any number of
threads may share one `SyncProducer`: their records go through the same connection and batch
together.

    with SyncProducer.from_env() as producer:
        handle = producer.submit("send_email", {"to": "a@b.c", "subject": "hi"}, key="user-42")
        handle.result(timeout=60)  # blocks; the task lifecycle of SPEC §12 like `TaskHandle`

Without `with`, the producer connects on first use and closes when the interpreter exits (or on
`close()`), which suits a module-level producer in a web application. After `os.fork()` (a
pre-forking server) a child process connects afresh on its first use.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from streamproc.app import Task
from streamproc.errors import StreamprocError
from streamproc.lifecycle.handle import SyncHandle, TaskHandle
from streamproc.lifecycle.status import TaskStatus
from streamproc.producer import Producer
from streamproc.settings import KafkaSettings, Settings
from streamproc.submission import DEFAULT_MAX_REQUEST_SIZE, Payload
from streamproc.topology import Topology, load_topology
from streamproc.workflows.canvas import Chain, Chord, Group, Signature
from streamproc.workflows.handle import SyncWorkflowHandle

T = TypeVar("T")


class SyncProducer:
    """Submits tasks from synchronous code; `with SyncProducer.from_env() as producer:` or `close()`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        linger_ms: int = 5,
        web_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self._options: dict[str, Any] = {
            "max_request_size": max_request_size,
            "linger_ms": linger_ms,
            "web_url": web_url,
        }
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._pid = 0  # the process that started the loop
        self._closed = False

    @classmethod
    def from_env(
        cls, bootstrap_servers: str | None = None, topics_file: str | os.PathLike[str] | None = None
    ) -> SyncProducer:
        """Connection from `STREAMPROC_*` variables, topics from the topics file (or the defaults)."""
        settings = KafkaSettings.from_env(bootstrap_servers)
        return cls(settings, load_topology(topics_file), web_url=Settings.read().web_url)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Connect to the cluster now (otherwise the first `submit` does); raises if it cannot."""
        self._loop_for_call()

    def close(self) -> None:
        """Flush what is pending, disconnect and stop the loop thread; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, producer = self._loop, self._thread, self._producer
            self._loop = self._thread = self._producer = None
        atexit.unregister(self.close)
        if loop is None or thread is None or self._pid != os.getpid():
            return  # never started here (a forked child does not own its parent's thread)
        try:
            if producer is not None:
                asyncio.run_coroutine_threadsafe(self._shutdown(producer), loop).result()
        finally:
            _end(loop, thread)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @overload
    def submit(
        self,
        task: Chain | Group | Chord,
        payload: None = None,
        *,
        priority: str | None = None,
        traceparent: str | None = None,
    ) -> SyncWorkflowHandle: ...

    @overload
    def submit(
        self,
        task: str | Task[Any, Any] | Signature,
        payload: Payload | None = None,
        *,
        priority: str | None = None,
        key: str | bytes | None = None,
        traceparent: str | None = None,
        idempotency_key: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
    ) -> SyncTaskHandle: ...

    def submit(
        self,
        task: str | Task[Any, Any] | Signature | Chain | Group | Chord,
        payload: Payload | None = None,
        *,
        priority: str | None = None,
        key: str | bytes | None = None,
        traceparent: str | None = None,
        idempotency_key: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
    ) -> SyncTaskHandle | SyncWorkflowHandle:
        """`Producer.submit`, blocking until the broker has the task; returns its handle. `countdown`
        or `eta` delay it (SPEC §13, see `Producer.submit`); a chain, group or chord returns a
        `SyncWorkflowHandle`."""
        if isinstance(task, Chain | Group | Chord):
            workflow = task
            if payload is not None:
                raise StreamprocError("a chain, group or chord takes only priority= and traceparent=")
            flow = self._call(lambda p: p.submit(workflow, priority=priority, traceparent=traceparent))
            return SyncWorkflowHandle(flow, self._call)
        single = task
        handle = self._call(
            lambda p: p.submit(
                single,
                payload,
                priority=priority,
                key=key,
                traceparent=traceparent,
                idempotency_key=idempotency_key,
                countdown=countdown,
                eta=eta,
            )
        )
        return SyncTaskHandle(handle, self._call)

    def submit_many(
        self,
        task: str | Task[Any, Any],
        payloads: Iterable[Payload],
        *,
        priority: str | None = None,
        key: str | bytes | None = None,
        traceparent: str | None = None,
    ) -> list[SyncTaskHandle]:
        """`Producer.submit_many`, blocking until every delivery is acknowledged; returns the handles in order."""
        batch = list(payloads)  # consumed here, in the caller's thread, not on the loop
        handles = self._call(lambda p: p.submit_many(task, batch, priority=priority, key=key, traceparent=traceparent))
        return [SyncTaskHandle(handle, self._call) for handle in handles]

    def status(self, task_id: str) -> TaskStatus:
        """`Producer.status`."""
        return self._call(lambda p: p.status(task_id))

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """`Producer.result`, blocking."""
        return self._call(lambda p: p.result(task_id, timeout))

    def cancel(self, task_id: str) -> TaskStatus:
        """`Producer.cancel`."""
        return self._call(lambda p: p.cancel(task_id))

    def _call(self, call: Callable[[Producer], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine `call(producer)` on the loop thread and wait for its result."""
        loop = self._loop_for_call()
        with self._lock:  # scheduled under the lock: `close()` cannot stop the loop before it runs
            if self._closed or self._producer is None:
                raise self._closed_error()
            if threading.current_thread() is self._thread:
                raise StreamprocError("SyncProducer cannot be called from its own event loop: use Producer there")
            future = asyncio.run_coroutine_threadsafe(call(self._producer), loop)
        return future.result()

    def _loop_for_call(self) -> asyncio.AbstractEventLoop:
        """The running loop of a started producer, starting both on first use (once, whichever thread asks)."""
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="streamproc-sync-producer", daemon=True)
            thread.start()
            producer = Producer(self.settings, self.topology, **self._options)
            try:
                asyncio.run_coroutine_threadsafe(producer.start(), loop).result()
            except BaseException:
                _end(loop, thread)
                raise
            self._loop, self._thread, self._producer, self._pid = loop, thread, producer, os.getpid()
        atexit.register(self.close)
        return loop

    @staticmethod
    async def _shutdown(producer: Producer) -> None:
        """Stop the producer (flushing it), then cancel anything still running on the loop."""
        await producer.stop()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    def _closed_error() -> StreamprocError:
        return StreamprocError("the SyncProducer is closed: create a new one to submit more tasks")


class SyncTaskHandle(SyncHandle[TaskHandle]):
    """`TaskHandle` for synchronous code: `result()` and `wait()` block the calling thread."""


def _end(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop the loop running in `thread`, wait for the thread, close the loop."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
