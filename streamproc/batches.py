"""Batch handlers (SPEC §15): the jobs of a batch task gathered into one handler call.

`Gathering` holds the jobs the scheduler let start whose task has a `Batch`, per task name, until
`max_size` of them are there or `max_wait` has passed since the first: then the worker takes them
out as one batch and runs it in one concurrency slot (`run_batch`). Each job keeps its key lane
while it waits and runs, as any started job does, so two tasks of one key are never in the same
batch and key order holds. Gathered jobs do not count against their partition's prefetch, so a
batch can fill up from one partition: the scheduler gives out jobs only while a slot is free, and a
free slot starts a full batch at once, so what gathers stays within about `max_size` per task.

`run_batch` decodes every item (a poison item is dead on its own and left out of the call), calls
the handler once with the list of payloads (and of `TaskContext`s), within the task's timeout, and
turns what happened into one `Outcome` per item:
- it returned: every item succeeded, with the list's element as its result when it returned a
  list of one result per item, else with no result;
- it raised `BatchFailed({index: error})`: those items failed (dead at once for a
  `PermanentError`), the others succeeded without a result;
- it raised anything else (a timeout too): every item failed as that error would fail one task.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from streamproc.app import Batch, Task
from streamproc.envelope import Envelope
from streamproc.errors import BatchFailed, PoisonRecord
from streamproc.execution import Executor, Outcome, Result, failed, task_context
from streamproc.scheduling import Job, Partition


class Gathering:
    """Started jobs of batch tasks, waiting for their batch to fill or fall due (monotonic times)."""

    def __init__(self, tasks: Mapping[str, Task[Any, Any]]) -> None:
        self._batches: dict[str, Batch] = {name: task.batch for name, task in tasks.items() if task.batch is not None}
        self._jobs: dict[str, list[Job[Envelope]]] = {}
        self._first_at: dict[str, float] = {}  # task → when its oldest gathered job came

    def __bool__(self) -> bool:
        return bool(self._batches)

    def takes(self, job: Job[Envelope]) -> bool:
        """Whether `job` belongs to a batch (a record that cannot be read runs, and dies, on its own)."""
        return job.item.task in self._batches and job.item.undecodable is None

    def add(self, job: Job[Envelope], now: float) -> None:
        task = job.item.task or ""
        self._jobs.setdefault(task, []).append(job)
        self._first_at.setdefault(task, now)

    def pop_ready(self, now: float) -> list[Job[Envelope]] | None:
        """A batch that is full or due, taken out; None when none is."""
        for task, jobs in self._jobs.items():
            batch = self._batches[task]
            if len(jobs) >= batch.max_size or now >= self._first_at[task] + batch.max_wait:
                ready, rest = jobs[: batch.max_size], jobs[batch.max_size :]
                if rest:
                    self._jobs[task], self._first_at[task] = rest, now
                else:
                    del self._jobs[task], self._first_at[task]
                return ready
        return None

    def next_due(self) -> float | None:
        """When the oldest gathering batch falls due."""
        return min((at + self._batches[task].max_wait for task, at in self._first_at.items()), default=None)

    def drop(self, partitions: Iterable[Partition]) -> list[Job[Envelope]]:
        """Take out the gathered jobs of `partitions` (revoked): they never started."""
        gone = set(partitions)
        dropped = [job for jobs in self._jobs.values() for job in jobs if job.partition in gone]
        for task in list(self._jobs):
            kept = [job for job in self._jobs[task] if job.partition not in gone]
            if kept:
                self._jobs[task] = kept
            else:
                del self._jobs[task], self._first_at[task]
        return dropped


async def run_batch(executor: Executor, envelopes: list[Envelope]) -> list[Outcome]:
    """One outcome per envelope (all of one batch task), in order; see the module docstring."""
    begin = time.perf_counter()
    task = executor.task_for(envelopes[0])
    outcomes: list[Outcome | None] = [None] * len(envelopes)
    called: list[int] = []  # indexes into `envelopes` of the items the handler gets
    payloads: list[Any] = []
    for index, envelope in enumerate(envelopes):
        try:
            payloads.append(task.decode(envelope.value))
        except PoisonRecord as exc:
            outcomes[index] = Outcome(Result.DEAD, 0.0, exc, exc.reason)
            continue
        called.append(index)
    if called:
        args: tuple[Any, ...] = (payloads,)
        if task.wants_context:
            args += ([task_context(task.name, envelopes[i]) for i in called],)
        returned = await _call(executor, task, args)
        for index, outcome in zip(called, _item_outcomes(returned, len(called), begin), strict=True):
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]  # each item has one now


async def _call(executor: Executor, task: Task[Any, Any], args: tuple[Any, ...]) -> Any:
    """What the handler returned, or the exception it raised (returned, not raised)."""
    try:
        return await executor.call(task, args)
    except Exception as exc:
        return exc


def _item_outcomes(returned: Any, items: int, begin: float) -> list[Outcome]:
    took = time.perf_counter() - begin
    if isinstance(returned, BatchFailed):
        failures = returned.failures
        return [failed(failures[i], took) if i in failures else Outcome(Result.SUCCEEDED, took) for i in range(items)]
    if isinstance(returned, Exception):
        return [failed(returned, took)] * items
    if isinstance(returned, list) and len(returned) == items:
        return [Outcome(Result.SUCCEEDED, took, value=value) for value in returned]
    return [Outcome(Result.SUCCEEDED, took)] * items
