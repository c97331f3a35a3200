import asyncio
import threading

import pytest

from streamproc import App, PermanentError, TaskContext
from streamproc.envelope import Envelope
from streamproc.execution import Executor, Outcome, Result, TaskTimeout

app = App()
threads: list[str] = []


@app.task("sync")
def sync_handler(payload: dict[str, int]) -> None:
    threads.append(threading.current_thread().name)


@app.task("hang", timeout=0.05)
async def hang(payload: dict[str, int]) -> None:
    await asyncio.Event().wait()


@app.task("refuse")
async def refuse(payload: dict[str, int], ctx: TaskContext) -> None:
    raise PermanentError(f"task {ctx.task_id} cannot be done")


@app.task("boom")
async def boom(payload: dict[str, int]) -> None:
    raise RuntimeError("flaky")


def envelope(task: str | None, value: bytes | None = b"{}") -> Envelope:
    return Envelope("t", 0, 7, None, value, {}, task, "id-1", 0, 1, "normal")


async def test_sync_handlers_run_in_the_thread_pool() -> None:
    outcome = await Executor(app, threads=2).run(envelope("sync"))
    assert outcome.result is Result.SUCCEEDED
    assert threads[-1].startswith("streamproc-sync") and threads[-1] != threading.main_thread().name


async def test_a_hanging_handler_times_out_as_a_retryable_failure() -> None:
    outcome = await Executor(app, threads=1).run(envelope("hang"))
    assert outcome.result is Result.FAILED and isinstance(outcome.error, TaskTimeout)
    assert outcome.error_type == "TaskTimeout"


async def test_failures_and_poison_become_outcomes_not_exceptions() -> None:
    executor = Executor(app, threads=1)
    cases = {
        "boom": (Result.FAILED, None),
        "refuse": (Result.DEAD, "permanent_error"),
        "nobody": (Result.DEAD, "unknown_task"),
        None: (Result.DEAD, "missing_task"),
    }
    for task, expected in cases.items():
        outcome = await executor.run(envelope(task))
        assert (outcome.result, outcome.reason) == expected, task
    undecodable = await executor.run(envelope("boom", b"not json"))
    assert (undecodable.result, undecodable.reason) == (Result.DEAD, "undecodable")


@app.task("own_timeout", timeout=5)
async def own_timeout(payload: dict[str, int]) -> None:
    raise TimeoutError("the upstream call timed out")


async def test_a_cancel_that_is_not_a_timeout_propagates() -> None:
    executor = Executor(app, threads=1)
    running = asyncio.create_task(executor.run(envelope("hang")))
    await asyncio.sleep(0)  # the handler is waiting now
    running.cancel()  # as a revocation or a shutdown does
    with pytest.raises(asyncio.CancelledError):
        await running
    executor.close()


async def test_the_handlers_own_timeout_error_is_a_plain_failure_and_the_executor_goes_on() -> None:
    executor = Executor(app, threads=1)
    own = await executor.run(envelope("own_timeout"))
    assert own.result is Result.FAILED and not isinstance(own.error, TaskTimeout)
    timed_out = await executor.run(envelope("hang"))  # the watchdog still watches after the first call
    assert isinstance(timed_out.error, TaskTimeout)
    executor.close()


async def test_a_raised_failure_carries_its_traceback_and_a_poison_record_none() -> None:
    executor = Executor(app, threads=1)
    for task in ("boom", "refuse"):
        trace = (await executor.run(envelope(task))).format_traceback()
        assert trace is not None and trace.startswith("Traceback (most recent call last):"), task
        assert f"in {task}\n" in trace, trace  # the handler's own frame
    assert (await executor.run(envelope("nobody"))).format_traceback() is None  # unknown_task
    assert (await executor.run(envelope("boom", b"not json"))).format_traceback() is None  # invalid payload
    assert Outcome(Result.DEFERRED, 0.0, RuntimeError("circuit open")).format_traceback() is None  # never raised
