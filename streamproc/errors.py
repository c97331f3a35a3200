"""Errors that streamproc reports to users as one clear line (the CLI exits 1 on them)."""

from __future__ import annotations

from collections.abc import Mapping


class StreamprocError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


class PermanentError(Exception):
    """Raised by a handler for a failure no retry can fix: the task goes to the DLQ at once."""


class BatchFailed(Exception):
    """Raised by a batch handler (SPEC §15) to fail only some items: `failures` maps the index of each
    failed item in the list the handler got to its error; every other item succeeded. An error that
    is a `PermanentError` sends its item to the DLQ at once, any other goes through the retry tiers."""

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        super().__init__(f"{len(failures)} item(s) of the batch failed")
        self.failures = dict(failures)


class PoisonRecord(Exception):
    """A record no attempt can process (bad value, unknown task…); `reason` is its DLQ reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TaskFailed(Exception):
    """Raised by `result()`: the task is dead (in the DLQ); `reason`, `error_type` and `error` say why."""

    def __init__(self, task_id: str, reason: str | None, error_type: str | None, error: str | None) -> None:
        super().__init__(f"task {task_id} is dead ({reason}): {error_type}: {error}")
        self.task_id = task_id
        self.reason = reason
        self.error_type = error_type
        self.error = error


class TaskCancelled(Exception):
    """Raised by `result()`: the task was cancelled."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was cancelled")
        self.task_id = task_id
