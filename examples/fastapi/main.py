"""A FastAPI app that hands its slow work to streamproc instead of `BackgroundTasks`.

`BackgroundTasks` runs the work in the web process after the response: a deploy or a crash loses
it, and no other request can tell how it went. Here an endpoint submits the task to Kafka (durable
once `submit` returns), a worker runs it, and any web process can report its status, await its
result or cancel it by id. One `Producer` serves the whole process: it keeps one connection and
one status reader that every awaiting request shares.

Run it from the repository root, with a broker up (`streamproc broker start`):

    streamproc topics apply
    streamproc worker --app examples.fastapi.tasks:app
    uvicorn examples.fastapi.main:app

    curl -si localhost:8000/reports -H 'content-type: application/json' \
        -H 'Idempotency-Key: report-42' -d '{"report_id": "q3-sales", "pages": 12}'
    curl -s localhost:8000/reports/ID                      # the status: pending, succeeded, ...
    curl -s 'localhost:8000/reports/ID/result?timeout=10'  # 200 result, 202 not yet, 409 failed/cancelled
    curl -si -X DELETE localhost:8000/reports/ID           # 202 cancelled, 409 already finished

Without `STREAMPROC_WEB_URL` a status lookup (which `GET /reports/ID`, cancelling, and awaiting a
task that may have finished already all start with) is a bounded read of the status topic; set it to
a running `streamproc web` and each is a point lookup in its store instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from examples.fastapi.tasks import RenderedReport, RenderReport, render_report
from streamproc import Producer, TaskCancelled, TaskFailed, TaskState

MAX_WAIT_S = 30.0  # a request holds a connection while it awaits: past this, clients poll instead


class Submitted(BaseModel):
    task_id: str
    status_url: str
    result_url: str


class Unfinished(BaseModel):
    """The answer when there is no result to give: the task's state, and why (409)."""

    task_id: str
    state: TaskState
    detail: str | None = None


def producer(request: Request) -> Producer:
    """The process's producer, which the lifespan started."""
    started: Producer = request.app.state.producer
    return started


Producing = Annotated[Producer, Depends(producer)]
router = APIRouter(prefix="/reports", tags=["reports"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def submit_report(
    body: RenderReport,
    producer: Producing,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Submitted:
    """Submit a rendering; a retried request with the same `Idempotency-Key` gets the first task back
    (for the status TTL) instead of rendering twice."""
    handle = await producer.submit(render_report, body, idempotency_key=idempotency_key)
    return Submitted(task_id=handle.id, status_url=f"/reports/{handle.id}", result_url=f"/reports/{handle.id}/result")


@router.get("/{task_id}")
async def report_status(task_id: str, producer: Producing) -> dict[str, Any]:
    """The task's latest status (state, attempt, result or error); 404 when no status of it exists."""
    found = await producer.status(task_id)
    if found.state is TaskState.UNKNOWN:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id} within the status TTL")
    return found.as_dict()


@router.get(
    "/{task_id}/result",
    response_model=RenderedReport,
    responses={
        202: {"model": Unfinished, "description": "Not finished yet"},
        409: {"model": Unfinished, "description": "Failed or cancelled"},
    },
)
async def report_result(
    task_id: str,
    producer: Producing,
    wait_s: Annotated[float, Query(alias="timeout", ge=0, le=MAX_WAIT_S)] = 10.0,
) -> RenderedReport | JSONResponse:
    """The rendered report, awaited for up to `timeout` seconds; 202 with the state if it is not
    finished by then, 409 if it failed or was cancelled, 404 if no status of it exists."""
    try:
        return RenderedReport.model_validate(await producer.result(task_id, timeout=wait_s))
    except TaskFailed as exc:
        return _answer(
            status.HTTP_409_CONFLICT, task_id, TaskState.DEAD, f"{exc.reason}: {exc.error_type}: {exc.error}"
        )
    except TaskCancelled:
        return _answer(status.HTTP_409_CONFLICT, task_id, TaskState.CANCELLED, "the task was cancelled")
    except TimeoutError:
        found = await producer.status(task_id)
        if found.state is TaskState.UNKNOWN:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id} within the status TTL") from None
        return _answer(status.HTTP_202_ACCEPTED, task_id, found.state)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Unfinished,
    responses={409: {"model": Unfinished, "description": "Already finished"}},
)
async def cancel_report(task_id: str, producer: Producing) -> JSONResponse:
    """Cancel the task: 202 once no worker will start it, 409 if it had already finished."""
    before = await producer.cancel(task_id)
    if before.state.terminal:
        return _answer(status.HTTP_409_CONFLICT, task_id, before.state, "the task had already finished")
    return _answer(status.HTTP_202_ACCEPTED, task_id, TaskState.CANCELLED)


def _answer(code: int, task_id: str, state: TaskState, detail: str | None = None) -> JSONResponse:
    body = Unfinished(task_id=task_id, state=state, detail=detail)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=code)


def create_app(producer_factory: Callable[[], Producer] = Producer.from_env) -> FastAPI:
    """The app; `producer_factory` builds its producer when it starts (tests pass their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with producer_factory() as started:
            app.state.producer = started
            yield

    app = FastAPI(title="reports", description="Renders reports on streamproc workers.", lifespan=lifespan)
    app.include_router(router)
    return app


app = create_app()
