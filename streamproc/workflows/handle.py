"""`WorkflowHandle`: what `Producer.submit(chain | group | chord)` returns (SPEC §13).

Its `id` is the workflow's root id (a chain's first step, or the group id): `cancel()` (or
`producer.cancel(id)`) stops every step or member not started yet. A chain's and a chord's outcome
is the status of its final task (the chain's last step, the chord's callback), which the workers
write `dead` (naming the step or member that died) or `cancelled` when the workflow ends early, so
`result()` awaits one status. A group has no final task: `results()` awaits each member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from streamproc.errors import StreamprocError
from streamproc.lifecycle.handle import SyncHandle, TaskHandle
from streamproc.lifecycle.status import TaskState, TaskStatus


@dataclass(frozen=True)
class WorkflowHandle:
    """A submitted workflow; `str(handle)` is its root id.

    `kind` is "chain", "group" or "chord"; `members` the handles of the records sent at submit (a
    chain's first step; a group's or chord's members, in order); `final` the chain's last step or
    the chord's callback (None for a group).
    """

    id: str
    kind: str
    members: tuple[TaskHandle, ...]
    final: TaskHandle | None
    _cancel: Callable[[str], Awaitable[TaskStatus]] = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.id

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (SPEC §12's `result(timeout=…)`)
        """A chain's last result, a chord's callback result; a group's results (`results`). Raises
        `TaskFailed` (naming the step or member that died), `TaskCancelled` or `TimeoutError`."""
        if self.final is None:
            return await self.results(timeout)
        return await self.final.result(timeout)

    async def results(self, timeout: float | None = None) -> list[Any]:  # noqa: ASYNC109
        """The members' results in member order (a group or chord); raises like `result` for the
        first member that did not succeed."""
        if self.kind == "chain":
            raise StreamprocError("a chain has one result: await handle.result()")
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(member.result() for member in self.members)))

    async def wait(self, timeout: float | None = None) -> TaskStatus:  # noqa: ASYNC109
        """The final task's terminal status (a group: each member's, summed up as by `status`)."""
        if self.final is not None:
            return await self.final.wait(timeout)
        async with asyncio.timeout(timeout):
            return _summed(self.id, list(await asyncio.gather(*(m.wait() for m in self.members))))

    async def status(self) -> TaskStatus:
        """The final task's status; a group's is summed up from its members': `dead` or `cancelled`
        if one is (that member's status), `succeeded` once all are (the results as a list), else `pending`."""
        if self.final is not None:
            return await self.final.status()
        return _summed(self.id, list(await asyncio.gather(*(m.status() for m in self.members))))

    async def cancel(self) -> TaskStatus:
        """Cancel every step or member not started yet (`Producer.cancel` of the root id)."""
        return await self._cancel(self.id)


class SyncWorkflowHandle(SyncHandle[WorkflowHandle]):
    """`WorkflowHandle` for synchronous code (`SyncProducer.submit`): each call blocks the caller."""

    def results(self, timeout: float | None = None) -> list[Any]:
        results: list[Any] = self._call(lambda _: self.handle.results(timeout))
        return results

    def cancel(self) -> TaskStatus:
        status: TaskStatus = self._call(lambda _: self.handle.cancel())
        return status


def _summed(group_id: str, statuses: list[TaskStatus]) -> TaskStatus:
    for state in (TaskState.DEAD, TaskState.CANCELLED):
        for status in statuses:
            if status.state is state:
                return status
    if all(status.state is TaskState.SUCCEEDED for status in statuses):
        at = max(status.at_ms for status in statuses)
        return TaskStatus(group_id, TaskState.SUCCEEDED, None, 1, at, [s.result for s in statuses])
    return TaskStatus(group_id, TaskState.PENDING)
