"""The HTTP API of `streamproc web`: task status lookups (SPEC §12), documented at /openapi.json.

`create_app` takes the status view and any further routers (the live monitor of §14 adds its own);
a route reaches the view through `request.app.state.view` (the `view` dependency below), so a
router needs nothing but the app it is included in. Lookups run on the event loop: a primary-key
read on the store's own read connection takes microseconds, less than handing it to a thread.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from streamproc import __version__
from streamproc.lifecycle.status import TaskState
from streamproc.web.view import StatusView


class TaskStatusBody(BaseModel):
    """The latest status of a task id; fields a state does not have are left out."""

    id: str
    state: TaskState
    task: str | None = None
    attempt: int = Field(0, description="1-based attempt the status is about (0: none yet)")
    at: int = Field(0, description="when the status was written, ms since epoch")
    result: Any = Field(None, description="the handler's return value (succeeded)")
    result_error: str | None = Field(None, description="why the result is not stored (succeeded)")
    error_type: str | None = None
    error: str | None = Field(None, description="the error message (dead, retrying)")
    reason: str | None = Field(None, description="the DLQ reason (dead)")
    retry_at: int | None = Field(None, description="when the next attempt is due, ms since epoch (retrying)")
    read_to: dict[int, int] = Field(
        description="each status partition's next offset: this answer has seen every record before it, so a "
        "client that awaits the task follows the partition from there"
    )


class Health(BaseModel):
    caught_up: bool = Field(description="the store holds the status topic up to its end offsets at start")
    statuses: int = Field(description="statuses applied since start")
    ignored: int = Field(description="records on the status topic that are no status")
    lag: int | None = Field(description="records on the topic not yet in the store (null: not known yet)")


def view(request: Request) -> StatusView:
    """The app's status view, for routes of any router included in it."""
    found: StatusView = request.app.state.view
    return found


View = Annotated[StatusView, Depends(view)]
router = APIRouter(prefix="/api", tags=["tasks"])


@router.get(
    "/tasks/{task_id:path}",
    response_model=TaskStatusBody,
    response_model_exclude_unset=True,
    summary="The status of a task id",
)
async def task_status(task_id: str, status_view: View) -> dict[str, Any]:
    """The latest status of `task_id`; `unknown` (200) when the status topic has no record of it
    within the status TTL."""
    read_to = status_view.positions()  # before the lookup: it has seen at least this much
    status = status_view.lookup(task_id)
    if status.state is TaskState.UNKNOWN:
        return {"id": task_id, "state": TaskState.UNKNOWN.value, "read_to": read_to}
    return status.as_dict() | {"read_to": read_to}


@router.get("/health", response_model=Health, summary="How far the status view has read", tags=["health"])
async def health(status_view: View) -> Health:
    """Whether lookups see the whole status topic yet (`caught_up`), and how far behind it they are."""
    return Health(
        caught_up=status_view.caught_up.is_set(),
        statuses=status_view.statuses,
        ignored=status_view.ignored,
        lag=status_view.lag,
    )


def create_app(status_view: StatusView, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The web app over `status_view`, with the task API and then `routers`."""
    app = FastAPI(
        title="streamproc web", version=__version__, description="Task status lookups and the live monitor's API."
    )
    app.state.view = status_view
    for included in (router, *routers):
        app.include_router(included)
    return app


def listener(host: str, port: int) -> socket.socket:
    """A listening socket to hand uvicorn (`serve(sockets=[…])`), so binding fails before anything starts.
    TCP_NODELAY (accepted connections inherit it): without it a response's second write waited for the
    client's delayed ACK, 40 ms a request on Linux (measured)."""
    sock = socket.create_server((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
