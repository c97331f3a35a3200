"""`streamproc.testing`: the in-process runner takes the worker's decode, validation and outcome path."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import structlog
from pydantic import BaseModel

from streamproc import App, PermanentError, TaskContext
from streamproc.errors import PoisonRecord, StreamprocError
from streamproc.execution import TaskTimeout
from streamproc.testing import Result, make_context, run_task, run_task_sync
from streamproc.topology import Topology


class Greet(BaseModel):
    name: str
    times: int = 1


app = App()
seen: list[TaskContext] = []


@app.task("greet")
async def greet(payload: Greet, ctx: TaskContext) -> str:
    seen.append(ctx)
    return " ".join([f"hello {payload.name}"] * payload.times)


@app.task("count")
def count(payload: dict[str, int]) -> int:
    """Sync: runs in the executor's thread pool, as in the worker."""
    return len(payload) + (threading.current_thread() is not threading.main_thread())


@app.task("flaky")
async def flaky(payload: Greet) -> None:
    raise ConnectionError(f"no answer for {payload.name}")


@app.task("refuse")
async def refuse(payload: Greet) -> None:
    raise PermanentError(f"{payload.name} is banned")


@app.task("hang", timeout=0.05)
async def hang(payload: dict[str, int]) -> None:
    await asyncio.Event().wait()


async def test_a_valid_payload_succeeds_with_the_handlers_return_value() -> None:
    run = await run_task(app, "greet", {"name": "ada", "times": 2})
    assert run.outcome is Result.SUCCEEDED and run.succeeded and not run.failed and not run.dead
    assert run.value == "hello ada hello ada"
    assert (run.reason, run.error) == (None, None)
    assert uuid.UUID(run.task_id).version == 4


async def test_a_handler_object_and_a_model_payload_work_too() -> None:
    run = await run_task(app, greet, Greet(name="bob"))
    assert run.succeeded and run.value == "hello bob"


async def test_the_handler_gets_the_context_the_worker_builds() -> None:
    run = await run_task(
        app, "greet", {"name": "ada"}, key="user-42", attempt=3, priority="high", headers={"tenant": "acme"}
    )
    ctx = seen[-1]
    assert run.succeeded
    assert (ctx.task, ctx.task_id, ctx.attempt, ctx.priority) == ("greet", run.task_id, 3, "high")
    assert (ctx.topic, ctx.partition, ctx.offset, ctx.key) == ("tasks.high", 0, 0, b"user-42")
    assert ctx.headers["tenant"] == "acme" and ctx.headers["task"] == "greet" and ctx.headers["attempt"] == "3"
    assert abs(ctx.enqueued_at - time.time() * 1000) < 60_000


async def test_a_sync_handler_runs_in_the_thread_pool() -> None:
    run = await run_task(app, "count", {"a": 1, "b": 2})
    assert run.succeeded and run.value == 3


@pytest.mark.parametrize(
    ("payload", "reason", "fragment"),
    [
        ({"times": 2}, "invalid_payload", "name: Field required"),
        ({"name": "ada", "times": "many"}, "invalid_payload", "times:"),
        (b"{not json", "undecodable", "not JSON"),
        (b"\xff\xfe", "undecodable", "not JSON"),
        (None, "undecodable", "no value"),
    ],
)
async def test_a_poison_payload_is_dead_with_its_reason(payload: object, reason: str, fragment: str) -> None:
    before = len(seen)
    run = await run_task(app, "greet", payload)  # type: ignore[arg-type]
    assert run.outcome is Result.DEAD and run.dead
    assert run.reason == reason
    assert isinstance(run.error, PoisonRecord) and fragment in str(run.error)
    assert run.value is None
    assert len(seen) == before, "the handler must not run on a poison payload"


async def test_a_dict_handler_rejects_a_json_value_that_is_not_an_object() -> None:
    run = await run_task(app, "count", b"[1, 2]")
    assert (run.outcome, run.reason) == (Result.DEAD, "invalid_payload")


async def test_an_exception_is_a_retryable_failure() -> None:
    run = await run_task(app, "flaky", {"name": "ada"})
    assert run.outcome is Result.FAILED and run.failed
    assert run.reason is None
    assert isinstance(run.error, ConnectionError) and str(run.error) == "no answer for ada"


