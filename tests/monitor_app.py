"""An App for the browser tests of the live monitor (`tests.monitor_app:app`), run by worker subprocesses.

Each task that runs to its end appends its label to the file named by `STREAMPROC_TEST_JOURNAL`,
so a test can tell which tasks ran (a cancelled one must never appear there).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from streamproc import App

app = App()


class Work(BaseModel):
    label: str
    sleep_ms: int = 0


class Blocked(BaseModel):
    label: str
    marker: str  # a file: while it exists, the task fails


def _journal(label: str) -> None:
    path = os.environ.get("STREAMPROC_TEST_JOURNAL")
    if path:
        with open(path, "a") as file:
            file.write(f"{label}\n")


def _exists(path: str) -> bool:
    return Path(path).exists()


@app.task("work")
async def work(payload: Work) -> dict[str, str]:
    if payload.sleep_ms:
        await asyncio.sleep(payload.sleep_ms / 1000)
    _journal(payload.label)
    return {"done": payload.label}


@app.task("blocked", max_retries=0)
async def blocked(payload: Blocked) -> dict[str, str]:
    """No retries: while its marker file exists, its one attempt fails and it is dead-lettered."""
    if _exists(payload.marker):
        raise RuntimeError(f"{payload.label}: its marker file is in the way")
    _journal(payload.label)
    return {"done": payload.label}
