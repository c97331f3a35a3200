"""A dead letter as `streamproc dlq` reads it, how a user names one, and which ones a command selects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamproc.envelope import (
    ATTEMPT,
    DLQ_REASON,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    ERROR_TYPE,
    FAILED_AT,
    MAX_TIME_MS,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    PRIORITY,
    TASK,
    TASK_ID,
    decode_headers,
    int_header,
)

NO_TASK = "(no task)"  # how summaries and listings name a dead letter without a task header

LetterRef = tuple[int | None, int]
"""A dead letter as the user names it: (partition, offset), the partition None for a bare offset."""


def parse_ref(text: str) -> LetterRef:
    """`PARTITION:OFFSET` or a bare `OFFSET` (the id `dlq list` shows)."""
    partition, sep, offset = text.strip().rpartition(":")
    try:
        ref = (int(partition) if sep else None, int(offset))
    except ValueError:
        raise ValueError(f"{text!r} is not PARTITION:OFFSET or OFFSET") from None
    if ref[1] < 0 or (ref[0] is not None and ref[0] < 0):
        raise ValueError(f"{text!r}: partitions and offsets are not negative")
    return ref


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record with its headers as text and the SPEC §3 headers as properties."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @classmethod
    def from_record(cls, record: Any) -> DeadLetter:
        """From an aiokafka `ConsumerRecord`; undecodable header bytes are replaced, never fatal."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            decode_headers(record.headers),
        )

    @property
    def id(self) -> str:
        """What `dlq list` shows and `dlq show`/`replay --offsets` accept."""
        return f"{self.partition}:{self.offset}"

    @property
    def position(self) -> str:
        """What a replayed record's `replayed-from` header carries."""
        return f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def task(self) -> str | None:
        return self.headers.get(TASK) or None

    @property
    def reason(self) -> str | None:
        return self.headers.get(DLQ_REASON) or None

    @property
    def priority(self) -> str | None:
        return self.headers.get(PRIORITY) or None

    @property
    def attempt(self) -> int:
        return int_header(self.headers, ATTEMPT, 1)

    @property
    def error_type(self) -> str:
        return self.headers.get(ERROR_TYPE, "")

    @property
    def error_message(self) -> str:
        return self.headers.get(ERROR_MESSAGE, "")

    @property
    def error_traceback(self) -> str | None:
        """The failing attempt's traceback (its last 8 KiB); None for a poison record or a letter
        written before tracebacks were kept."""
        return self.headers.get(ERROR_TRACEBACK) or None

    @property
    def failed_at_ms(self) -> int:
        """`failed-at`, else the record's timestamp; 0 if that is out of range too (any client may
        write the DLQ), so a listing can always show it as a date."""
        return int_header(self.headers, FAILED_AT, self.timestamp if 0 <= self.timestamp <= MAX_TIME_MS else 0)

    @property
    def task_id(self) -> str | None:
        return self.headers.get(TASK_ID) or None

    @property
    def original_position(self) -> str | None:
        """`<topic>-<partition>-<offset>` of the intake record the task failed from."""
        parts = [self.headers.get(name) for name in (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)]
        return "-".join(p for p in parts if p) if all(parts) else None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command works on: all, or those of one task and/or reason."""

    task: str | None = None
    reason: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (self.task is None or letter.task == self.task) and (self.reason is None or letter.reason == self.reason)
