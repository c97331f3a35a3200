"""`RunningHandlers`: the handlers running now, by task id, so that a cancel reaches them (SPEC §12)."""

from __future__ import annotations

import asyncio

from streamproc.envelope import Envelope
from streamproc.execution import Executor, Outcome, Result


class RunningHandlers:
    """Runs handlers through an `Executor`, and cancels one by task id: an async handler at its next
    await, and a sync one (Python cannot stop a thread) through `ctx.cancelled`."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._running: dict[str, asyncio.Task[object]] = {}
        self._cancelled: set[asyncio.Task[object]] = set()

    async def run(self, envelope: Envelope) -> Outcome:
        """The handler's outcome; CANCELLED when `cancel` stopped it. Any other cancellation (a
        revocation, a shutdown) propagates."""
        current = asyncio.current_task()
        assert current is not None
        self._running[envelope.task_id] = current
        try:
            return await self._executor.run(envelope)
        except asyncio.CancelledError:
            if current not in self._cancelled:
                raise
            current.uncancel()
            return Outcome(Result.CANCELLED, 0.0)
        finally:
            del self._running[envelope.task_id]
            self._cancelled.discard(current)

    def cancel(self, task_id: str) -> None:
        """Cancel the running handler of `task_id`, if there is one."""
        running = self._running.get(task_id)
        if running is not None and running not in self._cancelled:
            self._executor.signal_cancel(task_id)
            self._cancelled.add(running)
            running.cancel()
