"""The record format of SPEC §3: header names, and a task's envelope read from a Kafka record.

Producers write these headers; any other Kafka client may leave them out, and every header has a
documented fallback (the topic's route, the record's coordinates and timestamp), so a record
with only a `task` header and a JSON value is a valid task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TASK = "task"
TASK_ID = "task-id"
ENQUEUED_AT = "enqueued-at"
ATTEMPT = "attempt"
PRIORITY = "priority"
TRACEPARENT = "traceparent"

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class Envelope:
    """Where a task came from and what its headers (or their fallbacks) say about it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    task: str | None
    task_id: str
    enqueued_at_ms: int
    attempt: int
    priority: str

    @property
    def position(self) -> str:
        return f"{self.topic}-{self.partition}-{self.offset}"


def _int_header(headers: dict[str, str], name: str, default: int) -> int:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return default


def read_envelope(record: Any, route_task: str | None, topic_priority: str) -> Envelope:
    """The envelope of an aiokafka `ConsumerRecord`; `route_task` and `topic_priority` are the
    fallbacks the topic's declaration gives. Undecodable header bytes are replaced, never fatal."""
    headers = {name: raw.decode("utf-8", "replace") for name, raw in record.headers or ()}
    return Envelope(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=headers,
        task=headers.get(TASK) or route_task,
        task_id=headers.get(TASK_ID) or f"{record.topic}-{record.partition}-{record.offset}",
        enqueued_at_ms=_int_header(headers, ENQUEUED_AT, record.timestamp),
        attempt=max(1, _int_header(headers, ATTEMPT, 1)),
        priority=headers.get(PRIORITY) or topic_priority,
    )


def task_headers(
    task: str, task_id: str, enqueued_at_ms: int, priority: str, attempt: int = 1, traceparent: str | None = None
) -> Headers:
    """Headers of a newly submitted task."""
    headers = [
        (TASK, task.encode()),
        (TASK_ID, task_id.encode()),
        (ENQUEUED_AT, str(enqueued_at_ms).encode()),
        (ATTEMPT, str(attempt).encode()),
        (PRIORITY, priority.encode()),
    ]
    if traceparent:
        headers.append((TRACEPARENT, traceparent.encode()))
    return headers
