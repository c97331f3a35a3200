"""Where a finished attempt goes, and the moment its offset may count as finished (SPEC §3, §5).

`route` returns only once the outcome is durable: a success at once; anything else once the
broker has acknowledged (`acks=all`, idempotent producer) its record on a delay tier or the DLQ.
Until then the worker keeps the offset unfinished, so a crash re-runs the task, never loses it.

- retryable failure of attempt n → the tier `RetryPolicy` picks, with `attempt` n+1 and
  `retry-at`; past `max_retries` → the DLQ, `retries_exhausted`;
- dead on arrival (poison record, `PermanentError`) → the DLQ with its reason;
- deferred (open circuit) → the first tier with the same `attempt`: no attempt is spent.

A record too large to copy (the original plus the failure headers exceed the tier's or DLQ's
`max.message.bytes`) goes to the DLQ with an empty value and `value-dropped: <size in bytes>`,
rather than blocking its partition. It keeps its reason; a retryable failure (or a deferral) whose
tier copy is too large can never be retried, so it is dead-lettered as `retries_exhausted`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog

from streamproc.acked import TOO_LARGE, AckedWriter
from streamproc.app import Task
from streamproc.envelope import WORKFLOW, Envelope, failure_headers, own_headers
from streamproc.execution import Outcome, Result
from streamproc.retry import RetryPolicy
from streamproc.topology import Topology

if TYPE_CHECKING:
    from streamproc.workflows.continuation import WorkflowContinuation

log = structlog.get_logger("streamproc.task")


class Disposition(StrEnum):
    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    DEFERRED = "deferred"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"  # never ran, or was cancelled while it ran: nothing to write but its status
    SKIPPED = "skipped"  # its task id already succeeded: nothing to write at all


@dataclass(frozen=True, slots=True)
class Routed:
    """Where an attempt went: `tier` and `retry_at_ms` for a retried or deferred task, `reason` for a
    dead letter."""

    disposition: Disposition
    tier: str | None = None
    reason: str | None = None
    retry_at_ms: int | None = None


_SUCCEEDED = Routed(Disposition.SUCCEEDED)
_UNWRITTEN = {Result.CANCELLED: Routed(Disposition.CANCELLED), Result.SKIPPED: Routed(Disposition.SKIPPED)}


def _now_ms() -> int:
    """Rounded up, so `retry-at` (failed-at + delay) is never before the failure plus the delay."""
    return -(-time.time_ns() // 1_000_000)


class OutcomeRouter:
    """Makes each outcome durable before the worker marks the task's offset finished."""

    def __init__(
        self,
        writer: AckedWriter,
        topology: Topology,
        tasks: Mapping[str, Task[Any, Any]],
        continuation: WorkflowContinuation | None = None,
    ) -> None:
        self._continuation = continuation  # a workflow's next step, durable before the offset finishes
        self._policy = RetryPolicy(topology)
        self._dlq = topology.dlq_topic
        self._tasks = tasks
        self._writer = writer
        self._log_successes = log.is_enabled_for(logging.DEBUG)  # logging is configured before workers start

    async def stop(self) -> None:
        if self._continuation is not None:
            await self._continuation.stop()

    def route_now(self, envelope: Envelope, outcome: Outcome) -> Routed | None:
        """`route`'s answer for an outcome with nothing to write (a success, a cancel, a skip) outside a
        workflow, without an await; None when `route` must be awaited."""
        if self._continuation is not None and WORKFLOW in envelope.headers:
            return None
        return self._unwritten(envelope, outcome)

    async def route(self, envelope: Envelope, outcome: Outcome) -> Routed:
        routed = self._unwritten(envelope, outcome) or await self._write(envelope, outcome)
        if self._continuation is not None and WORKFLOW in envelope.headers:
            await self._continuation.after(envelope, outcome, routed)  # SPEC §13: the next step, or the end
        return routed

    def _unwritten(self, envelope: Envelope, outcome: Outcome) -> Routed | None:
        if outcome.result is Result.SUCCEEDED:
            if self._log_successes:  # spare the hot path the fields nobody logs
                log.debug("task succeeded", **_task_fields(envelope, outcome))
            return _SUCCEEDED
        return _UNWRITTEN.get(outcome.result)

    async def _write(self, envelope: Envelope, outcome: Outcome) -> Routed:
        if outcome.result is Result.DEAD:
            return await self._dead_letter(envelope, outcome, outcome.reason or "permanent_error")
        if outcome.result is Result.DEFERRED:
            tier, attempt = self._policy.first, envelope.attempt
        else:
            task = self._tasks.get(envelope.task or "")
            next_tier = self._policy.after_failure(envelope.attempt, task.max_retries if task else None)
            if next_tier is None:
                return await self._dead_letter(envelope, outcome, "retries_exhausted")
            tier, attempt = next_tier, envelope.attempt + 1
        failed_at = _now_ms()
        trace = outcome.format_traceback()
        headers = failure_headers(
            envelope,
            attempt=attempt,
            error_type=outcome.error_type or "",
            error_message=str(outcome.error),
            failed_at_ms=failed_at,
            retry_at_ms=failed_at + tier.delay_ms,
            error_traceback=trace,
        )
        try:
            await self._writer.send(tier.topic, envelope.value, envelope.key, headers)
        except TOO_LARGE:
            return await self._dead_letter_without_value(envelope, outcome, tier.topic, "retries_exhausted", trace)
        disposition = Disposition.DEFERRED if outcome.result is Result.DEFERRED else Disposition.RETRIED
        routed = Routed(disposition, tier.name, retry_at_ms=failed_at + tier.delay_ms)
        (log.info if outcome.result is Result.DEFERRED else log.warning)(
            f"task {routed.disposition}",
            tier=tier.name,
            **_failure_fields(envelope, outcome, trace),
        )
        return routed

    async def _dead_letter(self, envelope: Envelope, outcome: Outcome, reason: str) -> Routed:
        trace = outcome.format_traceback()
        headers = failure_headers(
            envelope,
            attempt=envelope.attempt,
            error_type=outcome.error_type or "",
            error_message=str(outcome.error),
            failed_at_ms=_now_ms(),
            dlq_reason=reason,
            error_traceback=trace,
        )
        try:
            await self._writer.send(self._dlq, envelope.value, envelope.key, headers)
        except TOO_LARGE:
            return await self._dead_letter_without_value(envelope, outcome, self._dlq, reason, trace)
        log.error(
            "task dead-lettered",
            reason=reason,
            **_failure_fields(envelope, outcome, trace),
        )
        return Routed(Disposition.DEAD_LETTERED, reason=reason)

    async def _dead_letter_without_value(
        self, envelope: Envelope, outcome: Outcome, topic: str, reason: str, trace: str | None
    ) -> Routed:
        """Dead-letter a task whose copy is too large for `topic`: with an empty value and its size in
        `value-dropped`. Should even that be too large (a huge key or headers), the key and every header
        but streamproc's own go too, those cut to 1 KiB each."""
        size = len(envelope.value or b"")
        headers = failure_headers(
            envelope,
            attempt=envelope.attempt,
            error_type=outcome.error_type or "",
            error_message=f"the {size}-byte value is too large to copy to {topic}, so it was dropped "
            f"(the attempt ended with {outcome.error_type}: {outcome.error})",
            failed_at_ms=_now_ms(),
            dlq_reason=reason,
            value_dropped=size,
            error_traceback=trace,
        )
        try:
            await self._writer.send(self._dlq, b"", envelope.key, headers)
        except TOO_LARGE:
            await self._writer.send(self._dlq, b"", None, own_headers(headers))
        log.error(
            "task dead-lettered without its value",
            reason=reason,
            size=size,
            **_failure_fields(envelope, outcome, trace),
        )
        return Routed(Disposition.DEAD_LETTERED, reason=reason)


def _task_fields(envelope: Envelope, outcome: Outcome) -> dict[str, object]:
    """The task fields of SPEC §7 that every task event carries."""
    return envelope.log_fields() | {
        "duration_ms": round(outcome.duration_s * 1000, 3),
        "outcome": outcome.result.value,
    }


def _failure_fields(envelope: Envelope, outcome: Outcome, trace: str | None) -> dict[str, object]:
    """The task fields plus what every failure event adds: the error and its traceback."""
    return _task_fields(envelope, outcome) | {
        "error_type": outcome.error_type,
        "error": str(outcome.error),
        "traceback": trace,
    }
