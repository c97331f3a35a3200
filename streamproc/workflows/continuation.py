"""The worker's side of workflows (SPEC §13): what a finished step or member produces next.

`OutcomeRouter.route` calls `after` once a workflow record's outcome is routed, and the worker
marks the record's offset finished only after both (and its status) are durable: every write
here is acknowledged by all in-sync replicas first (`AckedWriter`). A crash in between re-runs the
record, which produces the same records again (deterministic ids, `wire`), and the SPEC §12 rule
runs each of those once.

- A chain step that succeeded sends the next step: its fixed fields with this step's result
  merged over them (a model dumped to its fields; None adds nothing; anything else is no mapping
  and stops the chain as `dead`), then its `pending` status.
- A chord member that succeeded makes its own `succeeded` status durable at once (the worker's
  usual status write follows later, a harmless duplicate), then reads the statuses of the chord's
  members (`JoinReader`); if every member (distinct ids, so duplicate completions count once)
  has succeeded and the callback has no status yet, it sends the callback with
  `{"results": [member results in order]}` over its fixed fields, then the callback's `pending`.
  Two members finishing at once may both send it: same id, key and partition, so it runs once.
  Any two members that finish see each other (each reads after its own write was acknowledged).
- A chord member skipped because it succeeded before (a re-delivery after a crash, perhaps
  between its early `succeeded` and the callback) joins again, so the callback is never lost.
- A step or member that died, or was cancelled, writes `dead` (naming it) or `cancelled` for the
  workflow's final task (the chain's last step, the chord's callback), which therefore never
  runs and whose status the workflow handle awaits. A retried one writes nothing: its retry goes on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

from streamproc.acked import TOO_LARGE, AckedWriter
from streamproc.envelope import (
    ORIGINAL_PARTITION,
    PARENT_ID,
    ROOT_ID,
    TRACEPARENT,
    WORKFLOW,
    Envelope,
    cap_error_message,
    int_header,
    task_headers,
)
from streamproc.execution import Outcome
from streamproc.lifecycle.status import TaskState, TaskStatus, status_partition
from streamproc.routing import Disposition, Routed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.workflows import wire
from streamproc.workflows.canvas import RESULTS
from streamproc.workflows.joins import JoinReader

log = structlog.get_logger("streamproc.task")


class WorkflowContinuation:
    """Produces the next step, the chord callback, or the workflow's end (see the module docstring)."""

    def __init__(self, settings: KafkaSettings, topology: Topology, writer: AckedWriter) -> None:
        self._writer = writer
        self._topology = topology
        self._status_topic = topology.status_topic
        self._status_partitions = topology.status.partitions
        self._joins = JoinReader(settings, topology.status_topic)

    async def stop(self) -> None:
        await self._joins.stop()

    async def after(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        """Continue the workflow `envelope` belongs to, if any, after its outcome `routed`."""
        position = wire.read(envelope.headers)
        if position is None:
            return
        disposition = routed.disposition
        if disposition is Disposition.SKIPPED and isinstance(position, wire.ChordMember):
            # It succeeded before (its status is durable: perhaps written by `_join` just before a
            # crash that kept the callback from being sent), so join again; the join is idempotent.
            await self._join(envelope, position, None, write_own=False)
        elif disposition is Disposition.SUCCEEDED:
            if isinstance(position, wire.ChainStep):
                await self._next_step(envelope, position, outcome.value)
            else:
                await self._join(envelope, position, outcome.value)
        elif disposition in (Disposition.DEAD_LETTERED, Disposition.CANCELLED):
            final = self._final(position)
            if final is None or final[0] == envelope.task_id:
                return  # the final task itself: its own status says it
            if disposition is Disposition.CANCELLED:
                await self._end(final, TaskStatus(final[0], TaskState.CANCELLED, final[1], 0, _now_ms()))
                return
            await self._end(
                final,
                TaskStatus(
                    final[0],
                    TaskState.DEAD,
                    final[1],
                    0,
                    _now_ms(),
                    error_type=outcome.error_type,
                    error=cap_error_message(str(outcome.error)),
                    reason=f"{_label(position)} ({envelope.task}) died: {routed.reason}",
                ),
            )

    async def _next_step(self, envelope: Envelope, position: wire.ChainStep, result: Any) -> None:
        if not position.rest:
            return
        step, following = position.rest[0], position.step + 1
        fields = _fields(result)
        if fields is None:
            await self._broken(position, envelope, f"it returned {type(result).__name__}, not a mapping")
            return
        payload = {**step.payload, **fields}
        task_id = wire.step_id(position.root, following)
        after = wire.ChainStep(
            position.root, following, position.steps, position.last, position.last_partition, position.rest[1:]
        )
        extra = [(ROOT_ID, position.root.encode()), (PARENT_ID, envelope.task_id.encode())]
        try:
            await self._send(envelope, step, task_id, to_json(payload), [*extra, (WORKFLOW, after.header())])
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            await self._broken(position, envelope, f"its result is not JSON-serialisable: {exc}")
        except TOO_LARGE:
            await self._broken(position, envelope, "the next step's record is too large to send")

    async def _join(self, envelope: Envelope, member: wire.ChordMember, result: Any, write_own: bool = True) -> None:
        if write_own:
            own = TaskStatus(envelope.task_id, TaskState.SUCCEEDED, envelope.task, envelope.attempt, _now_ms(), result)
            partition = status_partition(
                int_header(envelope.headers, ORIGINAL_PARTITION, envelope.partition), self._status_partitions
            )
            await self._writer.send(self._status_topic, own.to_json(), envelope.task_id.encode(), [], partition)
        members = member.member_ids()
        statuses = await self._joins.statuses(
            status_partition(member.partition, self._status_partitions),
            member.since_ms,
            {*members, member.callback_id},
        )
        if member.callback_id in statuses:
            return  # sent already, or the chord ended (a member died or was cancelled)
        done = [statuses.get(task_id) for task_id in members]
        if not all(status is not None and status.state is TaskState.SUCCEEDED for status in done):
            return  # the last member to succeed sends it
        results = [status.result if status is not None else None for status in done]
        payload = {**member.callback.payload, RESULTS: results}
        extra = [(ROOT_ID, member.group.encode())]
        try:
            await self._send(envelope, member.callback, member.callback_id, to_json(payload), extra)
        except TOO_LARGE:
            final = (member.callback_id, member.callback.task, member.partition)
            reason = "the callback's record (the member results) is too large to send"
            await self._end(final, TaskStatus(final[0], TaskState.DEAD, final[1], 0, _now_ms(), reason=reason))
            return
        log.info("chord callback sent", group=member.group, task_id=member.callback_id, task=member.callback.task)

    async def _send(
        self, envelope: Envelope, step: wire.Step, task_id: str, value: bytes, extra: list[tuple[str, bytes]]
    ) -> None:
        """The intake record of `step` at the finished record's priority, then (once the broker has the
        record, which a chord join relies on: any callback status means "sent") its `pending` status."""
        topic = self._topology.intake_topic(envelope.priority)
        traceparent = envelope.headers.get(TRACEPARENT)
        headers = task_headers(step.task, task_id, _now_ms(), envelope.priority, traceparent=traceparent)
        await self._writer.send(topic, value, task_id.encode(), headers + extra, step.partition)
        pending = TaskStatus(task_id, TaskState.PENDING, step.task, 1, _now_ms()).to_json()
        at = status_partition(step.partition, self._status_partitions)
        await self._writer.send(self._status_topic, pending, task_id.encode(), [], at)

    async def _broken(self, position: wire.ChainStep, envelope: Envelope, why: str) -> None:
        """The chain cannot go on after a step that succeeded: its last step is `dead`."""
        final = (position.last, position.rest[-1].task, position.last_partition)
        reason = f"{_label(position)} ({envelope.task}) cannot feed step {position.step + 2}: {why}"
        log.error("chain broken", root=position.root, task_id=envelope.task_id, reason=reason)
        await self._end(final, TaskStatus(final[0], TaskState.DEAD, final[1], 0, _now_ms(), reason=reason))

    def _final(self, position: wire.ChainStep | wire.ChordMember) -> tuple[str, str, int] | None:
        """The workflow's final task: id, task name, intake partition."""
        if isinstance(position, wire.ChainStep):
            return (position.last, position.rest[-1].task, position.last_partition) if position.rest else None
        return position.callback_id, position.callback.task, position.partition

    async def _end(self, final: tuple[str, str, int], status: TaskStatus) -> None:
        at = status_partition(final[2], self._status_partitions)
        await self._writer.send(self._status_topic, status.to_json(), final[0].encode(), [], at)


def _fields(result: Any) -> dict[str, Any] | None:
    """A step's result as the fields to merge into the next payload; None when it has none to give."""
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, Mapping):
        return dict(result)
    return None


def _label(position: wire.ChainStep | wire.ChordMember) -> str:
    if isinstance(position, wire.ChainStep):
        return position.label
    return f"chord member {position.index + 1} of {position.size}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
