"""An App for worker tests, used in-process and by worker subprocesses (`tests.worker_app:app`).

Each task appends `<event> <task_id> <pid> <topic> <partition> <offset>` lines to the file named
by `STREAMPROC_TEST_JOURNAL` (subprocess tests read it back); in-process tests also read
`journal` and control `gates`.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from pydantic import BaseModel

from streamproc import App, PermanentError, TaskContext

app = App()
journal: list[tuple[str, str, float]] = []  # (event, task id or label, monotonic time)
gates: dict[str, asyncio.Event] = {}


@dataclass(frozen=True)
class Call:
    """One handler call of the failure-path tasks; `at` is wall-clock seconds, like retry-at."""

    label: str
    attempt: int
    at: float
    headers: dict[str, str]


calls: list[Call] = []
upstream_down = asyncio.Event()  # while set, `fragile` fails


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


@app.task("mark")
async def mark(payload: dict[str, object], ctx: TaskContext) -> None:
    """`step` without an await: the worker calls it in place (`streamproc.inline`)."""
    _append("start", ctx)
    _append("done", ctx)


@app.task("noop")
async def noop(payload: dict[str, object]) -> None:
    """Does nothing: measures the framework, not the handler."""


class Flaky(BaseModel):
    label: str
    fail_times: int = 0  # attempts 1..fail_times raise a retryable error
    permanent: bool = False


@app.task("flaky", timeout=5)
async def flaky(payload: Flaky, ctx: TaskContext) -> None:
    calls.append(Call(payload.label, ctx.attempt, time.time(), ctx.headers))
    if payload.permanent:
        raise PermanentError(f"{payload.label} can never succeed")
    if ctx.attempt <= payload.fail_times:
        raise RuntimeError(f"{payload.label} failed on attempt {ctx.attempt}")


@app.task("fragile", failure_threshold=2, reset_timeout=3.0, max_retries=10)
async def fragile(payload: Flaky, ctx: TaskContext) -> None:
    """Fails while `upstream_down` is set: two failures in a row open its circuit for 3 s."""
    calls.append(Call(payload.label, ctx.attempt, time.time(), ctx.headers))
    if upstream_down.is_set():
        raise ConnectionError("upstream is down")


@app.task("limited", rate_limit="10/s")
async def limited(payload: Flaky, ctx: TaskContext) -> None:
    calls.append(Call(payload.label, ctx.attempt, time.time(), ctx.headers))


@app.task("brittle", max_retries=0)
async def brittle(payload: Flaky, ctx: TaskContext) -> None:
    """No retries: while `upstream_down` is set, its one attempt fails and the task is dead-lettered."""
    calls.append(Call(payload.label, ctx.attempt, time.time(), ctx.headers))
    if upstream_down.is_set():
        raise ConnectionError("upstream is down")
