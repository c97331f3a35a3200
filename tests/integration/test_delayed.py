"""Delayed tasks against the real broker (SPEC §13): `submit(countdown=…|eta=…)` and the scheduler
that `streamproc worker` runs beside its worker (tests/timing_app.py journals each run)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from streamproc import Producer, SyncProducer, TaskState, provisioning
from streamproc.errors import StreamprocError
from streamproc.percentile import percentile
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import WorkerProcesses, wait_for

Workers = Callable[[Topology], subprocess.Popen[bytes]]


@dataclass(frozen=True)
class Run:
    task_id: str
    run_at_ms: int  # the `run-at` header (0: none)
    eta_ms: int
    started_ms: int


def runs(path: Path) -> list[Run]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:  # a line being written has fewer parts
            found.append(Run(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return found


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return tmp_path / "journal.txt"


@pytest.fixture
def workers(bootstrap: str, topology: Topology, tmp_path: Path, journal: Path) -> Iterator[Workers]:
    """Starts `streamproc worker` processes of tests/timing_app.py, each with the topics file of the
    topology it is given (the test's, or a variant of it under the same prefix)."""
    topics_file = tmp_path / "topics.yaml"
    processes = WorkerProcesses("tests.timing_app:app", f"{topology.prefix}-g", topics_file, tmp_path, journal)

    def start(variant: Topology) -> subprocess.Popen[bytes]:
        topics_file.write_text(yaml.safe_dump(variant.model_dump()))
        return processes.start("--concurrency", "32")

    yield start
    processes.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


async def submit_spread(settings: KafkaSettings, topology: Topology, etas_ms: list[int]) -> set[str]:
    """Submit one task per eta, in the given order, many at once."""
    async with Producer(settings, topology) as producer:
        limit = asyncio.Semaphore(500)

        async def one(eta_ms: int) -> str:
            async with limit:
                eta = datetime.fromtimestamp(eta_ms / 1000, UTC)
                return (await producer.submit("due", {"eta_ms": eta_ms}, eta=eta)).id

        return set(await asyncio.gather(*(one(eta) for eta in etas_ms)))


def test_ten_thousand_delayed_tasks_across_a_worker_restart_each_run_once_never_early(
    kafka_settings: KafkaSettings, topology: Topology, workers: Workers, journal: Path
) -> None:
    n, spread_s, first_s = 10_000, 60, 10
    asyncio.run(provisioning.apply(kafka_settings, topology))
    first = workers(topology)
    start_ms = time.time_ns() // 1_000_000 + first_s * 1000
    etas = [start_ms + random.randrange(spread_s * 1000) for _ in range(n)]  # random order
    submitted_at = time.monotonic()
    ids = asyncio.run(submit_spread(kafka_settings, topology, etas))
    submit_s = time.monotonic() - submitted_at
    assert len(ids) == n

    wait_for(lambda: time.time() * 1000 >= start_ms + spread_s * 500, 120, "the middle of the spread")
    second = workers(topology)  # a rolling restart: the second joins, then the first stops
    time.sleep(3)
    stop(first)
    restarted_at_ms = time.time_ns() // 1_000_000
    wait_for(lambda: {r.task_id for r in runs(journal)} >= ids, spread_s + 60, "every delayed task run")
    time.sleep(3)  # a second run of any would show by now
    stop(second)

    done = runs(journal)
    counts = Counter(r.task_id for r in done)
    scheduled = [r for r in done if r.run_at_ms]  # a task submitted after its eta (a slow machine) ran at once
    lateness = [(r.started_ms - r.eta_ms) / 1000 for r in scheduled]
    around = [late for r, late in zip(scheduled, lateness, strict=True) if abs(r.eta_ms - restarted_at_ms) < 5_000]
    print(
        f"\n{n} delayed tasks over {spread_s} s (submitted in {submit_s:.1f} s, {n - len(scheduled)} after their eta), "
        "rolling restart at the middle: "
        f"lateness p50 {percentile(lateness, 50) * 1000:.0f} ms, p99 {percentile(lateness, 99) * 1000:.0f} ms, "
        f"max {max(lateness) * 1000:.0f} ms; within 5 s of the restart ({len(around)}): "
        f"p99 {percentile(around, 99) * 1000:.0f} ms; ran twice: {sum(counts.values()) - len(counts)}"
    )
    assert set(counts) == ids
    assert max(counts.values()) == 1, "a delayed task ran twice"
    assert all(r.started_ms >= r.eta_ms for r in done), "a delayed task ran before its eta"
    assert all(r.run_at_ms == r.eta_ms for r in scheduled), "the run-at header is the eta"
    assert len(scheduled) > n // 2, "most were scheduled (submitted before their eta)"


def test_a_task_delayed_by_an_hour_does_not_hold_back_one_delayed_by_a_second_behind_it(
    kafka_settings: KafkaSettings, topology: Topology, workers: Workers, journal: Path
) -> None:
    single = topology.model_copy(update={"schedules": topology.schedules.model_copy(update={"partitions": 1})})

    async def submit() -> tuple[str, str]:
        await provisioning.apply(kafka_settings, single)
        async with Producer(kafka_settings, single) as producer:
            later = await producer.submit("due", {}, key="same", countdown=3600)
            soon = await producer.submit("due", {}, key="same", countdown=1)
            return later.id, soon.id

    worker = workers(single)
    later, soon = asyncio.run(submit())
    wait_for(lambda: soon in {r.task_id for r in runs(journal)}, 60, "the task delayed by 1 s")
    stop(worker)
    assert later not in {r.task_id for r in runs(journal)}

    async def state() -> TaskState:
        async with Producer(kafka_settings, single) as producer:
            return (await producer.status(later)).state

    assert asyncio.run(state()) is TaskState.PENDING


def test_cancel_reaches_a_delayed_task_and_it_never_runs(
    kafka_settings: KafkaSettings, topology: Topology, workers: Workers, journal: Path
) -> None:
    async def submit_and_cancel() -> tuple[str, str, TaskState]:
        await provisioning.apply(kafka_settings, topology)
        async with Producer(kafka_settings, topology) as producer:
            cancelled = await producer.submit("due", {}, countdown=2)
            kept = await producer.submit("due", {}, countdown=2)
            before = await producer.cancel(cancelled.id)
            assert before.state is TaskState.PENDING
            return cancelled.id, kept.id, (await cancelled.wait(timeout=5)).state

    worker = workers(topology)
    cancelled, kept, state = asyncio.run(submit_and_cancel())
    assert state is TaskState.CANCELLED
    wait_for(lambda: kept in {r.task_id for r in runs(journal)}, 60, "the delayed task not cancelled")
    time.sleep(2)
    stop(worker)
    assert cancelled not in {r.task_id for r in runs(journal)}


def test_an_eta_in_the_past_runs_now_and_bad_delays_are_one_line_errors(
    kafka_settings: KafkaSettings, topology: Topology, workers: Workers, journal: Path
) -> None:
    async def submit() -> list[str]:
        await provisioning.apply(kafka_settings, topology)
        async with Producer(kafka_settings, topology) as producer:
            with pytest.raises(StreamprocError, match="not both"):
                await producer.submit("due", {}, countdown=1, eta=datetime.now(UTC))
            with pytest.raises(StreamprocError, match="no timezone"):
                await producer.submit("due", {}, eta=datetime.now() + timedelta(seconds=5))
            past = await producer.submit("due", {}, eta=datetime.now(UTC) - timedelta(hours=1))
            now = await producer.submit("due", {}, countdown=0)
            assert past.offset is not None and now.offset is not None  # sent to intake, not scheduled
            return [past.id, now.id]

    worker = workers(topology)
    ids = asyncio.run(submit())
    with SyncProducer(kafka_settings, topology) as sync:
        delayed = sync.submit("due", {}, countdown=1).id
    wait_for(lambda: {r.task_id for r in runs(journal)} >= {*ids, delayed}, 60, "the tasks")
    stop(worker)
    by_id = {r.task_id: r for r in runs(journal)}
    assert [by_id[i].run_at_ms for i in ids] == [0, 0]  # ordinary tasks: no run-at
    assert by_id[delayed].run_at_ms > 0
