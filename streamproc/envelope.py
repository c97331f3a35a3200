"""The record format of SPEC §3: header names, and a task's envelope read from a Kafka record.

Producers write these headers; any other Kafka client may leave them out, and every header has a
documented fallback (the topic's route, the record's coordinates and timestamp), so a record
with only a `task` header and a JSON value is a valid task.

Nothing a record carries may crash a worker, so reading one never raises: a header value that is
not UTF-8 is replaced (U+FFFD), a null one reads as empty; a number outside `NUMERIC_RANGES` counts
as absent (its fallback applies); a `priority` that is not declared counts as absent too, so junk
cannot grow the metrics' label set. A header key that is not UTF-8 (kept by `lenient_decoding`) is
written with each such byte as `\\xNN` (`b"k\\xff"` → `k\\xff`), which any producer can encode, and
the envelope is marked `undecodable`: the worker dead-letters it without calling the handler.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
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
ERROR_TRACEBACK = "error-traceback"  # the failing attempt's traceback, its last 8 KiB
FAILED_AT = "failed-at"
RETRY_AT = "retry-at"  # tier records only
DLQ_REASON = "dlq-reason"  # DLQ records only
REPLAYED_FROM = "replayed-from"  # set by `streamproc dlq replay`
VALUE_DROPPED = "value-dropped"  # DLQ records too large to copy: the size in bytes of the dropped value
# Time (SPEC §13).
RUN_AT = "run-at"  # a delayed task: when it falls due, ms since epoch (kept on the intake record it becomes)
PERIODIC = "periodic"  # a periodic task's run: the schedule's name
SLOT = "slot"  # a periodic task's run: the slot it fires for, ms since epoch
# Workflows (SPEC §13): chain steps, group and chord members (`workflows.wire` says what they hold).
ROOT_ID = "root-id"  # the workflow's id: cancelling it cancels every step or member not started yet
PARENT_ID = "parent-id"  # a chain step's previous step
WORKFLOW = "workflow"  # compact JSON: what comes after this step or member

DLQ_REASONS = (
    "retries_exhausted",
    "permanent_error",
    "invalid_payload",
    "undecodable",
    "unknown_task",
    "missing_task",
)
MAX_ERROR_MESSAGE_BYTES = 1024
MAX_TRACEBACK_BYTES = 8 * 1024
TRACEBACK_CUT = "…\n"  # starts a traceback cut to its end
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant `datetime` can represent
# The values a numeric header may take; anything else (and any text over 20 characters) counts as absent.
NUMERIC_RANGES = {
    ATTEMPT: (1, 1_000_000),
    ENQUEUED_AT: (0, MAX_TIME_MS),
    RETRY_AT: (0, MAX_TIME_MS),
    FAILED_AT: (0, MAX_TIME_MS),
    ORIGINAL_PARTITION: (0, 2**31 - 1),
    ORIGINAL_OFFSET: (0, 2**63 - 1),
}
_MAX_NUMBER_CHARS = 20  # 2**63 - 1 has 19 digits; longer text is not parsed at all
_ORIGIN = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)
_FAILURE = (ERROR_TYPE, ERROR_MESSAGE, ERROR_TRACEBACK, FAILED_AT, RETRY_AT, DLQ_REASON, VALUE_DROPPED)
_OWN = frozenset((TASK, TASK_ID, ENQUEUED_AT, ATTEMPT, PRIORITY, TRACEPARENT, *_ORIGIN, *_FAILURE))

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
    undecodable: str | None = None  # what makes the record unreadable (a header key that is not UTF-8)

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


RawHeaders = Iterable[tuple[str, bytes | None]] | None


def decode_headers(raw: RawHeaders) -> dict[str, str]:
    """A record's headers as text, never fatal (see the module docstring)."""
    return _decode_headers(raw)[0]


def _decode_headers(raw: RawHeaders) -> tuple[dict[str, str], list[str]]:
    """The headers as text, and the escaped names of those whose key was not UTF-8."""
    headers = {name: value.decode("utf-8", "replace") if value is not None else "" for name, value in raw or ()}
    if "".join(headers).isascii():  # the common case, checked at C speed
        return headers, []
    escaped = {name: name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for name in headers}
    return {escaped[name]: value for name, value in headers.items()}, [e for n, e in escaped.items() if e != n]


def int_header(headers: dict[str, str], name: str, default: int) -> int:
    """The header as an int; `default` when absent, not a number or outside its `NUMERIC_RANGES`
    (a missing one raises nothing, which keeps the per-record path cheap)."""
    raw = headers.get(name)
    if raw is None or len(raw) > _MAX_NUMBER_CHARS:
        return default
    try:
        number = int(raw)
    except ValueError:
        return default
    low, high = NUMERIC_RANGES.get(name, (0, 2**63 - 1))
    return number if low <= number <= high else default


