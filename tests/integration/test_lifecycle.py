"""The task lifecycle against the real broker (SPEC §12): results, awaiting, cancel, de-duplication."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamproc import Producer, TaskCancelled, TaskFailed, TaskState, admin, provisioning
from streamproc.lifecycle import follower
from streamproc.lifecycle.status import TaskStatus
from streamproc.scheduling import Ordering
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import lifecycle_app
from tests.helpers import run_cli, running, until
from tests.lifecycle_app import Receipt, app


@pytest.fixture(autouse=True)
def fresh_app() -> Iterator[None]:
    lifecycle_app.runs.clear()
    lifecycle_app.gates.clear()
    lifecycle_app.cancelled.clear()
    yield
    for gate in lifecycle_app.gates.values():
        gate.set()


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    await provisioning.apply(kafka_settings, topology)
    return topology


def worker(settings: KafkaSettings, topology: Topology, **options: Any) -> Worker:
    config = WorkerConfig(group=f"{topology.prefix}-g", commit_interval=0.1, **options)
    return Worker(app, settings, topology, config)


async def total(settings: KafkaSettings, topic: str) -> int:
    return sum((await admin.end_offsets(settings, [topic])).values())


async def all_committed(settings: KafkaSettings, topology: Topology) -> bool:
    """Every intake partition committed to its end."""
    topics = [topology.intake_topic(p) for p in topology.priorities]
    ends = await admin.end_offsets(settings, topics)
    committed = await admin.committed_offsets(settings, f"{topology.prefix}-g")
    return all(committed.get(tp, 0) == end for tp, end in ends.items())


async def test_a_result_round_trips_as_the_handlers_model_and_a_dead_task_raises(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        ok = await producer.submit(lifecycle_app.charge, {"label": "ok", "cents": 21})
        dead = await producer.submit(lifecycle_app.charge, {"label": "dead", "permanent": True})
        assert await ok.result(timeout=30) == Receipt(label="ok", total_cents=42)
        with pytest.raises(TaskFailed) as failed:
            await dead.result(timeout=30)
        assert failed.value.reason == "permanent_error" and "declined" in (failed.value.error or "")
        assert str(ok) == ok.id and ok.offset is not None

    # Another process, after the fact: the CLI reads the status topic (no web view here).
    env = {"STREAMPROC_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
    topics = ["--file", str(_topics_file(applied))]
    shown = run_cli("result", ok.id, "--timeout", "30", *topics, **env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"label": "ok", "total_cents": 42}
    refused = run_cli("result", dead.id, "--timeout", "30", *topics, **env)
    assert refused.returncode == 1 and "permanent_error" in refused.stderr
    status = run_cli("status", dead.id, "--json", *topics, **env)
    assert json.loads(status.stdout)["state"] == "dead"
    too_late = run_cli("cancel", ok.id, *topics, **env)
    assert too_late.returncode == 1
    assert too_late.stderr.strip() == f"error: task {ok.id} has already finished (succeeded): nothing to cancel"
    nowhere = run_cli(
        "status", ok.id, "--file", str(_topics_file(applied.model_copy(update={"prefix": "none"}))), **env
    )
    assert nowhere.returncode == 1 and "topic 'none.status' does not exist" in nowhere.stderr


def _topics_file(topology: Topology) -> Path:
    """The topology as a topics file, for the command line."""
    path = Path(tempfile.mkdtemp()) / "topics.yaml"
    path.write_text(yaml.safe_dump(topology.model_dump()))
    return path


async def test_a_thousand_awaits_share_one_reader_and_an_idle_await_costs_no_cpu(
    kafka_settings: KafkaSettings, applied: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers: list[object] = []

    class CountedConsumer(AIOKafkaConsumer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            readers.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(follower, "AIOKafkaConsumer", CountedConsumer)
    async with Producer(kafka_settings, applied) as producer:
        idle = await producer.submit(lifecycle_app.charge, {"label": "idle"})
        cpu, wall = time.process_time(), time.monotonic()
        with pytest.raises(TimeoutError):
            await idle.result(timeout=10)  # no worker runs: nothing arrives
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
        print(f"CPU of an idle await: {used:.1%} of a core")
        assert used < 0.05

        handles = await producer.submit_many(
            lifecycle_app.charge, [{"label": f"t{i}", "cents": i} for i in range(1000)]
        )
        async with running(worker(kafka_settings, applied)):
            results = await asyncio.gather(*(handle.result(timeout=60) for handle in handles))
    assert [r.total_cents for r in results] == [2 * i for i in range(1000)]
    # One reader for every await, the idle one too: a new consumer replaces it only when a status
    # partition is to be read that it did not read (see the next test), so at most one per partition.
    assert len(readers) <= applied.status.partitions
    assert sum(lifecycle_app.runs[f"t{i}"] for i in range(1000)) == 1000


async def test_the_first_await_on_a_status_partition_does_not_wait_out_the_readers_long_poll(
    kafka_settings: KafkaSettings, applied: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader sits in a long-poll fetch of partition 0 when an await names partition 1: the
    broker answers a connection's requests in order, so fetching partition 1 on that connection
    would wait the poll out (500 ms by default, 60 s here)."""
    monkeypatch.setattr(follower, "FETCH_WAIT_MS", 60_000)
    producer = AIOKafkaProducer(**kafka_settings.client_kwargs())
    await producer.start()
    try:
        for partition, task_id in enumerate(("first", "second")):
            status = TaskStatus(task_id, TaskState.SUCCEEDED, "charge", 1, time.time_ns() // 1_000_000)
            await producer.send_and_wait(
                applied.status_topic, status.to_json(), key=task_id.encode(), partition=partition
            )
    finally:
        await producer.stop()
    reader = follower.StatusFollower(kafka_settings, applied.status_topic)
    try:
        async with asyncio.timeout(30):
            assert (await reader.wait("first", {0: 0})).state is TaskState.SUCCEEDED
            # Partition 0 read to its end: the reader's fetch now waits for records that will not come.
            fetcher = reader._consumer._fetcher  # type: ignore[union-attr]
            await until(lambda: bool(fetcher._in_flight), 10, "the reader's long poll")
            assert (await reader.wait("second", {1: 0})).state is TaskState.SUCCEEDED
    finally:
        await reader.stop()


async def test_a_task_cancelled_before_it_starts_never_runs_even_across_a_restart(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer:
        async with running(worker(kafka_settings, applied)):  # the group exists and has read the control topic
            pass
        doomed = await producer.submit(lifecycle_app.charge, {"label": "doomed"})
        before = await producer.cancel(doomed.id)
        assert before.state is TaskState.PENDING
        with pytest.raises(TaskCancelled):
            await doomed.result(timeout=30)
        after = await producer.submit(lifecycle_app.charge, {"label": "after"})
        async with running(worker(kafka_settings, applied)):
            assert (await after.result(timeout=30)).label == "after"
            await until_async(lambda: all_committed(kafka_settings, applied), "the commit past the cancelled task")
        assert (await producer.status(doomed.id)).state is TaskState.CANCELLED
        assert (await producer.cancel(doomed.id)).state is TaskState.CANCELLED  # says it is finished
    assert lifecycle_app.runs["doomed"] == 0 and lifecycle_app.runs["after"] == 1
    assert await total(kafka_settings, applied.dlq_topic) == 0


async def until_async(condition: Any, what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_cancel_reaches_a_retry_waiting_in_a_tier_and_a_running_handler(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with (
        Producer(kafka_settings, applied) as producer,
        running(worker(kafka_settings, applied, ordering=Ordering.UNORDERED)),
    ):
        retrying = await producer.submit(lifecycle_app.charge, {"label": "retrying", "fail": True})
        running_one = await producer.submit(lifecycle_app.charge, {"label": "running", "gate": "held"})
        await until(lambda: lifecycle_app.runs["retrying"] == 1 and lifecycle_app.runs["running"] == 1, what="both")
        await until_async(
            lambda: _state_is(producer, retrying.id, TaskState.RETRYING), "the failed attempt's retrying status"
        )
        await producer.cancel(retrying.id)
        await producer.cancel(running_one.id)
        with pytest.raises(TaskCancelled):
            await running_one.result(timeout=30)
        await until(lambda: lifecycle_app.cancelled == ["running"], what="the handler's cancellation")
        # The tier's delay (1 s) passes; the retry is skipped, not run, and nothing is dead-lettered.
        await until_async(lambda: all_committed(kafka_settings, applied), "the intake commit")
        tiers = [applied.tier_topic(d) for d in applied.tiers.delays]
        ends = await admin.end_offsets(kafka_settings, tiers)

        async def tiers_committed() -> bool:
            committed = await admin.committed_offsets(kafka_settings, f"{applied.prefix}-g")
            return all(committed.get(tp, 0) == end for tp, end in ends.items())

        await until_async(tiers_committed, "the tier commit past the cancelled retry")
    assert lifecycle_app.runs["retrying"] == 1
    assert await total(kafka_settings, applied.dlq_topic) == 0


async def _state_is(producer: Producer, task_id: str, state: TaskState) -> bool:
    return (await producer.status(task_id)).state is state


async def test_one_idempotency_key_runs_the_handler_once_and_a_cached_payload_is_not_run_again(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        first = await producer.submit(lifecycle_app.charge, {"label": "once"}, idempotency_key="order-42")
        second = await producer.submit(lifecycle_app.charge, {"label": "once"}, idempotency_key="order-42")
        assert first.id == second.id
        assert await first.result(timeout=30) == await second.result(timeout=30)
        third = await producer.submit(lifecycle_app.charge, {"label": "once"}, idempotency_key="order-42")
        assert third.id == first.id and third.offset is None  # found, not sent
        assert (await third.result(timeout=30)).label == "once"

        cached = await producer.submit(lifecycle_app.quote, {"label": "q", "n": 1})
        assert await cached.result(timeout=30) == {"quoted": {"label": "q", "n": 1}}
        again = await producer.submit(lifecycle_app.quote, {"n": 1, "label": "q"})  # the same payload
        assert again.id == cached.id and await again.result(timeout=30) == {"quoted": {"label": "q", "n": 1}}
    assert lifecycle_app.runs["once"] == 1 and lifecycle_app.runs["q"] == 1


async def test_with_streamproc_web_a_bare_id_is_looked_up_there_and_awaited_from_where_it_had_read(
    kafka_settings: KafkaSettings, applied: Topology, tmp_path: Path
) -> None:
    from streamproc.bench.web_view import following, serving
    from streamproc.web.app import create_app

    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        done = await producer.submit(lifecycle_app.charge, {"label": "done", "cents": 5})
        await done.result(timeout=30)
        held = await producer.submit(lifecycle_app.charge, {"label": "held", "gate": "later"})
        async with (
            following(kafka_settings, applied, tmp_path / "status.sqlite", catch_up_s=60) as view,
            serving(create_app(view)) as url,
            Producer(kafka_settings, applied, web_url=url) as asking,
        ):
            # Finished before the call: one HTTP lookup. Not finished yet: followed from the view's position.
            assert await asking.result(done.id, timeout=30) == {"label": "done", "total_cents": 10}
            waiting = asyncio.create_task(asking.result(held.id, timeout=30))
            await until(lambda: lifecycle_app.runs["held"] == 1, what="the held task to start")
            lifecycle_app.gates["later"].set()
            assert await waiting == {"label": "held", "total_cents": 200}
            await until_async(lambda: _state_is(asking, held.id, TaskState.SUCCEEDED), "the view to have the success")


async def test_track_started_shows_a_running_task_and_store_result_false_keeps_no_result(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        handle = await producer.submit(lifecycle_app.tracked, {"label": "tracked", "gate": "go"})
        await until_async(lambda: _state_is(producer, handle.id, TaskState.STARTED), "the started status")
        lifecycle_app.gates.setdefault("go", asyncio.Event()).set()  # `started` is written before the handler runs
        assert await handle.result(timeout=30) is None
        finished = await producer.status(handle.id)
    assert finished.state is TaskState.SUCCEEDED and finished.result is None and finished.attempt == 1
