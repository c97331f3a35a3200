"""A delayed task's record on `<prefix>.schedules` (SPEC §13): what `Producer.submit(countdown=…|eta=…)`
writes and what the scheduler reads back. Pure: no Kafka client here.

The schedule record is the task's intake record as it will be sent when it falls due (its value,
its SPEC §3 headers and `run-at`, the due time in ms since epoch), keyed by the TASK ID so that
compaction keeps one record per task and a tombstone (a fired or cancelled task) deletes it. Where
the intake record goes is kept in three headers of its own:

- `schedule-topic`: the intake topic, `schedule-partition`: the intake partition the producer
  chose at submit (its `pending` status is in the status partition numbered after it),
- `schedule-key`: the intake record's key (absent: no key).

The scheduler strips these three when it fires; `run-at` stays on the intake record.

Keys starting with `periodic:` are the periodic runner's state, not schedules. Anything else the
scheduler cannot read (no key, a key that is not UTF-8, a missing or invalid header) is junk:
`parse` says why, and the scheduler skips it (it never deletes what it cannot read).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamproc.envelope import MAX_TIME_MS, RUN_AT, TASK_ID, Headers, decode_headers
from streamproc.errors import StreamprocError

SCHEDULE_TOPIC = "schedule-topic"
SCHEDULE_PARTITION = "schedule-partition"
SCHEDULE_KEY = "schedule-key"
PERIODIC_PREFIX = "periodic:"
_OWN = frozenset((SCHEDULE_TOPIC, SCHEDULE_PARTITION, SCHEDULE_KEY))
_MAX_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Entry:
    """A schedule that can fire: the intake record to send at `due_ms`, and the schedules
    partition it came from (its tombstone goes there)."""

    task_id: str
    due_ms: int
    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: Headers
    source_partition: int


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A fired or cancelled schedule: `task_id` must not fire (any more)."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Junk:
    """A record the scheduler cannot read; `reason` says why."""

    reason: str


Parsed = Entry | Tombstone | Junk | None  # None: not a schedule (a periodic task's state)


def schedule_headers(intake_headers: Headers, run_at_ms: int, topic: str, partition: int, key: bytes | None) -> Headers:
    """The headers of a schedule record: the intake record's plus `run-at` and where it goes."""
    headers = [*intake_headers, (RUN_AT, str(run_at_ms).encode())]
    headers += [(SCHEDULE_TOPIC, topic.encode()), (SCHEDULE_PARTITION, str(partition).encode())]
    if key is not None:
        headers.append((SCHEDULE_KEY, key))
    return headers


def parse(record: Any, intake_topics: Collection[str], intake_partitions: int) -> Parsed:
    """What an aiokafka `ConsumerRecord` of the schedules topic is; never raises. Only a declared
    intake topic (`intake_topics`) and partition (below `intake_partitions`) may be a target."""
    raw_key = record.key
    if raw_key is None:
        return Junk("no key")
    try:
        task_id = raw_key.decode()
    except UnicodeDecodeError:
        return Junk("its key is not UTF-8")
    if task_id.startswith(PERIODIC_PREFIX):
        return None
    if record.value is None:
        return Tombstone(task_id)
    key: bytes | None = None
    headers: Headers = []
    for name, value in record.headers or ():
        if name == SCHEDULE_KEY:
            key = value if value is not None else b""
        elif name not in _OWN:
            headers.append((name, value if value is not None else b""))
    text = decode_headers(record.headers)
    due_ms = _number(text.get(RUN_AT), MAX_TIME_MS)
    if due_ms is None:
        return Junk(f"no valid {RUN_AT} header")
    topic = text.get(SCHEDULE_TOPIC, "")
    if topic not in intake_topics:
        return Junk(f"{SCHEDULE_TOPIC} {topic!r} is not a declared intake topic")
    partition = _number(text.get(SCHEDULE_PARTITION), intake_partitions - 1)
    if partition is None:
        return Junk(f"no valid {SCHEDULE_PARTITION} header (the intake topics have {intake_partitions} partitions)")
    if text.get(TASK_ID, task_id) != task_id:
        return Junk(f"its key is not its {TASK_ID} header")
    return Entry(task_id, due_ms, topic, partition, key, record.value, headers, record.partition)


def _number(text: str | None, highest: int) -> int | None:
    if text is None or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= highest else None


def delayed_until(countdown: float | None, eta: datetime | None) -> int | None:
    """When a delayed task falls due (ms since epoch); None for a task to run now (none given, or due
    already). Raises `StreamprocError` for both, a naive `eta` or a countdown that is no number."""
    if countdown is not None and eta is not None:
        raise StreamprocError("give countdown or eta, not both")
    now_ms = time.time_ns() // 1_000_000
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float) or not math.isfinite(countdown):
            raise StreamprocError(f"countdown is a finite number of seconds, not {countdown!r}")
        due_ms = now_ms + math.ceil(countdown * 1000)
    elif eta is not None:
        if not isinstance(eta, datetime):
            raise StreamprocError(f"eta is a datetime, not {type(eta).__name__}")
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise StreamprocError(f"eta {eta.isoformat()} has no timezone: give one (e.g. tzinfo=UTC)")
        due_ms = math.ceil(eta.timestamp() * 1000)
    else:
        return None
    if due_ms > MAX_TIME_MS:
        raise StreamprocError("countdown is too far ahead: a task falls due by 9999-12-31")
    return due_ms if due_ms > now_ms else None
