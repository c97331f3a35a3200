"""`Producer`: submit tasks to the intake topics (SPEC §3, §4).

A submitted task is one record on `<prefix>.<priority>` with the SPEC §3 headers and a UTF-8
JSON value. Everything that can be checked locally (the priority, the payload against the
handler's model, the record size) is checked before anything is sent, so bad input fails at the
caller and never becomes a dead letter. `submit` returns only once the broker acknowledged the
record to all in-sync replicas (`acks=all`, idempotent producer): a returned task is durable.

The task lifecycle (SPEC §12): each submit also writes the task's `pending` status, to the status
partition numbered like the intake partition the producer picks (the partitioner's choice for a
key, else a random one), so its `TaskHandle` can await the result from that record on.
`status`, `result` and `cancel` work on any task id (`lifecycle.client`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, overload

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streamproc import backoff
from streamproc.app import Task
from streamproc.envelope import Headers
from streamproc.errors import StreamprocError
from streamproc.lifecycle.client import LifecycleClient, result_of
from streamproc.lifecycle.control import cancel_value
from streamproc.lifecycle.handle import TaskHandle
from streamproc.lifecycle.status import TaskState, TaskStatus, status_partition
from streamproc.settings import KafkaSettings, Settings
from streamproc.submission import (
    DEFAULT_MAX_REQUEST_SIZE,
    Payload,
    TaskRecord,
    check_size,
    prepare_record,
    resolve_priority,
)
from streamproc.timing.schedule_record import delayed_until, schedule_headers
from streamproc.topology import Topology, load_topology
from streamproc.workflows.canvas import Chain, Chord, Group, Signature

if TYPE_CHECKING:
    from streamproc.workflows.handle import WorkflowHandle


class Producer:
    """Submits tasks; use as `async with Producer.from_env() as producer:` or call `start()`/`stop()`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        linger_ms: int = 5,
        web_url: str | None = None,
        statuses: bool = True,
    ) -> None:
        """`web_url`: `streamproc web`, for status lookups (else a bounded read of the status topic);
        `statuses=False` writes no `pending` status (nothing can await the handles then)."""
        self.settings = settings
        self.topology = topology
        self.max_request_size = max_request_size
        self._linger_ms = linger_ms
        self._statuses = statuses
        self._kafka: Any = None  # AIOKafkaProducer once started
        self._known_topics: set[str] = set()
        self._metadata_lock = asyncio.Lock()  # one cluster-wide metadata read at a time (see `_ready`)
        self._partitioner = DefaultPartitioner()
        self.lifecycle = LifecycleClient(settings, topology, web_url)

    @classmethod
    def from_env(
        cls, bootstrap_servers: str | None = None, topics_file: str | os.PathLike[str] | None = None
    ) -> Producer:
        """Connection from `STREAMPROC_*` variables (`STREAMPROC_WEB_URL` for lookups), topics from the
        topics file (or the defaults)."""
        settings = KafkaSettings.from_env(bootstrap_servers)
        return cls(settings, load_topology(topics_file), web_url=Settings.read().web_url)

    async def start(self) -> None:
        """Connect to the cluster. `acks=all` plus idempotence: an acknowledged task is durable and
        a retried send never duplicates it; a small linger lets `submit_many` batch records."""
        if self._kafka is not None:
            return
        backoff.install()  # an outage must not spin aiokafka's metadata waits
        kafka = AIOKafkaProducer(
            **self.settings.client_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_request_size=self.max_request_size,
        )
        try:
            await kafka.start()
        except BaseException:
            await kafka.stop()  # release the half-open client (no "unclosed producer" warning)
            raise
        self._kafka = kafka

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        kafka, self._kafka = self._kafka, None
        await self.lifecycle.stop()
        if kafka is not None:
            await kafka.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @overload
    async def submit(
        self,
        task: Chain | Group | Chord,
        payload: None = None,
        *,
        priority: str | None = None,
        traceparent: str | None = None,
    ) -> WorkflowHandle: ...

    @overload
    async def submit(
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
    ) -> TaskHandle: ...

    async def submit(
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
    ) -> TaskHandle | WorkflowHandle:
        """Send one task and wait until the broker has it; returns its `TaskHandle` (id: a UUID4).

        With a `Task` the payload is validated against its model first; a bad payload, an unknown
        priority or an oversized record raise `StreamprocError` and nothing is sent. With
        `idempotency_key` (or a task with `cache_ttl`) the id comes from the key (or the payload),
        and a task already submitted under it within the status TTL is returned instead of sent.

        Delayed tasks (SPEC §13): `countdown` (seconds from now) or `eta` (a timezone-aware
        datetime), not both, make the task due then; one due now or in the past is sent at once.
        A delayed task is durable once this returns: its intake record (with a `run-at` header,
        ms since epoch) waits on `<prefix>.schedules`, keyed by its id, and a worker's scheduler
        sends it to intake when due; it is `pending` meanwhile and `cancel` reaches it. Without
        `key` its intake key is its task id, so that a second fire after a scheduler's crash lands
        in the same key lane as the first and the SPEC §12 rule skips it once the first succeeded.
        Its handle's `topic` and `partition` are the intake topic and partition it will be sent
        to; its `offset` is None (its intake record does not exist yet).

        Workflows (SPEC §13): a `Signature` (`task.s(payload)`) is submitted as its task and fixed
        payload; a `chain`, `group` or `chord` (no payload, key, idempotency key nor delay) returns
        a `WorkflowHandle` once its first records are durable (`workflows.submitting`).
        """
        if isinstance(task, Chain | Group | Chord):
            if payload is not None or key is not None or idempotency_key is not None or countdown or eta:
                raise StreamprocError("a chain, group or chord takes only priority= and traceparent=")
            from streamproc.workflows.submitting import submit_workflow

            return await submit_workflow(self, task, priority=priority, traceparent=traceparent)
        if isinstance(task, Signature):
            if payload is not None:
                raise StreamprocError(f"signature {task.name!r} carries its payload: submit(signature) takes none")
            payload, task = task.payload, (task.task or task.name)
        if payload is None:
            raise StreamprocError(f"submit({task!r}, payload): a task needs its payload")
        due_ms = delayed_until(countdown, eta)
        resolved = resolve_priority(self.topology, priority)
        topic = self.topology.intake_topic(resolved)
        record = prepare_record(
            task,
            payload,
            resolved,
            key,
            traceparent,
            idempotency_key,
            due_ms=due_ms,
            max_request_size=self.max_request_size,
        )
        kafka = await self._ready(topic)
        partition = await self._partition(kafka, topic, record.key)
        if record.idempotent and (earlier := await self._earlier(record, topic, partition)) is not None:
            return earlier
        if due_ms is not None:
            schedules = self.topology.schedules_topic
            await self._ready(schedules)
            headers = schedule_headers(record.headers, due_ms, topic, partition, record.key)
            scheduled = dataclasses.replace(record, key=record.task_id.encode(), headers=headers)
            check_size(scheduled, self.max_request_size)
            [handle] = await self._send(kafka, schedules, [(scheduled, partition)], intake=topic)
            return handle
        [handle] = await self._send(kafka, topic, [(record, partition)])
        return handle

    async def submit_many(
        self,
        task: str | Task[Any, Any],
        payloads: Iterable[Payload],
        *,
        priority: str | None = None,
        key: str | bytes | None = None,
        traceparent: str | None = None,
    ) -> list[TaskHandle]:
        """Send many tasks of one name and wait for all deliveries together; returns their handles in order.

        Every payload is validated and measured before the first is sent, so one bad payload sends
        none. Sends are pipelined (not one round trip each), which is what makes thousands fast. If a
        delivery fails the error is raised; tasks of the batch other than that one may have been sent.
        Each task gets a fresh id: idempotency keys and the result cache are `submit`'s.
        """
        resolved = resolve_priority(self.topology, priority)
        topic = self.topology.intake_topic(resolved)
        records = [
            prepare_record(
                task, payload, resolved, key, traceparent, fresh_id=True, max_request_size=self.max_request_size
            )
            for payload in payloads
        ]
        if not records:
            return []
        kafka = await self._ready(topic)
        return await self._send(kafka, topic, [(r, await self._partition(kafka, topic, r.key)) for r in records])

    async def _send(
        self, kafka: Any, topic: str, records: list[tuple[TaskRecord, int]], intake: str | None = None
    ) -> list[TaskHandle]:
        """Send each record with its `pending` status first, and wait for every acknowledgement.
        With `intake` (a delayed task's), the records go to `topic` (the schedules) with the default
        partitioner on their key, and the handles name `intake` and the intake partition given."""
        status_topic = self.lifecycle.topic
        if self._statuses:
            await self._ready(status_topic)
        statuses: list[asyncio.Future[Any] | None] = []
        deliveries = []
        for record, partition in records:
            pending = None
            if self._statuses:
                status = TaskStatus(record.task_id, TaskState.PENDING, record.task, 1, time.time_ns() // 1_000_000)
                pending = await kafka.send(
                    status_topic,
                    status.to_json(),
                    key=record.task_id.encode(),
                    partition=status_partition(partition, self.lifecycle.partitions),
                )
            statuses.append(pending)
            to = None if intake is not None else partition
            delivery = await kafka.send(topic, record.value, key=record.key, headers=record.headers, partition=to)
            deliveries.append(delivery)
        sent = await asyncio.gather(*deliveries)
        # Sent together with the tasks: acknowledged by now or soon, so awaiting each in turn costs nothing.
        pending_offsets = [None if pending is None else (await pending).offset for pending in statuses]
        return [
            TaskHandle(
                record.task_id,
                intake or topic,
                partition,
                None if intake is not None else meta.offset,
                self.lifecycle,
                pending_offset,
                record.returns,
            )
            for (record, partition), meta, pending_offset in zip(records, sent, pending_offsets, strict=True)
        ]

    async def _earlier(self, record: TaskRecord, topic: str, partition: int) -> TaskHandle | None:
        """The handle of the task already submitted under `record`'s id, if it still counts: any
        state for an idempotency key; for a cached task, a success within its `cache_ttl` or one not
        finished yet (a failure is never cached)."""
        found = await self.lifecycle.status(record.task_id, status_partition(partition, self.lifecycle.partitions))
        if found.state is TaskState.UNKNOWN:
            return None
        if record.cache_ttl is not None:
            age_s = (time.time_ns() // 1_000_000 - found.at_ms) / 1000
            if found.state in (TaskState.DEAD, TaskState.CANCELLED) or (
                found.state is TaskState.SUCCEEDED and age_s > record.cache_ttl
            ):
                return None
        # No `pending` offset to follow from: its `wait` looks the status up first, then follows.
        return TaskHandle(record.task_id, topic, partition, None, self.lifecycle, None, record.returns)

    async def _partition(self, kafka: Any, topic: str, key: bytes | None) -> int:
        """The intake partition, picked here so the `pending` status can go to its status partition."""
        partitions = sorted(await kafka.partitions_for(topic))
        available = sorted(kafka.client.cluster.available_partitions_for_topic(topic) or ()) or partitions
        return int(self._partitioner(key, partitions, available))

    async def status(self, task_id: str) -> TaskStatus:
        """The latest status of any task id within the status TTL (`unknown` if none): through
        `streamproc web` when `web_url` is set, else a bounded read of the status topic."""
        await self._ready(self.lifecycle.topic)
        return await self.lifecycle.status(task_id)

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:  # noqa: ASYNC109 (SPEC §12)
        """The terminal status of any task id, waiting for it when it has not finished yet."""
        await self._ready(self.lifecycle.topic)
        return await self.lifecycle.wait(task_id, timeout=timeout)

    async def result(self, task_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (SPEC §12)
        """The result of any task id (see `TaskHandle.result`), also when it finished before the call."""
        return result_of(await self.wait(task_id, timeout))

    async def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a task: once this returns it never starts on any worker (SPEC §12). Returns the
        task's status before the cancel: a terminal one means it had already finished (for a
        `succeeded` one the cancel is still recorded, since a workflow's steps and members not
        started yet carry its id as their `root-id`: SPEC §13); otherwise the cancel is recorded
        and the task's status is now `cancelled`."""
        before = await self.status(task_id)
        # A workflow's root id that succeeded (a chain's first step) still cancels the steps after it.
        if before.state.terminal and before.state is not TaskState.SUCCEEDED:
            return before
        kafka = await self._ready(self.lifecycle.control_topic)
        await (await kafka.send(self.lifecycle.control_topic, cancel_value(task_id), key=task_id.encode()))
        if before.state is TaskState.SUCCEEDED:
            return before  # its own status stays: it did succeed
        if await self._exists(self.topology.schedules_topic):  # a delayed task's schedule: it never fires
            await (await kafka.send(self.topology.schedules_topic, None, key=task_id.encode()))
        # Its status partition follows its intake partition, which an id alone does not tell: all of
        # them get the record, so a reader of any one sees it (the worker writes it again when it skips).
        cancelled = TaskStatus(task_id, TaskState.CANCELLED, before.task, before.attempt, time.time_ns() // 1_000_000)
        value, key = cancelled.to_json(), task_id.encode()
        sends = [
            await kafka.send(self.lifecycle.topic, value, key=key, partition=p)
            for p in range(self.lifecycle.partitions)
        ]
        await asyncio.gather(*sends)
        return before

    async def send_record(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        """Queue a record that is already complete (a replayed dead letter) as it is; the returned
        future resolves once the broker acknowledged it."""
        kafka = await self._ready(topic)
        delivery: asyncio.Future[Any] = await kafka.send(topic, value, key=key, headers=headers)
        return delivery

    async def _exists(self, topic: str) -> bool:
        """Whether `topic` exists (a started client is needed)."""
        try:
            await self._ready(topic)
        except StreamprocError:
            return False
        return True

    async def _ready(self, topic: str) -> Any:
        """The started client, once `topic` is known to exist.

        Without the check, aiokafka waits its whole request timeout (40 s) for a missing topic and
        then raises a bare `UnknownTopicOrPartitionError`; topics are declared as code, so say so.
        One read of the cluster's metadata learns every topic, and concurrent first submits wait for
        it rather than each reading it: on a cluster of thousands of topics each read costs
        milliseconds of decoding, and hundreds at once time out.
        """
        kafka = self._kafka
        if kafka is None:
            raise StreamprocError("the producer is not started: use `async with producer:` or `await producer.start()`")
        if topic not in self._known_topics:
            async with self._metadata_lock:
                if topic not in self._known_topics:
                    self._known_topics.update((await kafka.client.fetch_all_metadata()).topics())
                if topic not in self._known_topics:
                    raise StreamprocError(
                        f"topic {topic!r} does not exist on {self.settings.bootstrap_servers}: "
                        "run `streamproc topics apply`"
                    )
        return kafka
