"""The example's task: rendering a report, the kind of work that outgrows FastAPI's `BackgroundTasks`
(it dies with the web process, nobody can ask how it went, and it competes with requests for the CPU).

Run it with `streamproc worker --app examples.fastapi.tasks:app`; `examples/fastapi/main.py` submits it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import BaseModel, Field

from streamproc import App, TaskContext

app = App()


class RenderReport(BaseModel):
    """What to render; the HTTP body of `POST /reports` and the task's payload alike."""

    report_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    pages: Annotated[int, Field(ge=1, le=500)]


class RenderedReport(BaseModel):
    """Where the rendered report is: the task's result, stored with its `succeeded` status."""

    url: str
    pages: int


@app.task("render_report", timeout=60)
async def render_report(payload: RenderReport, ctx: TaskContext) -> RenderedReport:
    """Render the report (the sleep stands in for the real work, so the example stays fast)."""
    ctx.log.info("rendering", report_id=payload.report_id, pages=payload.pages)
    await asyncio.sleep(0.05)
    return RenderedReport(url=f"/files/reports/{payload.report_id}.pdf", pages=payload.pages)