def read_envelope(record: Any, route_task: str | None, topic_priority: str, priorities: Mapping[str, int]) -> Envelope:
    """The envelope of an aiokafka `ConsumerRecord`; never raises.

    `route_task` and `topic_priority` are the fallbacks the topic's declaration gives (no priority
    for a tier); `priorities` maps each declared priority to its rank, 0 the highest. A `priority`
    header counts only when it names a declared one; otherwise the topic's priority applies, or on
    a tier the lowest one.
    """
    headers, bad_keys = _decode_headers(record.headers)
    priority = headers.get(PRIORITY, "")
    if priority not in priorities:
        priority = topic_priority or max(priorities, key=priorities.__getitem__)
    enqueued_at = int_header(headers, ENQUEUED_AT, -1)
    if enqueued_at < 0:  # else the record's timestamp, unless out of range (-1 from old clients): then now
        timestamp = record.timestamp
        enqueued_at = timestamp if 0 <= timestamp <= MAX_TIME_MS else time.time_ns() // 1_000_000
    topic, partition, offset = record.topic, record.partition, record.offset
    # Positional: the per-record path, where keywords cost a tenth of this function.
    return Envelope(
        topic,
        partition,
        offset,
        record.key,
        record.value,
        headers,
        headers.get(TASK) or route_task,  # task
        headers.get(TASK_ID) or f"{topic}-{partition}-{offset}",  # task_id
        enqueued_at,
        int_header(headers, ATTEMPT, 1),
        priority,
        f"header key {', '.join(bad_keys)} is not UTF-8 (shown with \\xNN escapes)" if bad_keys else None,
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


def _cap(text: str, limit: int = MAX_ERROR_MESSAGE_BYTES, *, keep_end: bool = False) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character (a lone surrogate, which
    a handler's error may carry, is written as `\\udcff`).

    By default the start is kept. With `keep_end` the end is kept instead, behind `TRACEBACK_CUT`
    (counted in `limit`) when anything was cut: what a traceback needs, whose innermost frames and
    exception message come last."""
    encoded = text.encode("utf-8", "backslashreplace")
    if len(encoded) <= limit:
        return encoded.decode()
    if not keep_end:
        return encoded[:limit].decode("utf-8", "ignore")
    mark = TRACEBACK_CUT.encode()
    return TRACEBACK_CUT + encoded[len(encoded) - (limit - len(mark)) :].decode("utf-8", "ignore")


def cap_error_message(text: str) -> str:
    """An error message cut to `MAX_ERROR_MESSAGE_BYTES` UTF-8 bytes on a character boundary."""
    return _cap(text)


def cap_traceback(text: str) -> str:
    """A traceback cut to `MAX_TRACEBACK_BYTES` UTF-8 bytes on a character boundary, keeping its END (the
    innermost frames and the exception's message matter most); a cut one starts with `TRACEBACK_CUT`."""
    return _cap(text, MAX_TRACEBACK_BYTES, keep_end=True)


def failure_headers(
    envelope: Envelope,
    *,
    attempt: int,
    error_type: str,
    error_message: str,
    failed_at_ms: int,
    retry_at_ms: int | None = None,
    dlq_reason: str | None = None,
    value_dropped: int | None = None,
    error_traceback: str | None = None,
) -> Headers:
    """Headers of the retry record (with `retry_at_ms`) or DLQ record (with `dlq_reason`) of a task.

    Every header the record had is kept (an application's own ones too), with the fallbacks of
    SPEC §3 written out, so the task keeps its id, first-enqueued time and priority wherever it
    goes. `original-*` name the intake record and survive later tiers (unless one is missing or out
    of range: then all three name this record); the failure headers describe only this failure.
    `value_dropped` is the size of a value too large to copy (`value-dropped` header);
    `error_traceback` the failing attempt's formatted traceback (`error-traceback`, its last 8 KiB,
    see `cap_traceback`): none for a failure without one (a poison record, a deferral), and then no
    header, not even an earlier failure's.
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
    if not headers.get(ORIGINAL_TOPIC) or min(int_header(headers, name, -1) for name in _ORIGIN[1:]) < 0:
        headers |= zip(_ORIGIN, (envelope.topic, str(envelope.partition), str(envelope.offset)), strict=True)
    headers |= {ERROR_TYPE: error_type, ERROR_MESSAGE: cap_error_message(error_message), FAILED_AT: str(failed_at_ms)}
    if retry_at_ms is not None:
        headers[RETRY_AT] = str(retry_at_ms)
    if dlq_reason is not None:
        headers[DLQ_REASON] = dlq_reason
    if value_dropped is not None:
        headers[VALUE_DROPPED] = str(value_dropped)
    if error_traceback:
        headers[ERROR_TRACEBACK] = cap_traceback(error_traceback)
    return _encoded(headers)


def own_headers(headers: Headers) -> Headers:
    """Only streamproc's headers, each value cut to 1 KiB (a traceback to its last 1 KiB): what a dead
    letter keeps when even its copy without the value is too large (a huge key or headers)."""
    return [
        (name, _cap(value.decode("utf-8", "replace"), keep_end=True).encode())
        if name == ERROR_TRACEBACK
        else (name, value[:MAX_ERROR_MESSAGE_BYTES])
        for name, value in headers
        if name in _OWN
    ]


def replay_headers(dead: dict[str, str], replayed_from: str) -> Headers:
    """Headers of a DLQ record sent back to intake: a first attempt again, pointing at the dead letter."""
    headers = {name: value for name, value in dead.items() if name not in _FAILURE and name not in _ORIGIN}
    headers |= {ATTEMPT: "1", REPLAYED_FROM: replayed_from}
    return _encoded(headers)
