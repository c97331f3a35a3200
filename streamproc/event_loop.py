"""The event loop a worker process runs on, and how its jobs' tasks start.

The loop is asyncio's own (the default) or uvloop's (`--loop uvloop`).

uvloop is an option, not the default, though a no-op worker runs a few percent faster on it
(`streamproc bench`, benchmarks/README.md): aiokafka 0.14 catches only `OSError` when it writes to a
connection the broker has closed, while uvloop's transports raise `RuntimeError` there (aiokafka
issue #1038), which would turn a broker restart into a failed worker (SPEC §11 allows neither).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from streamproc.errors import StreamprocError


class EventLoop(StrEnum):
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"

    def factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """The loop factory for `asyncio.Runner`; a clear error when uvloop is asked for but missing."""
        if self is EventLoop.ASYNCIO:
            return None
        try:
            import uvloop
        except ImportError:
            raise StreamprocError("--loop uvloop needs uvloop: pip install 'streamproc[uvloop]'") from None
        return uvloop.new_event_loop


if sys.version_info >= (3, 12):  # chosen once here, not per task on the hot path

    def start_task(job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task running `job`, started eagerly (3.12's `eager_start`): its first step runs now, inside
        the new task, so a handler that finishes without suspending needs no turn of the loop."""
        return asyncio.Task(job, loop=asyncio.get_running_loop(), eager_start=True)

else:

    def start_task(job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task running `job`, scheduled as `asyncio.create_task` does: Python 3.11 has no eager
        start, and one by hand would run the first step inside the caller's task."""
        return asyncio.create_task(job)
