"""The App the chaos workers run (`tests.chaos.app:app`): one task that sleeps and keeps a journal.

Each run appends `start|done <task_id> <pid> <wall time> <topic> <partition> <offset>` to the
file named by `STREAMPROC_CHAOS_JOURNAL`. Every line is one `write` on an `O_APPEND` descriptor,
so lines of concurrent workers never interleave and a kill -9 never leaves a written line behind.
The wall time lets the harness tell, after the run, what was running at each fault.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel

from streamproc import App, TaskContext

app = App()
_journal_fd: int | None = None


class Work(BaseModel):
    sleep_ms: int = 0


def _append(event: str, ctx: TaskContext) -> None:
    global _journal_fd
    if _journal_fd is None:
        _journal_fd = os.open(os.environ["STREAMPROC_CHAOS_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = f"{event} {ctx.task_id} {os.getpid()} {time.time():.6f} {ctx.topic} {ctx.partition} {ctx.offset}\n"
    os.write(_journal_fd, line.encode())


@app.task("chaos")
async def chaos(payload: Work, ctx: TaskContext) -> None:
    """Sleeps a little, so tasks are in flight whenever a fault strikes."""
    _append("start", ctx)
    await asyncio.sleep(payload.sleep_ms / 1000)
    _append("done", ctx)
