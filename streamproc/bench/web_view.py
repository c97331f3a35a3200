"""Benchmarks of `streamproc web` (SPEC §10, §12): how fast a fresh status view reads the status topic,
and how long a lookup of an old task id takes over HTTP with many statuses stored.

Status ids are derived from their number (`task_id`), so a lookup can name an old one without
keeping a million ids in memory, and a second benchmark on the same topology reuses the records
the first produced (`produce_statuses` only tops the topic up).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from streamproc.admin import end_offsets
from streamproc.errors import StreamprocError
from streamproc.lifecycle.status import TaskState, TaskStatus
from streamproc.percentile import percentile
from streamproc.provisioning import apply
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.web.app import create_app, listener
from streamproc.web.client import WebClient
from streamproc.web.store import StatusStore
from streamproc.web.view import StatusView

BATCH_BYTES = 512 * 1024  # per produced record batch, under the broker's default 1 MiB message limit
CATCH_UP_TIMEOUT_S = 600.0
SEED = 42


def task_id(n: int) -> str:
    """The id of the `n`th benchmark status: a UUID, as the producer's ids are."""
    return str(uuid.UUID(bytes=hashlib.md5(n.to_bytes(8, "big"), usedforsecurity=False).digest()))


async def produce_statuses(settings: KafkaSettings, topology: Topology, count: int) -> None:
    """Top the status topic up to `count` records: `succeeded` statuses of ids `task_id(n)`, round robin
    over the partitions, in large batches without awaiting each."""
    topic = topology.status_topic
    start = sum((await end_offsets(settings, [topic])).values())
    if start >= count:
        return
    producer = AIOKafkaProducer(**settings.client_kwargs(), max_batch_size=BATCH_BYTES, linger_ms=50)
    await producer.start()
    try:
        now_ms = time.time_ns() // 1_000_000
        statuses = (
            TaskStatus(task_id(n), TaskState.SUCCEEDED, task="noop", attempt=1, at_ms=now_ms, result={"n": n})
            for n in range(start, count)
        )
        await asyncio.gather(*await send_statuses(producer, topic, topology.status.partitions, statuses, first=start))
    finally:
        await producer.stop()


async def send_statuses(
    producer: AIOKafkaProducer, topic: str, partitions: int, statuses: Iterable[TaskStatus], first: int = 0
) -> list[asyncio.Future[Any]]:
    """Queue `statuses` round robin over `partitions` (the n-th, counting from `first`, to n % partitions),
    in full record batches rather than record by record; returns the deliveries to await."""
    batches = [producer.create_batch() for _ in range(partitions)]
    sent: list[asyncio.Future[Any]] = []
    for n, status in enumerate(statuses, start=first):
        key, value, p = status.task_id.encode(), status.to_json(), n % partitions
        if batches[p].append(key=key, value=value, timestamp=None) is None:  # full
            sent.append(await producer.send_batch(batches[p], topic, partition=p))
            batches[p] = producer.create_batch()
            batches[p].append(key=key, value=value, timestamp=None)
    for p, batch in enumerate(batches):
        if batch.record_count():
            sent.append(await producer.send_batch(batch, topic, partition=p))
    return sent


@asynccontextmanager
async def following(
    settings: KafkaSettings, topology: Topology, db: Path, catch_up_s: float = CATCH_UP_TIMEOUT_S
) -> AsyncIterator[StatusView]:
    """A status view over the store at `db`, running until the block ends; entered once it has caught up."""
    with StatusStore(db, topology.status_topic, topology.status_ttl_ms) as store:
        view = StatusView(settings, topology, store)
        run = asyncio.create_task(view.run())
        try:
            caught_up = asyncio.create_task(view.caught_up.wait())
            await asyncio.wait({run, caught_up}, timeout=catch_up_s, return_when=asyncio.FIRST_COMPLETED)
            caught_up.cancel()
            if run.done():
                run.result()  # raises why the view stopped
            if not view.caught_up.is_set():
                raise StreamprocError(f"the status view did not catch up within {catch_up_s:g}s (lag {view.lag})")
            yield view
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free loopback port; yields its base URL."""
    sock = listener("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serve.done():
                serve.result()  # raises why it stopped
                raise StreamprocError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serve
        sock.close()


async def ingest_rate(
    settings: KafkaSettings, topology: Topology, statuses: int = 1_000_000, db: Path | None = None
) -> dict[str, Any]:
    """Statuses/s of a fresh view reading `statuses` records into an empty store (left at `db` when given,
    for `lookup_latency`), from its start until it has caught up."""
    await apply(settings, topology)
    await produce_statuses(settings, topology, statuses)
    with tempfile.TemporaryDirectory() as directory:
        path = db or Path(directory) / "status.sqlite"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        began = time.perf_counter()
        async with following(settings, topology, path) as view:
            seconds = time.perf_counter() - began
            applied = view.statuses
    return {"statuses": applied, "seconds": seconds, "statuses_per_s": applied / seconds}


async def lookup_latency(
    settings: KafkaSettings,
    topology: Topology,
    statuses: int = 1_000_000,
    lookups: int = 2_000,
    db: Path | None = None,
) -> dict[str, Any]:
    """p50/p99 ms of `GET /api/tasks/{id}` over HTTP for random ids from the older half of `statuses` stored
    ones, one request at a time. A `db` that `ingest_rate` filled is resumed, not read again."""
    await apply(settings, topology)
    await produce_statuses(settings, topology, statuses)
    with tempfile.TemporaryDirectory() as directory:
        async with following(settings, topology, db or Path(directory) / "status.sqlite") as view:
            stored = view.store.count()
            async with serving(create_app(view)) as url, WebClient(url) as client:
                await client.status("warm-up")  # the connection, not a stored id
                rng = random.Random(SEED)
                elapsed_ms = []
                for _ in range(lookups):
                    wanted = task_id(rng.randrange(max(1, statuses // 2)))
                    began = time.perf_counter()
                    found = await client.status(wanted)
                    elapsed_ms.append((time.perf_counter() - began) * 1000)
                    if found.state is not TaskState.SUCCEEDED:
                        raise StreamprocError(f"status {wanted} is {found.state}, expected succeeded")
    return {
        "stored": stored,
        "lookups": lookups,
        "p50_ms": percentile(elapsed_ms, 50),
        "p99_ms": percentile(elapsed_ms, 99),
        "max_ms": max(elapsed_ms),
    }
