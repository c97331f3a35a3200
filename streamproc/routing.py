"""Where a finished attempt goes, and the moment its offset may count as finished.

`route` returns only once the outcome is durable. A success is durable at once. Retry tiers and
the DLQ are not built yet (see the issue on the failure path): until then a failed or dead task
is reported (a warning or an error log line, and the worker's hooks) and counts as finished, so
failures are visible, never hidden, and never stall the partition.
"""

from __future__ import annotations

import logging

import structlog

from streamproc.envelope import Envelope
from streamproc.execution import Outcome, Result

log = structlog.get_logger("streamproc.task")


class OutcomeRouter:
    """Makes each outcome durable before the worker marks the task's offset finished."""

    async def route(self, envelope: Envelope, outcome: Outcome) -> None:
        if outcome.result is Result.SUCCEEDED:
            if log.is_enabled_for(logging.DEBUG):  # spare the hot path the fields nobody logs
                log.debug("task succeeded", **_task_fields(envelope, outcome))
        elif outcome.result is Result.FAILED:
            log.warning(
                "task failed",
                error_type=outcome.error_type,
                error=str(outcome.error),
                **_task_fields(envelope, outcome),
            )
        else:
            log.error(
                "task dead",
                reason=outcome.reason,
                error_type=outcome.error_type,
                error=str(outcome.error),
                **_task_fields(envelope, outcome),
            )


def _task_fields(envelope: Envelope, outcome: Outcome) -> dict[str, object]:
    """The task fields of SPEC §7 that every task event carries."""
    return {
        "task": envelope.task,
        "task_id": envelope.task_id,
        "topic": envelope.topic,
        "partition": envelope.partition,
        "offset": envelope.offset,
        "attempt": envelope.attempt,
        "duration_ms": round(outcome.duration_s * 1000, 3),
        "outcome": outcome.result.value,
    }
