"""`TaskContext`: what a handler may know about the task it runs."""

from __future__ import annotations

from dataclasses import dataclass

import structlog


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Passed to handlers that declare a second parameter; built only for those handlers."""

    task: str
    task_id: str
    attempt: int
    priority: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: dict[str, str]
    enqueued_at: int  # ms since epoch of the first submission
    log: structlog.typing.FilteringBoundLogger
