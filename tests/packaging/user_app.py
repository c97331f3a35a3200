"""A small user app, as someone who installed the streamproc wheel writes it.

`test_packaging` runs `mypy --strict` on this file alone, against the built wheel: it must pass
with no "missing library stubs", and the `assert_type` lines fail if streamproc's types reach
mypy as `Any` (a missing `py.typed` makes them so).
"""

from __future__ import annotations

import asyncio
from typing import assert_type

from pydantic import BaseModel, Field

import streamproc
from streamproc import App, PermanentError, Producer, TaskContext, TaskHandle

app = App()


class Resize(BaseModel):
    image_id: str
    width: int = Field(gt=0)


class Notify(BaseModel):
    user_id: int
    text: str


@app.task("resize", timeout=60, max_retries=2)
def resize(payload: Resize) -> int:
    """A synchronous handler: the worker runs it in its thread pool."""
    if payload.width > 10_000:
        raise PermanentError(f"{payload.width} px is too wide")
    return payload.width // 2


@app.task("notify", rate_limit="50/s")
async def notify(payload: Notify, ctx: TaskContext) -> None:
    ctx.log.info("notified", user_id=payload.user_id, attempt=ctx.attempt, task_id=ctx.task_id)


async def submit_some() -> list[str]:
    async with Producer.from_env() as producer:
        first = await producer.submit(resize, Resize(image_id="a", width=640), priority="high", key="a")
        rest = await producer.submit_many("notify", [{"user_id": 1, "text": "hi"}])
        assert_type(first, TaskHandle)
        return [first.id, *(handle.id for handle in rest)]


assert_type(resize(Resize(image_id="b", width=10)), int)
assert_type(app.tasks["notify"].name, str)
assert_type(streamproc.__version__, str)

if __name__ == "__main__":
    print(asyncio.run(submit_some()))
