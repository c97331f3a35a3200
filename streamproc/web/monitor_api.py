"""The live monitor's read API (SPEC §14): the overview, the DLQ, and a stream of both.

`/api/stream` is Server-Sent Events: an `overview` event every second (the `LiveMonitor`'s tick)
and a `dlq` event whenever the DLQ view changed. Each event's JSON is built once per tick and
shared by every open stream, so a hundred browsers cost one serialisation. A comment line every
`KEEPALIVE_S` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from streamproc import dlq
from streamproc.monitor.live import LiveMonitor, Overview
from streamproc.producer import Producer
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.web.dlq_view import DlqSummary, DlqView

KEEPALIVE_S = 15.0


@dataclass
class Monitoring:
    """What the monitor's routes read, set on the app as `app.state.monitoring`."""

    settings: KafkaSettings
    topology: Topology
    live: LiveMonitor
    dead_letters: DlqView
    producer: Producer  # started: what cancels go through
    token: str | None  # STREAMPROC_WEB_TOKEN: actions need it; None: the UI is read-only


def monitoring(request: Request) -> Monitoring:
    found: Monitoring = request.app.state.monitoring
    return found


Monitor = Annotated[Monitoring, Depends(monitoring)]
router = APIRouter(prefix="/api", tags=["monitor"])


class UiConfig(BaseModel):
    actions: bool = Field(description="cancel and replay are enabled (STREAMPROC_WEB_TOKEN is set)")
    prefix: str
    priorities: list[str]
    dlq_topic: str


class DlqPage(DlqSummary):
    replayed: list[str] = Field(description="ids among `latest` the replay group has replayed")


@router.get("/config", response_model=UiConfig, summary="What the UI needs to know about this server")
async def config(monitor: Monitor) -> UiConfig:
    topology = monitor.topology
    return UiConfig(
        actions=monitor.token is not None,
        prefix=topology.prefix,
        priorities=topology.priorities,
        dlq_topic=topology.dlq_topic,
    )


@router.get("/overview", response_model=Overview, summary="Queues, workers and KEDA's decision, as of the last second")
async def overview(monitor: Monitor) -> Overview:
    return monitor.live.overview


@router.get("/dlq", response_model=DlqPage, summary="Dead letters by reason and task, and the latest ones")
async def dead_letters(monitor: Monitor) -> DlqPage:
    summary = monitor.dead_letters.summary()
    replayed = await dlq.replayed_ids(monitor.settings, monitor.topology, summary.latest)
    return DlqPage(**summary.model_dump(), replayed=sorted(replayed))


@router.get(
    "/stream",
    summary="Server-Sent Events: `overview` every second, `dlq` when it changed",
    response_class=StreamingResponse,
)
async def stream(request: Request, monitor: Monitor) -> StreamingResponse:
    return StreamingResponse(
        _events(request, monitor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(request: Request, monitor: Monitor) -> AsyncIterator[bytes]:
    live, dead = monitor.live, monitor.dead_letters
    current = live.overview
    dlq_total = -1
    yield _event("overview", live.overview_json())
    while not await request.is_disconnected():
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                current = await live.next_overview(current)
        except TimeoutError:
            yield b": keepalive\n\n"
            continue
        yield _event("overview", live.overview_json())
        if dead.total != dlq_total:
            dlq_total = dead.total
            yield _event("dlq", dead.summary().model_dump_json().encode())


def _event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
