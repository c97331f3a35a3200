"""Handlers that never suspend run in place (`streamproc.inline`), with the outcomes a task gives."""

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from streamproc import App, PermanentError, TaskContext
from streamproc.envelope import Envelope
from streamproc.execution import Executor, Result
from streamproc.inline import never_suspends, run_in_place

REQUEST = contextvars.ContextVar[str]("REQUEST", default="none")


async def returns(payload: dict[str, int]) -> int:
    return payload["n"] + 1


async def awaits(payload: dict[str, int]) -> None:
    await asyncio.sleep(0)


async def awaits_only_sometimes(payload: dict[str, int]) -> None:
    if payload.get("wait"):
        await asyncio.sleep(0)


async def enters_a_lock(payload: dict[str, int]) -> None:
    async with asyncio.Lock():  # its enter and exit are awaits, though nothing in the body is
        payload["n"] = 1


async def iterates(items: AsyncIterator[int]) -> list[int]:
    return [item async for item in items]


def plain(payload: dict[str, int]) -> None: ...


def wrapped(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        return await fn(*args)

    return wrapper


class Handler:
    async def __call__(self, payload: dict[str, int]) -> None: ...


def test_only_an_async_def_without_a_suspension_point_never_suspends() -> None:
    assert never_suspends(returns)
    for may_suspend in (awaits, awaits_only_sometimes, enters_a_lock, iterates, wrapped(returns)):
        assert not never_suspends(may_suspend), may_suspend
    for not_looked_into in (plain, Handler(), functools.partial(returns)):
        assert not never_suspends(not_looked_into)


async def test_a_handler_run_in_place_returns_raises_and_keeps_its_context_variables_to_itself() -> None:
    async def sets(payload: dict[str, str]) -> str:
        REQUEST.set(payload["id"])
        return REQUEST.get()

    async def raises(payload: dict[str, int]) -> None:
        raise ValueError("bad")

    async def cancels_itself(payload: dict[str, int]) -> None:
        raise asyncio.CancelledError

    assert run_in_place(returns, ({"n": 1},)) == 2
    assert run_in_place(sets, ({"id": "r-1"},)) == "r-1"
    assert REQUEST.get() == "none"
    with pytest.raises(ValueError, match="bad"):
        run_in_place(raises, ({},))
    with pytest.raises(RuntimeError, match="CancelledError"):  # it must not stop the dispatcher
        run_in_place(cancels_itself, ({},))


async def test_the_executor_gives_a_handler_run_in_place_the_outcomes_of_a_task() -> None:
    app = App()

    @app.task("ok")
    async def ok(payload: dict[str, int], ctx: TaskContext) -> dict[str, Any]:
        return {"n": payload["n"], "id": ctx.task_id}

    @app.task("refuse")
    async def refuse(payload: dict[str, int]) -> None:
        raise PermanentError("never")

    @app.task("boom")
    async def boom(payload: dict[str, int]) -> None:
        raise RuntimeError("down")

    executor = Executor(app, threads=1)

    def envelope(task: str, value: bytes) -> Envelope:
        return Envelope("t", 0, 7, None, value, {}, task, "id-7", 0, 1, "normal")

    try:
        succeeded = executor.run_in_place(envelope("ok", b'{"n": 3}'))
        assert (succeeded.result, succeeded.value) == (Result.SUCCEEDED, {"n": 3, "id": "id-7"})
        dead = executor.run_in_place(envelope("refuse", b"{}"))
        assert (dead.result, dead.reason) == (Result.DEAD, "permanent_error")
        assert executor.run_in_place(envelope("boom", b"{}")).result is Result.FAILED
        poison = executor.run_in_place(envelope("ok", b"not json"))
        assert (poison.result, poison.reason) == (Result.DEAD, "undecodable")
    finally:
        executor.close()
