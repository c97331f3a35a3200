"""The monitor's actions (SPEC §14): cancel a task, replay dead letters. Both need the token.

A request carries `Authorization: Bearer <STREAMPROC_WEB_TOKEN>`; without a token configured the
server is read-only and refuses every action (403), a wrong or missing token is 401. The token is
compared in constant time. Cancel and replay are the library's own (`Producer.cancel`,
`dlq.replay`), so the UI does exactly what `streamproc cancel` and `streamproc dlq replay` do.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, Field

from streamproc import dlq
from streamproc.dead_letters import Selection, parse_ref
from streamproc.errors import StreamprocError
from streamproc.lifecycle.status import TaskState
from streamproc.web.monitor_api import Monitor


def authorized(monitor: Monitor, authorization: Annotated[str | None, Header()] = None) -> None:
    if monitor.token is None:
        raise HTTPException(403, "the monitor is read-only: start `streamproc web` with STREAMPROC_WEB_TOKEN set")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), monitor.token.encode()):
        raise HTTPException(401, "a valid token is needed: Authorization: Bearer <STREAMPROC_WEB_TOKEN>")


router = APIRouter(prefix="/api", tags=["actions"], dependencies=[Depends(authorized)])


class Cancelled(BaseModel):
    id: str
    before: TaskState = Field(description="its state before the cancel")
    cancelled: bool = Field(description="false: it had already finished, nothing was done")


class ReplayRequest(BaseModel):
    ids: list[str] | None = Field(None, description="PARTITION:OFFSET of the dead letters to replay (else all)")
    task: str | None = Field(None, description="only dead letters of this task")
    reason: str | None = Field(None, description="only dead letters with this reason")


class Replayed(BaseModel):
    sent: int
    already_replayed: int
    not_found: list[str]
    by_topic: dict[str, int]


@router.post("/tasks/{task_id:path}/cancel", response_model=Cancelled, summary="Cancel a task (`streamproc cancel`)")
async def cancel(task_id: str, monitor: Monitor) -> Cancelled:
    before = await monitor.producer.cancel(task_id)
    return Cancelled(id=task_id, before=before.state, cancelled=not before.state.terminal)


@router.post("/dlq/replay", response_model=Replayed, summary="Replay dead letters (`streamproc dlq replay`)")
async def replay(body: ReplayRequest, monitor: Monitor) -> Replayed:
    try:
        refs = None if body.ids is None else [parse_ref(text) for text in body.ids]
        summary = await dlq.replay(
            monitor.settings, monitor.topology, Selection(task=body.task, reason=body.reason), refs=refs
        )
    except (ValueError, StreamprocError) as exc:
        raise HTTPException(400, str(exc)) from None
    return Replayed(
        sent=summary.sent,
        already_replayed=summary.already_replayed,
        not_found=summary.not_found,
        by_topic=dict(summary.by_topic),
    )
