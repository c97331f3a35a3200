"""`TaskContext`: what a handler may know about the task it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# For the annotation only: importing structlog imports rich when it is installed, and a module of
# tasks that a web app imports to submit them must not pay for that (tests/unit/test_import_path.py).
if TYPE_CHECKING:
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
