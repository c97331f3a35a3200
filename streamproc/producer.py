"""`Producer`: submit tasks to the intake topics (SPEC §3, §4).

A submitted task is one record on `<prefix>.<priority>` with the SPEC §3 headers and a UTF-8
JSON value. Everything that can be checked locally (the priority, the payload against the
handler's model, the record size) is checked before anything is sent, so bad input fails at the
caller and never becomes a dead letter. `submit` returns only once the broker acknowledged the
record to all in-sync replicas (`acks=all`, idempotent producer): a returned task id is durable.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

from streamproc import backoff
from streamproc.app import Task
from streamproc.envelope import Headers, task_headers
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology, load_topology

DEFAULT_MAX_REQUEST_SIZE = 1_048_576  # aiokafka's default, and about the broker's default message.max.bytes
DEFAULT_PRIORITY = "normal"

Payload = BaseModel | Mapping[str, Any]


def resolve_priority(topology: Topology, priority: str | None) -> str:
    """The priority to submit at: the given one if declared; by default `normal`, else the lowest."""
    if priority is None:
        return DEFAULT_PRIORITY if DEFAULT_PRIORITY in topology.priorities else topology.priorities[-1]
    if priority not in topology.priorities:
        raise StreamprocError(f"unknown priority {priority!r}: the priorities are {', '.join(topology.priorities)}")
    return priority


def encode_payload(task: str | Task[Any, Any], payload: Payload) -> bytes:
    """The record value: validated by the handler's model for a `Task`, plain JSON for a task name."""
    name = task.name if isinstance(task, Task) else task
    if not isinstance(payload, BaseModel | Mapping):
        raise StreamprocError(
            f"payload for task {name!r} must be a mapping or a pydantic model, not {type(payload).__name__}"
        )
    try:
        if isinstance(task, Task):
            return task.encode(payload)
        if isinstance(payload, BaseModel):
            return payload.model_dump_json().encode()
        return to_json(dict(payload))
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        raise StreamprocError(f"payload for task {name!r} is not JSON-serialisable: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Record:
    """One task ready to send: validated, encoded and measured."""

    task_id: str
    value: bytes
    key: bytes | None
    headers: Headers


class Producer:
    """Submits tasks; use as `async with Producer.from_env() as producer:` or call `start()`/`stop()`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        *,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        linger_ms: int = 5,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.max_request_size = max_request_size
        self._linger_ms = linger_ms
        self._kafka: Any = None  # AIOKafkaProducer once started
        self._known_topics: set[str] = set()

    @classmethod
    def from_env(
        cls, bootstrap_servers: str | None = None, topics_file: str | os.PathLike[str] | None = None
    ) -> Producer:
        """Connection from `STREAMPROC_*` variables, topics from the topics file (or the defaults)."""
        return cls(KafkaSettings.from_env(bootstrap_servers), load_topology(topics_file))

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
        if kafka is not None:
            await kafka.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def submit(
        self,
        task: str | Task[Any, Any],
        payload: Payload,
        *,
        priority: str | None = None,
        key: str | bytes | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Send one task and wait until the broker has it; returns its task id (a UUID4).

        With a `Task` the payload is validated against its model first; a bad payload, an unknown
        priority or an oversized record raise `StreamprocError` and nothing is sent.
        """
        resolved = resolve_priority(self.topology, priority)
        topic = self.topology.intake_topic(resolved)
        record = self._prepare(task, payload, resolved, key, traceparent)
        kafka = await self._ready(topic)
        delivery = await kafka.send(topic, record.value, key=record.key, headers=record.headers)
        await delivery
        return record.task_id

    async def submit_many(
        self,
        task: str | Task[Any, Any],
        payloads: Iterable[Payload],
        *,
        priority: str | None = None,
        key: str | bytes | None = None,
        traceparent: str | None = None,
    ) -> list[str]:
        """Send many tasks of one name and wait for all deliveries together; returns their ids in order.

        Every payload is validated and measured before the first is sent, so one bad payload sends
        none. Sends are pipelined (not one round trip each), which is what makes thousands fast. If a
        delivery fails the error is raised; tasks of the batch other than that one may have been sent.
        """
        resolved = resolve_priority(self.topology, priority)
        topic = self.topology.intake_topic(resolved)
        records = [self._prepare(task, payload, resolved, key, traceparent) for payload in payloads]
        if not records:
            return []
        kafka = await self._ready(topic)
        deliveries = [await kafka.send(topic, r.value, key=r.key, headers=r.headers) for r in records]
        await asyncio.gather(*deliveries)
        return [r.task_id for r in records]

    async def send_record(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        """Queue a record that is already complete (a replayed dead letter) as it is; the returned
        future resolves once the broker acknowledged it."""
        kafka = await self._ready(topic)
        delivery: asyncio.Future[Any] = await kafka.send(topic, value, key=key, headers=headers)
        return delivery

    def _prepare(
        self,
        task: str | Task[Any, Any],
        payload: Payload,
        priority: str,
        key: str | bytes | None,
        traceparent: str | None,
    ) -> _Record:
        name = task.name if isinstance(task, Task) else task
        if not isinstance(name, str) or not name:
            raise StreamprocError(f"a task name is a non-empty string, got {name!r}")
        value = encode_payload(task, payload)
        key_bytes = key.encode() if isinstance(key, str) else key
        task_id = str(uuid.uuid4())
        headers = task_headers(name, task_id, time.time_ns() // 1_000_000, priority, traceparent=traceparent)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key_bytes, value, headers)
        if size > self.max_request_size:
            raise StreamprocError(
                f"task {name!r} is too large: {size} bytes as a record, the limit is {self.max_request_size} "
                "(max_request_size); store large data elsewhere and submit a reference to it"
            )
        return _Record(task_id, value, key_bytes, headers)

    async def _ready(self, topic: str) -> Any:
        """The started client, once `topic` is known to exist.

        Without the check, aiokafka waits its whole request timeout (40 s) for a missing topic and
        then raises a bare `UnknownTopicOrPartitionError`; topics are declared as code, so say so.
        """
        kafka = self._kafka
        if kafka is None:
            raise StreamprocError("the producer is not started: use `async with producer:` or `await producer.start()`")
        if topic not in self._known_topics:
            metadata = await kafka.client.fetch_all_metadata()
            if topic not in metadata.topics():
                raise StreamprocError(
                    f"topic {topic!r} does not exist on {self.settings.bootstrap_servers}: "
                    "run `streamproc topics apply`"
                )
            self._known_topics.add(topic)
        return kafka
