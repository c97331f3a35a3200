"""`LifecycleClient`: what a producer asks about tasks: their status, their result, their cancel (SPEC §12)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from streamproc.errors import StreamprocError, TaskCancelled, TaskFailed
from streamproc.lifecycle.follower import StatusFollower
from streamproc.lifecycle.lookup import read_status
from streamproc.lifecycle.status import TaskState, TaskStatus
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

if TYPE_CHECKING:
    from streamproc.web.client import WebClient


class LifecycleClient:
    """Looks statuses up (through `streamproc web` when `web_url` is set, else a bounded read) and
    awaits them (one `StatusFollower` for the process)."""

    def __init__(self, settings: KafkaSettings, topology: Topology, web_url: str | None = None) -> None:
        self._settings = settings
        self.topic = topology.status_topic
        self.control_topic = topology.control_topic
        self.partitions = topology.status.partitions
        self._web: WebClient | None = None
        if web_url:
            from streamproc.web.client import WebClient  # httpx only for those who use it

            self._web = WebClient(web_url)
        self.follower = StatusFollower(settings, self.topic)

    async def stop(self) -> None:
        await self.follower.stop()
        if self._web is not None:
            await self._web.aclose()

    def _candidates(self, partition: int | None) -> list[int]:
        return [partition] if partition is not None else list(range(self.partitions))

    async def status(self, task_id: str, partition: int | None = None) -> TaskStatus:
        """The latest status of `task_id` (in status `partition`, when known)."""
        if self._web is not None:
            return await self._web.status(task_id)
        return await read_status(self._settings, self.topic, task_id, self._candidates(partition))

    async def _lookup(self, task_id: str, partition: int | None) -> tuple[TaskStatus, dict[int, int]]:
        """The latest status, and where to follow each candidate partition from so that no later
        status is missed: where the web view had read to, or the ends noted before a bounded read."""
        candidates = self._candidates(partition)
        if self._web is not None:
            found, read_to = await self._web.lookup(task_id)
            return found, {p: read_to.get(p, 0) for p in candidates}
        ends = await self.follower.end_offsets(candidates)
        return await read_status(self._settings, self.topic, task_id, candidates), ends

    async def wait(
        self,
        task_id: str,
        partition: int | None = None,
        start: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the `result(timeout=…)` of SPEC §12 ends here)
    ) -> TaskStatus:
        """The terminal status of `task_id`. With `start`, status `partition` is followed from that
        offset (the task's `pending` record); otherwise the status is looked up, and if it is not
        terminal yet the partitions are followed from where the lookup had read to (`_lookup`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if start is not None and partition is not None:
            starts = {partition: start}
        else:
            found, starts = await self._lookup(task_id, partition)
            if found.state.terminal:
                return found
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(remaining):
                return await self.follower.wait(task_id, starts)
        except TimeoutError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout:g}s") from None


def result_of(status: TaskStatus, returns: type[BaseModel] | None = None) -> Any:
    """The result a terminal status carries, validated into `returns` when given; raises
    `TaskFailed` for a dead task and `TaskCancelled` for a cancelled one."""
    if status.state is TaskState.DEAD:
        raise TaskFailed(status.task_id, status.reason, status.error_type, status.error)
    if status.state is TaskState.CANCELLED:
        raise TaskCancelled(status.task_id)
    if status.state is not TaskState.SUCCEEDED:
        raise StreamprocError(f"task {status.task_id} has not finished: it is {status.state}")
    if status.result_error is not None:
        raise StreamprocError(f"task {status.task_id} succeeded, but its result is not stored: {status.result_error}")
    if returns is None or status.result is None:
        return status.result
    try:
        return returns.model_validate(status.result)
    except ValidationError as exc:
        raise StreamprocError(f"task {status.task_id}: its result does not fit {returns.__name__}: {exc}") from None
