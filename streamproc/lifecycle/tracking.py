"""The worker's side of the task lifecycle (SPEC §12): what it writes, skips and cancels.

- Before a task runs, `verdict` says whether to run it: not when it was cancelled (the control
  topic, read whole before the first task), nor when its id already succeeded (a duplicate submit,
  an idempotency key, or work the previous owner of the partition finished: `restore`), within
  the status TTL, or within the task's `cache_ttl` when it has one.
- After its outcome is routed, `record` writes its status (`succeeded` with the result,
  `retrying`, `dead`, `cancelled`) and calls back once the broker has it (`status_batches`), so
  the worker marks the offset finished only after the status is durable.
- A cancel that arrives while the task runs calls `on_cancel`, which the worker turns into a
  cancellation of the running handler.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.acked import AckedWriter
from streamproc.app import Task
from streamproc.commits import Inherited
from streamproc.envelope import ORIGINAL_PARTITION, ROOT_ID, Envelope, cap_error_message, int_header
from streamproc.execution import Outcome, Result
from streamproc.lifecycle import restore
from streamproc.lifecycle.cancel_follower import CancelFollower
from streamproc.lifecycle.status import TaskState, TaskStatus, status_partition, succeeded_value
from streamproc.lifecycle.status_batches import StatusBatches
from streamproc.routing import Disposition, Routed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

REMEMBERED = 100_000  # succeeded ids a worker keeps in memory (about 10 MB); older ones come from `restore`


class TaskLifecycle:
    """Status records, de-duplication and cancels for one worker; `statuses=False` writes no status."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        tasks: Mapping[str, Task[Any, Any]],
        writer: AckedWriter,
        *,
        statuses: bool = True,
    ) -> None:
        self._settings = settings
        self._tasks = tasks
        self._statuses = statuses
        self._topic = topology.status_topic
        self._batches = StatusBatches(writer, self._topic)
        self._batches.on_error = lambda error: self.on_error(error)
        self._partitions = topology.status.partitions
        self._ttl_ms = topology.status_ttl_ms
        self._restorable = {spec.name for spec in topology.topics() if spec.role in ("intake", "route")}
        self._succeeded: OrderedDict[str, int] = OrderedDict()  # task id → when it succeeded (ms)
        self._control_topic = topology.control_topic
        self._cancels = CancelFollower(settings, topology.control_topic, self._cancelled_now)
        self._restorer: AIOKafkaConsumer | None = None
        self.tracks_started = statuses and any(task.track_started for task in tasks.values())
        self.on_cancel: Callable[[str], None] = lambda task_id: None
        self.on_error: Callable[[BaseException], None] = lambda error: None  # a status could not be written

    @property
    def topics(self) -> list[str]:
        """The topics this needs besides the worker's own: the control topic, and the status topic
        when statuses are written."""
        return [self._control_topic, self._topic] if self._statuses else [self._control_topic]

    async def start(self) -> None:
        """Read the control topic to its end: no task may start before every cancel is known."""
        await self._cancels.start()
        if self._statuses:
            self._restorer = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
            await self._restorer.start()

    async def stop(self) -> None:
        await self._cancels.stop()
        if self._restorer is not None:
            await self._restorer.stop()

    def _cancelled_now(self, task_id: str) -> None:
        self.on_cancel(task_id)

    def verdict(self, envelope: Envelope) -> Result | None:
        """CANCELLED or SKIPPED (see the module docstring) for a task that must not run, else None."""
        task_id, cancelled = envelope.task_id, self._cancels.cancelled
        # A workflow's step or member is cancelled by its root's id too (SPEC §13, `workflows.wire`).
        if cancelled and (task_id in cancelled or envelope.headers.get(ROOT_ID) in cancelled):
            return Result.CANCELLED
        succeeded_at = self._succeeded.get(task_id)
        if succeeded_at is None:
            return None
        task = self._tasks.get(envelope.task or "")
        ttl_ms = int(task.cache_ttl * 1000) if task is not None and task.cache_ttl else self._ttl_ms
        return Result.SKIPPED if time.time_ns() // 1_000_000 - succeeded_at < ttl_ms else None

    async def started(self, envelope: Envelope) -> None:
        """Write `started` before the handler of a task with `track_started=True` is called (the worker
        calls this only when `tracks_started` says some task has it)."""
        task = self._tasks.get(envelope.task or "")
        if self._statuses and task is not None and task.track_started:
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def acknowledged() -> None:
                if not sent.done():  # not cancelled by a revocation meanwhile
                    sent.set_result(None)

            self._write(envelope, self._status(envelope, TaskState.STARTED).to_json(), acknowledged)
            await sent

    def record(self, envelope: Envelope, outcome: Outcome, routed: Routed, on_durable: Callable[[], None]) -> None:
        """Write the status of a routed outcome; `on_durable` runs once the broker has it (at once
        when there is none to write)."""
        if not self._statuses or outcome.result is Result.SKIPPED:
            on_durable()
            return
        disposition = routed.disposition
        if disposition is Disposition.SUCCEEDED:  # the common case: no `TaskStatus` built
            task = self._tasks.get(envelope.task or "")
            result = outcome.value if task is None or task.store_result else None
            now_ms = time.time_ns() // 1_000_000
            self._remember(envelope.task_id, now_ms)
            self._write(
                envelope, succeeded_value(envelope.task_id, envelope.task, envelope.attempt, now_ms, result), on_durable
            )
            return
        if disposition is Disposition.CANCELLED:
            status = self._status(envelope, TaskState.CANCELLED)
        elif disposition is Disposition.DEAD_LETTERED:
            status = self._status(envelope, TaskState.DEAD, outcome=outcome, reason=routed.reason)
        else:  # retried, or deferred by an open circuit
            status = self._status(envelope, TaskState.RETRYING, outcome=outcome, retry_at=routed.retry_at_ms)
        self._write(envelope, status.to_json(), on_durable)

    async def settled(self) -> None:
        """Return once every status written so far is acknowledged (a release commits after it)."""
        await self._batches.settled()

    async def restore(self, adopted: Iterable[TopicPartition], commits: Mapping[TopicPartition, Inherited]) -> None:
        """Remember the ids that succeeded on the intake partitions just `adopted` before their last
        commits (`commits`) or, for those without one, before now (see `restore`)."""
        now_ms = time.time_ns() // 1_000_000
        since: dict[int, int] = {}
        for tp in adopted:
            if tp.topic in self._restorable:
                commit = commits.get(tp)
                at_ms = commit.at_ms if commit is not None and commit.at_ms is not None else now_ms
                partition = status_partition(tp.partition, self._partitions)
                since[partition] = min(since.get(partition, at_ms), at_ms)
        if since and self._restorer is not None:
            for task_id, status in (await restore.succeeded_since(self._restorer, self._topic, since)).items():
                self._remember(task_id, status.at_ms)

    def _remember(self, task_id: str, at_ms: int) -> None:
        self._succeeded[task_id] = at_ms
        if len(self._succeeded) > REMEMBERED:
            self._succeeded.popitem(last=False)

    def _status(
        self,
        envelope: Envelope,
        state: TaskState,
        *,
        outcome: Outcome | None = None,
        reason: str | None = None,
        retry_at: int | None = None,
    ) -> TaskStatus:
        error = outcome.error if outcome is not None else None
        return TaskStatus(
            task_id=envelope.task_id,
            state=state,
            task=envelope.task,
            attempt=envelope.attempt,
            at_ms=time.time_ns() // 1_000_000,
            error_type=outcome.error_type if outcome is not None else None,
            error=cap_error_message(str(error)) if error is not None else None,
            reason=reason,
            retry_at=retry_at,
        )

    def _write(self, envelope: Envelope, status: bytes, on_sent: Callable[[], None]) -> None:
        """Send the status record to the partition of its intake partition (see `lifecycle.status`)."""
        intake_partition = int_header(envelope.headers, ORIGINAL_PARTITION, envelope.partition)  # a retry's
        self._batches.add(status_partition(intake_partition, self._partitions), envelope.task_id, status, on_sent)
