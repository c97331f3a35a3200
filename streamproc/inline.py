"""Handlers that never suspend, run to the end without an asyncio task of their own.

An `async def` whose own code has no suspension point (no `await`, `async with` or `async for`:
its bytecode has no `YIELD_VALUE`, where every coroutine frame suspends) returns on the first
`send`, so the worker's dispatcher calls it in place: no task is created and scheduled, and the
job takes no turn of the event loop (about a quarter of a no-op task's time on Python 3.11, where
asyncio has no eager tasks). This is proved from the code, not guessed, so a handler that awaits
anything, even only sometimes, always gets a task of its own. Nothing such a handler does can be
interrupted anyway: a timeout or a cancel reaches a handler only at an await.

Run in place, the handler sees the dispatcher as `asyncio.current_task()`, and runs in a copy of
the dispatcher's context, as a task would, so a context variable it sets does not leak into the
next task.
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
import inspect
from collections.abc import Callable
from typing import Any


def never_suspends(fn: Callable[..., Any]) -> bool:
    """True for an `async def` function whose own code cannot suspend (see the module docstring); a
    wrapper, a partial or a callable object is not looked into, and counts as one that may."""
    if not inspect.iscoroutinefunction(fn) or not inspect.isfunction(fn):
        return False
    return all(instruction.opname != "YIELD_VALUE" for instruction in dis.get_instructions(fn))


def run_in_place(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """What `await fn(*args)` returns, for an `fn` that `never_suspends`, in a copy of the current
    context; what it raises is raised, a `CancelledError` as a `RuntimeError` (nothing cancels a call
    that never suspends, so the handler raised it itself, and it must not stop the dispatcher)."""
    return contextvars.copy_context().run(_drive, fn, args)


def _drive(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    coroutine = fn(*args)
    try:
        coroutine.send(None)
    except StopIteration as returned:
        return returned.value
    except asyncio.CancelledError as exc:
        raise RuntimeError(f"the handler raised {exc!r} itself") from exc
    coroutine.close()  # unreachable when `never_suspends` said so; close rather than leave it hanging
    raise RuntimeError(f"{fn.__qualname__} suspended, though its code has no suspension point")
