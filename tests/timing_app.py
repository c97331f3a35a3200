"""An App for the delayed-task tests and bench (`tests.timing_app:app`), run by worker subprocesses.

Each run appends `<task id> <run-at ms> <eta ms> <start ms>` to the file named by
`STREAMPROC_TEST_JOURNAL`: `run-at` from the header the scheduler keeps on the intake record
(0 for a task that was not delayed), `eta` from the payload, the start on the worker's clock.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from streamproc import App, TaskContext
from streamproc.envelope import RUN_AT

app = App()


class Due(BaseModel):
    eta_ms: int = 0


def _journal(line: str) -> None:
    path = os.environ.get("STREAMPROC_TEST_JOURNAL")
    if path:
        with open(path, "a") as file:
            file.write(line)


@app.task("due")
async def due(payload: Due, ctx: TaskContext) -> None:
    started_ms = time.time_ns() // 1_000_000
    _journal(f"{ctx.task_id} {ctx.headers.get(RUN_AT, '0')} {payload.eta_ms} {started_ms}\n")
