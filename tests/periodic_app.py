"""An App with a periodic task, run by worker subprocesses (`tests.periodic_app:app`).

`tick` fires every `STREAMPROC_TEST_EVERY_S` seconds (default 2); each run appends
`<slot ms> <pid> <task id>` to the file named by `STREAMPROC_TEST_JOURNAL`, so a test can count
the runs of each slot and tell which process ran them.
"""

from __future__ import annotations

import os
from datetime import timedelta

from pydantic import BaseModel

from streamproc import App, TaskContext
from streamproc.envelope import SLOT

app = App()


class Tick(BaseModel):
    label: str


@app.periodic(every=timedelta(seconds=float(os.environ.get("STREAMPROC_TEST_EVERY_S", "2"))), payload={"label": "tick"})
@app.task("tick")
def tick(payload: Tick, ctx: TaskContext) -> str:
    path = os.environ.get("STREAMPROC_TEST_JOURNAL")
    if path:
        with open(path, "a") as file:
            file.write(f"{ctx.headers[SLOT]} {os.getpid()} {ctx.task_id}\n")
    return payload.label


@app.periodic(cron="0 3 * * *", payload={"label": "nightly"}, catch_up="last", name="nightly-report", priority="low")
@app.task("report")
def report(payload: Tick) -> str:
    return payload.label
