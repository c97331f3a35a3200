"""`TaskContext`: what a handler may know about the task it runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
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
    # Set when the task is cancelled while it runs (SPEC §12); a sync handler checks `cancelled`.
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled: a sync handler (which Python cannot interrupt) should
        stop at its next check; an async handler is cancelled at its next await anyway."""
        return self.cancel_event.is_set()
