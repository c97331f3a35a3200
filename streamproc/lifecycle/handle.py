"""`TaskHandle`: what `Producer.submit` returns (SPEC §12); `SyncHandle`: any handle for synchronous code."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from streamproc.lifecycle.client import LifecycleClient, result_of
from streamproc.lifecycle.status import TaskStatus, status_partition


@dataclass(frozen=True)
class TaskHandle:
    """A submitted task: its id and intake record; `str(handle)` is the id.

    `offset` is None for the handle of a task submitted earlier with the same idempotency key.
    """

    id: str
    topic: str
    partition: int
    offset: int | None
    _client: LifecycleClient = field(repr=False, compare=False)
    _status_offset: int | None = field(default=None, repr=False, compare=False)  # of its `pending` record
    _returns: type[BaseModel] | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return self.id

    @property
    def status_partition(self) -> int:
        return status_partition(self.partition, self._client.partitions)

    async def status(self) -> TaskStatus:
        """The task's latest status (a lookup: see `Producer.status`)."""
        return await self._client.status(self.id, self.status_partition)

    async def wait(self, timeout: float | None = None) -> TaskStatus:  # noqa: ASYNC109 (SPEC §12 names it)
        """The task's terminal status (`succeeded`, `dead` or `cancelled`); `TimeoutError` after `timeout` s."""
        return await self._client.wait(self.id, self.status_partition, self._status_offset, timeout)

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (SPEC §12 names it)
        """The handler's return value (validated into its pydantic return type, when it has one).
        Raises `TaskFailed` (dead), `TaskCancelled`, or `TimeoutError` after `timeout` seconds."""
        return result_of(await self.wait(timeout), self._returns)


class _Awaitable(Protocol):
    """What `TaskHandle` and `WorkflowHandle` both offer."""

    @property
    def id(self) -> str: ...

    async def status(self) -> TaskStatus: ...

    async def wait(self, timeout: float | None = None) -> TaskStatus: ...  # noqa: ASYNC109

    async def result(self, timeout: float | None = None) -> Any: ...  # noqa: ASYNC109


H = TypeVar("H", bound=_Awaitable)
# Runs a coroutine on a SyncProducer's loop and waits for it (`SyncProducer._call`).
Call = Callable[[Callable[[Any], Coroutine[Any, Any, Any]]], Any]


class SyncHandle(Generic[H]):
    """An async handle for synchronous code (`SyncProducer.submit`): each call blocks the caller."""

    def __init__(self, handle: H, call: Call) -> None:
        self.handle = handle
        self._call = call

    @property
    def id(self) -> str:
        return self.handle.id

    def __str__(self) -> str:
        return self.handle.id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.handle!r})"

    def status(self) -> TaskStatus:
        status: TaskStatus = self._call(lambda _: self.handle.status())
        return status

    def wait(self, timeout: float | None = None) -> TaskStatus:
        status: TaskStatus = self._call(lambda _: self.handle.wait(timeout))
        return status

    def result(self, timeout: float | None = None) -> Any:
        return self._call(lambda _: self.handle.result(timeout))
