"""`streamproc web` against the real broker: the status view follows `<prefix>.status` into its store
and `GET /api/tasks/{id}` answers from it; junk is skipped, a terminal status is kept, a restart
resumes where it stopped, and a deleted store is rebuilt from the topic."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from streamproc import admin, provisioning
from streamproc.bench.web_view import following, ingest_rate, lookup_latency, serving
from streamproc.errors import StreamprocError
from streamproc.lifecycle.status import TaskState, TaskStatus
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.web.app import create_app
from streamproc.web.client import WebClient, fetch_status
from streamproc.web.store import StatusStore
from streamproc.web.view import StatusView
from tests.helpers import run_cli

Record = tuple[bytes | None, bytes | None, int]  # key, value, partition


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    """The test topology with two status partitions, on the cluster."""
    topology = topology.model_copy(update={"status": topology.status.model_copy(update={"partitions": 2})})
    await provisioning.apply(kafka_settings, topology)
    return topology


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(**kafka_settings.client_kwargs(), acks="all")
    await started.start()
    yield started
    await started.stop()


def status(task_id: str, state: TaskState, **fields: Any) -> TaskStatus:
    return replace(TaskStatus(task_id, state, "send_email", 1, time.time_ns() // 1_000_000), **fields)


def record(s: TaskStatus, partition: int = 0) -> Record:
    return s.task_id.encode(), s.to_json(), partition


async def publish(producer: AIOKafkaProducer, topology: Topology, *records: Record) -> None:
    for key, value, partition in records:  # one by one: the order within a partition is the test's
        await producer.send_and_wait(topology.status_topic, value, key=key, partition=partition)


@asynccontextmanager
async def web(
    settings: KafkaSettings, topology: Topology, db: Path
) -> AsyncIterator[tuple[StatusView, httpx.AsyncClient]]:
    """A caught-up view over `db` and an HTTP client of its app (in process)."""
    async with (
        following(settings, topology, db, catch_up_s=60) as view,
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app(view)), base_url="http://web") as client,
    ):
        yield view, client


async def state_of(client: httpx.AsyncClient, task_id: str) -> Any:
    """The status the API answers, without `read_to` (checked on its own)."""
    response = await client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200
    body = response.json()
    del body["read_to"]
    return body


async def eventually(client: httpx.AsyncClient, task_id: str, state: TaskState, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while (await state_of(client, task_id))["state"] != state:
        assert time.monotonic() < deadline, f"{task_id} did not become {state} within {within_s}s"
        await asyncio.sleep(0.02)


async def test_lookups_answer_from_the_status_topic(
    kafka_settings: KafkaSettings, applied: Topology, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    done = status("a", TaskState.SUCCEEDED, result={"sent": 3})
    retrying = status("b", TaskState.RETRYING, error_type="OSError", error="timeout", retry_at=1_800_000_000_000)
    slashed = status("tenant/7", TaskState.DEAD, reason="retries_exhausted", error_type="OSError", error="down")
    junk: list[Record] = [
        (b"j1", b"not json", 0),
        (b"j2", b'{"id": 5, "state": "pending"}', 1),
        (b"j3", None, 0),  # a tombstone
        (b"j4", b'{"id": "j4", "state": "bogus"}', 1),
        (b"j5", b"[]", 0),
    ]  # (a compacted topic refuses records without a key)
    await publish(
        producer,
        applied,
        record(status("a", TaskState.PENDING)),
        record(done),
        record(status("a", TaskState.PENDING)),  # late, after the terminal one: kept out
        record(retrying, 1),
        record(slashed, 1),
        *junk,
    )
    async with web(kafka_settings, applied, tmp_path / "status.sqlite") as (_, client):
        assert await state_of(client, "a") == done.as_dict()
        assert await state_of(client, "b") == retrying.as_dict()
        assert await state_of(client, "tenant/7") == slashed.as_dict()
        assert await state_of(client, "nope") == {"id": "nope", "state": "unknown"}
        # Where to follow each status partition from, once nothing before it is missing from the answer.
        ends = await admin.end_offsets(kafka_settings, [applied.status_topic])
        read_to = (await client.get("/api/tasks/a")).json()["read_to"]
        assert {int(p): o for p, o in read_to.items()} == {tp.partition: end for tp, end in ends.items()}
        health = (await client.get("/api/health")).json()
        assert health == {"caught_up": True, "statuses": 5, "ignored": len(junk), "lag": 0}

        await publish(producer, applied, record(status("b", TaskState.SUCCEEDED, attempt=2), 1))
        await eventually(client, "b", TaskState.SUCCEEDED)  # it keeps following

        schema = (await client.get("/openapi.json")).json()
        assert {"/api/tasks/{task_id}", "/api/health"} <= set(schema["paths"])


async def test_a_restart_resumes_and_a_deleted_store_is_rebuilt(
    kafka_settings: KafkaSettings, applied: Topology, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    db = tmp_path / "status.sqlite"
    first = [status(f"t{n}", TaskState.SUCCEEDED, result=n) for n in range(10)]
    await publish(producer, applied, *(record(s, n % 2) for n, s in enumerate(first)), (b"j", b"junk", 0))
    async with web(kafka_settings, applied, db) as (view, client):
        assert view.statuses == 10
        assert (await state_of(client, "t3"))["result"] == 3

    await publish(producer, applied, record(status("t3", TaskState.PENDING), 1), record(status("late", TaskState.DEAD)))
    async with web(kafka_settings, applied, db) as (view, client):
        assert (view.statuses, view.ignored) == (2, 0)  # only what came after the last commit
        assert (await state_of(client, "t3"))["state"] == "succeeded"
        assert (await state_of(client, "late"))["state"] == "dead"

    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    async with web(kafka_settings, applied, db) as (view, client):
        assert (view.statuses, view.ignored) == (12, 1)
        assert [(await state_of(client, f"t{n}"))["result"] for n in range(10)] == list(range(10))
        assert (await state_of(client, "t3"))["state"] == "succeeded"
        assert (await state_of(client, "late"))["state"] == "dead"


async def test_partitions_added_later_are_read(
    kafka_settings: KafkaSettings, applied: Topology, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    with StatusStore(tmp_path / "status.sqlite", applied.status_topic, applied.status_ttl_ms) as store:
        view = StatusView(kafka_settings, applied, store, partition_check_s=0.2)
        run = asyncio.create_task(view.run())
        try:
            await asyncio.wait_for(view.caught_up.wait(), 60)
            async with admin.admin_client(kafka_settings) as client:
                await admin.add_partitions(client, {applied.status_topic: 3})
            await publish(producer, applied, record(status("new", TaskState.SUCCEEDED), 2))
            deadline = time.monotonic() + 30
            while view.lookup("new").state is not TaskState.SUCCEEDED:
                assert time.monotonic() < deadline, "a status on a partition added later was not read"
                await asyncio.sleep(0.02)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


async def test_the_client_over_http(
    kafka_settings: KafkaSettings, applied: Topology, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    done = status("a/b c", TaskState.SUCCEEDED, result=[1, "two"])
    await publish(producer, applied, record(done))
    async with web(kafka_settings, applied, tmp_path / "status.sqlite") as (view, _), serving(create_app(view)) as url:
        assert await fetch_status(url, "a/b c") == done
        async with WebClient(url + "/") as client:
            assert await client.status("missing") == TaskStatus.unknown("missing")
        with pytest.raises(StreamprocError, match=r"answered HTTP 404"):
            await fetch_status(url + "/elsewhere", "a/b c")
    with pytest.raises(StreamprocError, match=r"^streamproc web at http://127\.0\.0\.1:\d+ is unreachable: "):
        await fetch_status(url, "a/b c", timeout=2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_the_web_command_serves_until_sigterm(
    applied: Topology, producer: AIOKafkaProducer, tmp_path: Path, bootstrap: str
) -> None:
    await publish(producer, applied, record(status("a", TaskState.CANCELLED)))
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(applied.model_dump()))
    port = _free_port()
    command = ["-m", "streamproc", "web", "--port", str(port), "--file", str(topics_file)]
    child = await asyncio.create_subprocess_exec(
        sys.executable, *command, "--db", str(tmp_path / "web.sqlite"), stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                assert child.returncode is None, "streamproc web ended early"
                assert time.monotonic() < deadline, "streamproc web did not catch up within 60s"
                try:
                    if (await client.get("/api/health")).json()["caught_up"]:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
            assert (await state_of(client, "a"))["state"] == "cancelled"
        busy = run_cli("web", "--port", str(port), "--file", str(topics_file), "--db", str(tmp_path / "other.sqlite"))
        assert busy.returncode == 1
        assert busy.stderr.startswith("error: ") and busy.stderr.count("\n") == 1, busy.stderr
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0, stderr.decode()


async def test_the_benchmarks_run(kafka_settings: KafkaSettings, applied: Topology, tmp_path: Path) -> None:
    db = tmp_path / "bench.sqlite"
    ingest = await ingest_rate(kafka_settings, applied, statuses=2_000, db=db)
    assert ingest["statuses"] == 2_000 and ingest["statuses_per_s"] > 0
    lookups = await lookup_latency(kafka_settings, applied, statuses=2_000, lookups=100, db=db)
    assert lookups["stored"] == 2_000 and lookups["lookups"] == 100
    assert 0 < lookups["p50_ms"] <= lookups["p99_ms"] <= lookups["max_ms"]
