"""Test helpers (SPEC §15): run a registered task in-process, and build a `TaskContext` in one call.

`run_task` needs no broker. It writes the record a `Producer` would (the SPEC §3 headers, the JSON
value), reads it back with the worker's own `read_envelope`, and runs it through the worker's
`Executor`, so the handler sees exactly what it would in production: the same decoding, the same
model validation, the same timeout, and the same outcome rules (a poison payload is `dead` with its
DLQ reason, a `PermanentError` is `dead` as `permanent_error`, any other exception is `failed`).
Nothing is retried: `failed` is what the worker would send to the first retry tier.
`run_batch_task` does the same for several payloads: a batch handler gets them in one call.

    from streamproc.testing import make_context, run_task

    async def test_send_email() -> None:
        run = await run_task(app, "send_email", {"to": "ada@example.com", "subject": "hi"})
        assert run.succeeded

    async def test_handler_directly() -> None:
        await send_email(SendEmail(to="ada@example.com", subject="hi"), make_context("send_email"))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel

from streamproc.app import App, Task
from streamproc.batches import run_batch
from streamproc.context import TaskContext
from streamproc.envelope import Envelope, read_envelope, task_headers
from streamproc.errors import StreamprocError
from streamproc.execution import Executor, Result, task_context
from streamproc.submission import encode_payload, resolve_priority
from streamproc.topology import Topology

__all__ = ["Result", "TaskRun", "make_context", "run_batch_task", "run_task", "run_task_sync"]


@dataclass(frozen=True, slots=True)
class TaskRun:
    """How one in-process run of a task ended."""

    outcome: Result  # SUCCEEDED, FAILED (the worker would retry it) or DEAD (the worker would dead-letter it)
    reason: str | None  # the DLQ reason of a dead task: invalid_payload, undecodable, unknown_task, permanent_error…
    error: BaseException | None  # what the handler raised (or the `PoisonRecord` of a poison payload)
    value: Any  # what the handler returned (None unless it succeeded)
    task_id: str
    duration_s: float

    @property
    def succeeded(self) -> bool:
        return self.outcome is Result.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.outcome is Result.FAILED

    @property
    def dead(self) -> bool:
        return self.outcome is Result.DEAD


def _record_envelope(
    topology: Topology,
    task: str,
    value: bytes | None,
    *,
    headers: Mapping[str, str] | None,
    key: str | bytes | None,
    attempt: int,
    priority: str | None,
    task_id: str | None,
    enqueued_at: int | None,
    partition: int,
    offset: int,
) -> Envelope:
    """The envelope the worker would read from the record a `Producer` writes for this task."""
    resolved = resolve_priority(topology, priority)
    task_id = task_id or str(uuid.uuid4())
    now_ms = time.time_ns() // 1_000_000
    enqueued_at_ms = now_ms if enqueued_at is None else enqueued_at
    raw_headers = task_headers(task, task_id, enqueued_at_ms, resolved, attempt)
    own = {name for name, _ in raw_headers}
    raw_headers += [(name, text.encode()) for name, text in (headers or {}).items() if name not in own]
    key_bytes = key.encode() if isinstance(key, str) else key
    record = ConsumerRecord(
        topic=topology.intake_topic(resolved),
        partition=partition,
        offset=offset,
        timestamp=now_ms,
        timestamp_type=0,
        key=key_bytes,
        value=value,
        checksum=None,
        serialized_key_size=len(key_bytes) if key_bytes is not None else -1,
        serialized_value_size=len(value) if value is not None else -1,
        headers=raw_headers,
    )
    return read_envelope(record, None, resolved, topology.priority_ranks())


def make_context(
    task: str = "task",
    *,
    task_id: str | None = None,
    attempt: int = 1,
    priority: str | None = None,
    topic: str | None = None,
    partition: int = 0,
    offset: int = 0,
    key: str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
    enqueued_at: int | None = None,
    log: structlog.typing.FilteringBoundLogger | None = None,
    topology: Topology | None = None,
) -> TaskContext:
    """A `TaskContext` as the worker would build it for a fresh task, with any field overridden.

    By default: a new UUID4 task id, attempt 1, priority `normal` on its intake topic of the default
    topology (or of `topology`), partition 0, offset 0, no key, the SPEC §3 headers (plus `headers`),
    enqueued now, and the worker's task logger bound to the task's fields.
    """
    envelope = _record_envelope(
        topology or Topology(),
        task,
        b"{}",
        headers=headers,
        key=key,
        attempt=attempt,
        priority=priority,
        task_id=task_id,
        enqueued_at=enqueued_at,
        partition=partition,
        offset=offset,
    )
    if topic is not None:
        envelope.topic = topic
    return task_context(task, envelope, log)


async def run_task(
    app: App,
    task: str | Task[Any, Any],
    payload: BaseModel | Mapping[str, Any] | bytes | None,
    *,
    headers: Mapping[str, str] | None = None,
    key: str | bytes | None = None,
    attempt: int = 1,
    priority: str | None = None,
    task_id: str | None = None,
    enqueued_at: int | None = None,
    topology: Topology | None = None,
) -> TaskRun:
    """Run one attempt of `task` (a name or a registered handler) of `app` on `payload`, as the worker would.

    The payload may be a mapping or a pydantic model (sent as JSON, not validated first, so an
    invalid one reaches the handler's decoding as it would from any producer), or raw bytes (the
    record's value as it is: test poison records with them; None is a record without a value).
    The task is looked up by name in `app`, so a name no handler has is `dead` as `unknown_task`.
    Never raises for anything the handler or the payload does; `StreamprocError` for a priority
    the topology does not declare or a payload that is not JSON-serialisable.
    """
    runs = await run_batch_task(
        app,
        task,
        [payload],
        headers=headers,
        key=key,
        attempt=attempt,
        priority=priority,
        task_ids=None if task_id is None else [task_id],
        enqueued_at=enqueued_at,
        topology=topology,
    )
    return runs[0]


async def run_batch_task(
    app: App,
    task: str | Task[Any, Any],
    payloads: Sequence[BaseModel | Mapping[str, Any] | bytes | None],
    *,
    headers: Mapping[str, str] | None = None,
    key: str | bytes | None = None,
    attempt: int = 1,
    priority: str | None = None,
    task_ids: Sequence[str] | None = None,
    enqueued_at: int | None = None,
    topology: Topology | None = None,
) -> list[TaskRun]:
    """`run_task` for several payloads: a batch task (`@app.task(batch=...)`) gets them in one call,
    with one `TaskRun` per item as the worker routes them (SPEC §15); any other task runs once per payload."""
    name = task.name if isinstance(task, Task) else task
    topology = topology or Topology()
    envelopes = [
        _record_envelope(
            topology,
            name,
            payload if payload is None or isinstance(payload, bytes) else encode_payload(name, payload),
            headers=headers,
            key=key,
            attempt=attempt,
            priority=priority,
            task_id=None if task_ids is None else task_ids[offset],
            enqueued_at=enqueued_at,
            partition=0,
            offset=offset,
        )
        for offset, payload in enumerate(payloads)
    ]
    executor = Executor(app, threads=1)
    registered = app.tasks.get(name)
    try:
        if registered is not None and registered.batch is not None:
            outcomes = await run_batch(executor, envelopes)
        else:
            outcomes = [await executor.run(envelope) for envelope in envelopes]
    finally:
        executor.close()
        watchdog = executor._watchdog  # cancelled by close(): let it finish before the loop may end
        if watchdog is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    return [
        TaskRun(
            outcome=outcome.result,
            reason=outcome.reason,
            error=outcome.error,
            value=outcome.value,
            task_id=envelope.task_id,
            duration_s=outcome.duration_s,
        )
        for envelope, outcome in zip(envelopes, outcomes, strict=True)
    ]


def run_task_sync(
    app: App,
    task: str | Task[Any, Any],
    payload: BaseModel | Mapping[str, Any] | bytes | None,
    **options: Any,
) -> TaskRun:
    """`run_task` for synchronous test code (its own event loop); the same keyword options."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_task(app, task, payload, **options))
    raise StreamprocError("run_task_sync was called inside a running event loop: use `await run_task(...)` there")
