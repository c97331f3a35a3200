"""The record format of SPEC §3: header names, and a task's envelope read from a Kafka record.

Producers write these headers; any other Kafka client may leave them out, and every header has a
documented fallback (the topic's route, the record's coordinates and timestamp), so a record
with only a `task` header and a JSON value is a valid task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TASK = "task"
TASK_ID = "task-id"
ENQUEUED_AT = "enqueued-at"
ATTEMPT = "attempt"
PRIORITY = "priority"
TRACEPARENT = "traceparent"
# Added to retry and DLQ records.
ORIGINAL_TOPIC = "original-topic"
ORIGINAL_PARTITION = "original-partition"
ORIGINAL_OFFSET = "original-offset"
ERROR_TYPE = "error-type"
ERROR_MESSAGE = "error-message"
FAILED_AT = "failed-at"
RETRY_AT = "retry-at"  # tier records only
DLQ_REASON = "dlq-reason"  # DLQ records only
REPLAYED_FROM = "replayed-from"  # set by `streamproc dlq replay`

DLQ_REASONS = (
    "retries_exhausted",
    "permanent_error",
    "invalid_payload",
    "undecodable",
    "unknown_task",
    "missing_task",
)
MAX_ERROR_MESSAGE_BYTES = 1024
_ORIGIN = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)
_FAILURE = (ERROR_TYPE, ERROR_MESSAGE, FAILED_AT, RETRY_AT, DLQ_REASON)

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

    @property
    def retry_at_ms(self) -> int | None:
        """When a tier record's next attempt is due (ms since epoch)."""
        return int_header(self.headers, RETRY_AT, 0) or None

    def log_fields(self) -> dict[str, object]:
        """The task fields of SPEC §7 every task log event carries (routing adds duration and outcome)."""
        return {
            "task": self.task,
            "task_id": self.task_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "attempt": self.attempt,
        }


def decode_headers(raw: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    """A record's headers as text; undecodable bytes are replaced, never fatal."""
    return {name: value.decode("utf-8", "replace") for name, value in raw or ()}


def int_header(headers: dict[str, str], name: str, default: int) -> int:
    """The header as an int; `default` when absent or not a number (a missing one raises nothing,
    which keeps the per-record path cheap)."""
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return default


def read_envelope(record: Any, route_task: str | None, topic_priority: str) -> Envelope:
    """The envelope of an aiokafka `ConsumerRecord`; `route_task` and `topic_priority` are the
    fallbacks the topic's declaration gives. Undecodable header bytes are replaced, never fatal."""
    headers = decode_headers(record.headers)
    return Envelope(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=headers,
        task=headers.get(TASK) or route_task,
        task_id=headers.get(TASK_ID) or f"{record.topic}-{record.partition}-{record.offset}",
        enqueued_at_ms=int_header(headers, ENQUEUED_AT, record.timestamp),
        attempt=max(1, int_header(headers, ATTEMPT, 1)),
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


def _encoded(headers: dict[str, str]) -> Headers:
    return [(name, value.encode()) for name, value in headers.items()]


def _cap(text: str, limit: int = MAX_ERROR_MESSAGE_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    return text.encode()[:limit].decode("utf-8", "ignore")


def failure_headers(
    envelope: Envelope,
    *,
    attempt: int,
    error_type: str,
    error_message: str,
    failed_at_ms: int,
    retry_at_ms: int | None = None,
    dlq_reason: str | None = None,
) -> Headers:
    """Headers of the retry record (with `retry_at_ms`) or DLQ record (with `dlq_reason`) of a task.

    Every header the record had is kept (an application's own ones too), with the fallbacks of
    SPEC §3 written out, so the task keeps its id, first-enqueued time and priority wherever it
    goes. `original-*` name the intake record and survive later tiers; the failure headers describe
    only this failure.
    """
    headers = {name: value for name, value in envelope.headers.items() if name not in _FAILURE}
    if envelope.task is not None:
        headers[TASK] = envelope.task
    headers |= {
        TASK_ID: envelope.task_id,
        ENQUEUED_AT: str(envelope.enqueued_at_ms),
        ATTEMPT: str(attempt),
        PRIORITY: envelope.priority,
    }
    origin = (envelope.topic, str(envelope.partition), str(envelope.offset))
    for name, value in zip(_ORIGIN, origin, strict=True):
        headers.setdefault(name, value)
    headers |= {ERROR_TYPE: error_type, ERROR_MESSAGE: _cap(error_message), FAILED_AT: str(failed_at_ms)}
    if retry_at_ms is not None:
        headers[RETRY_AT] = str(retry_at_ms)
    if dlq_reason is not None:
        headers[DLQ_REASON] = dlq_reason
    return _encoded(headers)


def replay_headers(dead: dict[str, str], replayed_from: str) -> Headers:
    """Headers of a DLQ record sent back to intake: a first attempt again, pointing at the dead letter."""
    headers = {name: value for name, value in dead.items() if name not in _FAILURE and name not in _ORIGIN}
    headers |= {ATTEMPT: "1", REPLAYED_FROM: replayed_from}
    return _encoded(headers)
