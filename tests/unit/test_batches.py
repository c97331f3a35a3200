"""Batch handlers without Kafka (SPEC §15): how jobs gather into batches, and each item's outcome."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from streamproc import App, Batch, BatchFailed, PermanentError, TaskContext
from streamproc.batches import Gathering, run_batch
from streamproc.envelope import Envelope
from streamproc.errors import StreamprocError
from streamproc.execution import Executor, Result
from streamproc.scheduling import Job
from streamproc.testing import run_batch_task, run_task


class Line(BaseModel):
    n: int


app = App()
seen: list[list[int]] = []
seen_ids: list[list[str]] = []


@app.task("sum_lines", batch=Batch(max_size=3, max_wait=0.5))
async def sum_lines(items: list[Line], contexts: list[TaskContext]) -> list[int]:
    seen.append([item.n for item in items])
    seen_ids.append([ctx.task_id for ctx in contexts])
    if any(item.n < 0 for item in items):
        raise BatchFailed(
            {
                i: RuntimeError("negative") if item.n == -1 else PermanentError("never")
                for i, item in enumerate(items)
                if item.n < 0
            }
        )
    return [item.n * 10 for item in items]


@app.task("broken", batch=Batch(max_size=3))
def broken(items: list[dict[str, int]]) -> None:
    raise RuntimeError("the store is down")


def envelope(task: str, value: bytes | None, n: int, partition: int = 0) -> Envelope:
    return Envelope("t", partition, n, None, value, {}, task, f"id-{n}", 0, 1, "normal")


def job(task: str, n: int, partition: int = 0) -> Job[Envelope]:
    return Job(("t", partition), n, 0, None, envelope(task, b'{"n": %d}' % n, n, partition))


def test_a_batch_starts_when_full_or_when_its_first_job_waited_max_wait() -> None:
    gathering = Gathering(app.tasks)
    for n in range(4):
        gathering.add(job("sum_lines", n, partition=n % 2), now=10.0)
    assert gathering.next_due() == 10.5
    assert [j.offset for j in gathering.pop_ready(10.0) or []] == [0, 1, 2]
    assert gathering.pop_ready(10.1) is None  # one left, not due yet: its wait starts again
    assert [j.offset for j in gathering.pop_ready(10.6) or []] == [3]
    assert gathering.next_due() is None


def test_revoked_partitions_leave_the_gathering() -> None:
    gathering = Gathering(app.tasks)
    for n in range(3):
        gathering.add(job("sum_lines", n, partition=n % 2), now=0.0)
    assert [j.offset for j in gathering.drop([("t", 0)])] == [0, 2]
    assert [j.offset for j in gathering.pop_ready(1.0) or []] == [1]


def test_only_readable_records_of_batch_tasks_are_gathered() -> None:
    gathering = Gathering(app.tasks)
    unreadable = Envelope("t", 0, 1, None, b"{}", {}, "sum_lines", "id-1", 0, 1, "normal", undecodable="bad header")
    assert gathering.takes(job("sum_lines", 1))
    assert not gathering.takes(Job(("t", 0), 1, 0, None, unreadable))
    assert not Gathering(App().tasks)


async def test_each_item_gets_its_result_and_a_poison_item_dies_alone() -> None:
    envelopes = [
        envelope("sum_lines", b'{"n": 1}', 1),
        envelope("sum_lines", b'{"n": "x"}', 2),
        envelope("sum_lines", b'{"n": 3}', 3),
    ]
    outcomes = await run_batch(Executor(app, threads=1), envelopes)
    assert [(o.result, o.value) for o in outcomes] == [
        (Result.SUCCEEDED, 10),
        (Result.DEAD, None),
        (Result.SUCCEEDED, 30),
    ]
    assert outcomes[1].reason == "invalid_payload"
    assert seen[-1] == [1, 3] and seen_ids[-1] == ["id-1", "id-3"]  # the poison item was left out of the call


async def test_batch_failed_fails_only_its_items() -> None:
    envelopes = [envelope("sum_lines", b'{"n": %d}' % n, n) for n in (5, -1, -2)]
    outcomes = await run_batch(Executor(app, threads=1), envelopes)
    assert [o.result for o in outcomes] == [Result.SUCCEEDED, Result.FAILED, Result.DEAD]
    assert str(outcomes[1].error) == "negative" and outcomes[2].reason == "permanent_error"


async def test_any_other_exception_fails_every_item() -> None:
    outcomes = await run_batch(Executor(app, threads=1), [envelope("broken", b"{}", n) for n in range(3)])
    assert {(o.result, str(o.error)) for o in outcomes} == {(Result.FAILED, "the store is down")}


def test_batch_tasks_are_declared_with_a_list_and_without_per_task_pacing() -> None:
    with pytest.raises(StreamprocError, match="takes list\\[Model\\] or list\\[dict\\]"):
        App().task("one", batch=Batch())(lambda item: None)
    with pytest.raises(StreamprocError, match="neither rate_limit nor track_started"):
        App().task("paced", batch=Batch(), rate_limit="5/s")(sum_lines.fn)
    with pytest.raises(StreamprocError, match="max_size >= 1"):
        Batch(max_size=0)
    assert app.tasks["sum_lines"].failure_threshold is None and app.tasks["sum_lines"].model is Line


async def test_the_testing_helper_runs_a_batch_task_in_one_call() -> None:
    runs = await run_batch_task(app, sum_lines, [{"n": 4}, {"n": -1}, b"not json"])
    assert [(run.outcome, run.value) for run in runs] == [
        (Result.SUCCEEDED, None),  # BatchFailed: the others succeed without a result
        (Result.FAILED, None),
        (Result.DEAD, None),
    ]
    assert seen[-1] == [4, -1] and runs[2].reason == "undecodable"
    single = await run_task(app, "sum_lines", {"n": 2})
    assert single.value == 20  # a batch of one
