"""What a task id's status is, and the status record that carries it (SPEC §12).

One record per state change on `<prefix>.status`, keyed by the task id (the topic is compacted,
so the latest record of an id is what survives) and written to the partition numbered like the
task's intake partition (`status_partition`): a task's records always land in one partition, and
a worker taking over intake partition *p* finds what its previous owner finished in status
partition *p* alone. The value is a JSON object:

    {"id": "…", "state": "succeeded", "task": "send_email", "attempt": 1, "at": 1764000000000,
     "result": {…}}

plus, by state: `result_error` (a result that could not be stored), `error_type`, `error` and
`reason` (`dead`: the DLQ reason), `retry_at` (`retrying`: ms when the next attempt is due).

Records of one id can arrive out of order (the producer's `pending` and the worker's outcome
travel on different connections; an at-least-once re-run writes again), so readers merge them with
`newer`: a terminal state is never replaced by a non-terminal one, otherwise the later record wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic_core import PydanticSerializationError, from_json, to_json


class TaskState(StrEnum):
    PENDING = "pending"  # submitted through `Producer`, not started yet
    STARTED = "started"  # running (only for tasks with `track_started=True`)
    RETRYING = "retrying"  # attempt n failed; the next one is due at `retry_at`
    SUCCEEDED = "succeeded"  # with the result
    DEAD = "dead"  # in the DLQ: `reason`, `error_type`, `error`
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # no record within the status TTL (never written)

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset((TaskState.SUCCEEDED, TaskState.DEAD, TaskState.CANCELLED))
_OPTIONAL = ("result_error", "error_type", "error", "reason", "retry_at")


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """The state of one task id, as the latest status record says."""

    task_id: str
    state: TaskState
    task: str | None = None
    attempt: int = 0
    at_ms: int = 0  # when the state was written (ms since epoch)
    result: Any = None  # the handler's return value as JSON data (succeeded)
    result_error: str | None = None  # why the result is not stored (succeeded)
    error_type: str | None = None  # dead, retrying
    error: str | None = None  # dead, retrying: the error message
    reason: str | None = None  # dead: the DLQ reason
    retry_at: int | None = None  # retrying: ms since epoch

    @classmethod
    def unknown(cls, task_id: str) -> TaskStatus:
        return cls(task_id, TaskState.UNKNOWN)

    def to_json(self) -> bytes:
        """The record value. A result that cannot be serialised is replaced by `result_error`."""
        if self.state is TaskState.SUCCEEDED and self.result_error is None:
            return succeeded_value(self.task_id, self.task, self.attempt, self.at_ms, self.result)
        value: dict[str, Any] = {
            "id": self.task_id,
            "state": self.state.value,
            "attempt": self.attempt,
            "at": self.at_ms,
        }
        if self.task is not None:
            value["task"] = self.task
        for name in _OPTIONAL:
            if (field := getattr(self, name)) is not None:
                value[name] = field
        return to_json(value)

    @classmethod
    def from_json(cls, raw: bytes | None) -> TaskStatus | None:
        """The status a record value carries; None for a value this module did not write (never raises)."""
        if not raw:
            return None
        try:
            value = from_json(raw)
            if not isinstance(value, dict) or not isinstance(task_id := value.get("id"), str):
                return None
            state = TaskState(str(value.get("state")))
            return cls(
                task_id=task_id,
                state=state,
                task=_text(value.get("task")),
                attempt=_int(value.get("attempt")) or 0,
                at_ms=_int(value.get("at")) or 0,
                result=value.get("result"),
                result_error=_text(value.get("result_error")),
                error_type=_text(value.get("error_type")),
                error=_text(value.get("error")),
                reason=_text(value.get("reason")),
                retry_at=_int(value.get("retry_at")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def as_dict(self) -> dict[str, Any]:
        """The status as JSON data (`streamproc status --json`, the web API)."""
        data: dict[str, Any] = from_json(self.to_json())
        return data


def succeeded_value(task_id: str, task: str | None, attempt: int, at_ms: int, result: Any) -> bytes:
    """The record value of a `succeeded` status with its result, as `TaskStatus.to_json` writes it; the
    worker writes one per task, so it builds no `TaskStatus` for it. A result that cannot be
    serialised is replaced by `result_error`."""
    value: dict[str, Any] = {"id": task_id, "state": "succeeded", "attempt": attempt, "at": at_ms}
    if task is not None:
        value["task"] = task
    value["result"] = result
    try:
        return to_json(value)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        del value["result"]
        value["result_error"] = f"the result is not JSON-serialisable: {exc}"
        return to_json(value)


def newer(current: TaskStatus | None, incoming: TaskStatus) -> TaskStatus:
    """The status to keep when `incoming` is read after `current` (see the module docstring)."""
    if current is not None and current.state.terminal and not incoming.state.terminal:
        return current
    return incoming


def status_partition(intake_partition: int, partitions: int) -> int:
    """The status partition of a task whose intake record lies in `intake_partition`."""
    return intake_partition % partitions


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