async def test_a_timeout_is_a_retryable_failure() -> None:
    run = await run_task(app, "hang", {})
    assert run.failed and isinstance(run.error, TaskTimeout)


async def test_a_permanent_error_is_dead_at_once() -> None:
    run = await run_task(app, refuse, {"name": "mallory"})
    assert (run.outcome, run.reason) == (Result.DEAD, "permanent_error")
    assert isinstance(run.error, PermanentError) and str(run.error) == "mallory is banned"


async def test_an_unknown_task_is_dead_as_unknown_task() -> None:
    run = await run_task(app, "nobody", {"x": 1})
    assert (run.outcome, run.reason) == (Result.DEAD, "unknown_task")
    assert "nobody" in str(run.error)


async def test_a_handler_of_another_app_is_unknown_to_this_one() -> None:
    run = await run_task(App(), greet, {"name": "ada"})
    assert (run.outcome, run.reason) == (Result.DEAD, "unknown_task")


async def test_caller_errors_raise_before_anything_runs() -> None:
    with pytest.raises(StreamprocError, match="unknown priority 'urgent'"):
        await run_task(app, "greet", {"name": "ada"}, priority="urgent")
    with pytest.raises(StreamprocError, match="not JSON-serialisable"):
        await run_task(app, "greet", {"name": object()})


async def test_a_custom_topology_names_the_topic_and_priorities() -> None:
    topology = Topology(prefix="shop", priorities=["critical", "bulk"])
    run = await run_task(app, "greet", {"name": "ada"}, topology=topology, priority="critical")
    assert run.succeeded and (seen[-1].topic, seen[-1].priority) == ("shop.critical", "critical")


def test_run_task_sync_works_without_an_event_loop() -> None:
    run = run_task_sync(app, "greet", {"name": "ada"}, attempt=2)
    assert run.succeeded and run.value == "hello ada" and seen[-1].attempt == 2
    assert run_task_sync(app, "greet", b"nope").reason == "undecodable"


async def test_run_task_sync_refuses_a_running_loop() -> None:
    with pytest.raises(StreamprocError, match="await run_task"):
        run_task_sync(app, "greet", {"name": "ada"})


def test_make_context_fills_every_field() -> None:
    before_ms = time.time() * 1000
    ctx = make_context("send_email")
    assert ctx.task == "send_email"
    assert uuid.UUID(ctx.task_id).version == 4
    assert (ctx.attempt, ctx.priority, ctx.topic, ctx.partition, ctx.offset, ctx.key) == (
        1,
        "normal",
        "tasks.normal",
        0,
        0,
        None,
    )
    assert ctx.headers == {
        "task": "send_email",
        "task-id": ctx.task_id,
        "enqueued-at": str(ctx.enqueued_at),
        "attempt": "1",
        "priority": "normal",
    }
    assert before_ms - 1 <= ctx.enqueued_at <= time.time() * 1000 + 1
    ctx.log.info("a handler may log")  # a real bound structlog logger


def test_make_context_overrides() -> None:
    logger = structlog.get_logger("mine")
    ctx = make_context(
        "report",
        task_id="t-1",
        attempt=4,
        priority="low",
        topic="orders.created",
        partition=2,
        offset=99,
        key="k",
        headers={"tenant": "acme"},
        enqueued_at=1_700_000_000_000,
        log=logger,
    )
    assert (ctx.task_id, ctx.attempt, ctx.priority, ctx.topic, ctx.partition, ctx.offset) == (
        "t-1",
        4,
        "low",
        "orders.created",
        2,
        99,
    )
    assert ctx.key == b"k" and ctx.enqueued_at == 1_700_000_000_000 and ctx.log is logger
    assert ctx.headers["tenant"] == "acme" and ctx.headers["attempt"] == "4" and ctx.headers["task-id"] == "t-1"


def test_make_context_rejects_an_undeclared_priority() -> None:
    with pytest.raises(StreamprocError, match="unknown priority"):
        make_context(priority="urgent")
