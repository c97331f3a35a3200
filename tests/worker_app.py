"""An App for worker tests, used in-process and by worker subprocesses (`tests.worker_app:app`).

Each task appends `<event> <task_id> <pid> <topic> <partition> <offset>` lines to the file named
by `STREAMPROC_TEST_JOURNAL` (subprocess tests read it back); in-process tests also read
`journal` and control `gates`.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel

from streamproc import App, TaskContext

app = App()
journal: list[tuple[str, str, float]] = []  # (event, task id or label, monotonic time)
gates: dict[str, asyncio.Event] = {}


class Step(BaseModel):
    label: str = ""
    sleep_ms: int = 0
    gate: str | None = None  # wait for gates[gate] (in-process tests only)


def _append(event: str, ctx: TaskContext) -> None:
    path = os.environ.get("STREAMPROC_TEST_JOURNAL")
    if path:
        with open(path, "a") as file:
            file.write(f"{event} {ctx.task_id} {os.getpid()} {ctx.topic} {ctx.partition} {ctx.offset}\n")


@app.task("step")
async def step(payload: Step, ctx: TaskContext) -> None:
    journal.append(("start", payload.label or ctx.task_id, time.monotonic()))
    _append("start", ctx)
    if payload.gate is not None:
        await gates.setdefault(payload.gate, asyncio.Event()).wait()
    if payload.sleep_ms:
        await asyncio.sleep(payload.sleep_ms / 1000)
    journal.append(("end", payload.label or ctx.task_id, time.monotonic()))
    _append("done", ctx)


@app.task("noop")
async def noop(payload: dict[str, object]) -> None:
    """Does nothing: measures the framework, not the handler."""
