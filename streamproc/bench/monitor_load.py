"""The load run of the live monitor (SPEC §10, §14): a `streamproc web` subprocess on topics of its own,
20 simulated workers reporting every second and a stream of status records, for `seconds`.

The update lag of a report is the time from its write (its `at`, stamped just before it is sent)
until an SSE client on `/api/stream` receives an overview whose row of that worker shows it or a
later report (an overview shows each worker's latest report only). Reporters and the client run
in this process, so both ends read one clock; the status producer is a process of its own
(`python -m streamproc.bench.monitor_load '<JSON>'`) so its CPU does not delay the client. RSS is
read from `/proc/<pid>/status` of the web process every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import Process
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiokafka import AIOKafkaProducer

from streamproc import __version__
from streamproc.bench.web_view import send_statuses
from streamproc.errors import StreamprocError
from streamproc.lifecycle.status import TaskState, TaskStatus
from streamproc.metrics import WAIT_BUCKETS
from streamproc.monitor.report import WorkerReport
from streamproc.percentile import percentile
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

REPORTERS = 20
INTERVAL_S = 1.0
STEP_S = 0.05  # the status producer's pacing step
BATCH_BYTES = 512 * 1024
READY_TIMEOUT_S = 60.0
SHOWN_WITHIN_S = 10.0  # after the load, how long the last reports get to show up
Figures = dict[str, Any]


def _now_ms() -> float:
    return time.time() * 1000


class Reporters:
    """`count` simulated worker processes of `group`, each writing a report every `INTERVAL_S`."""

    def __init__(self, topology: Topology, group: str, count: int = REPORTERS) -> None:
        self._topology, self._group, self._started_at = topology, group, int(_now_ms())
        self.ids = [f"bench-host-{i:02d}:{10_000 + i}:{self._started_at}" for i in range(count)]
        topics = topology.consumed_topics()
        self._partitions: list[dict[str, list[int]]] = [{} for _ in range(count)]
        for n, (topic, p) in enumerate((t, p) for t in topics for p in range(topology.intake.partitions)):
            self._partitions[n % count].setdefault(topic, []).append(p)  # a consumer group's spread
        self._waits = [{t: [0] * (len(WAIT_BUCKETS) + 1) for t in topics} for _ in range(count)]
        self._finished = [0] * count
        self.written: dict[str, deque[int]] = {worker: deque() for worker in self.ids}  # `at`s not shown yet
        self.reports = 0

    def report(self, i: int, rng: random.Random) -> WorkerReport:
        started = rng.randrange(1_500, 3_500)  # about 50,000 tasks/s over 20 workers
        self._finished[i] += started
        for counts in self._waits[i].values():
            for _ in range(8):  # mostly short waits, now and then a long one
                counts[min(int(rng.expovariate(0.8)), len(counts) - 1)] += started // (8 * len(self._waits[i]))
        return WorkerReport(
            worker=self.ids[i],
            host=f"bench-host-{i:02d}",
            pid=10_000 + i,
            version=__version__,
            group=self._group,
            started_at=self._started_at,
            at=int(_now_ms()),
            interval_s=INTERVAL_S,
            stopped=False,
            concurrency=64,
            partitions=self._partitions[i],
            in_flight=rng.randrange(0, 65),
            waiting=rng.randrange(0, 257),
            delayed=rng.randrange(0, 20),
            finished=self._finished[i],
            failed=self._finished[i] // 1000,
            circuits={"send_email": rng.random() < 0.05},
            waits={topic: list(counts) for topic, counts in self._waits[i].items()},
        )

    async def run(self, producer: AIOKafkaProducer, seconds: float) -> None:
        await asyncio.gather(*(self._one(producer, i, seconds) for i in range(len(self.ids))))

    async def _one(self, producer: AIOKafkaProducer, i: int, seconds: float) -> None:
        rng = random.Random(i)
        begin = time.monotonic() + rng.random() * INTERVAL_S  # spread over the second, as real workers are
        for n in range(int(seconds / INTERVAL_S)):
            await asyncio.sleep(max(0.0, begin + n * INTERVAL_S - time.monotonic()))
            report = self.report(i, rng)
            self.written[report.worker].append(report.at)
            self.reports += 1
            await producer.send(self._topology.monitor_topic, report.to_json(), key=report.worker.encode())


class Watcher:
    """An SSE client of `/api/stream`: the lag of each simulated report until an overview shows it."""

    def __init__(self, reporters: Reporters) -> None:
        self._written = reporters.written
        self.lags_ms: list[float] = []
        self.superseded = 0  # reports first shown through a later report of the same worker
        self.overviews = 0
        self._seen = asyncio.Event()

    def seen(self, overview: dict[str, Any], received_ms: float) -> None:
        self.overviews += 1
        self._seen.set()
        for row in overview["workers"]:
            pending = self._written.get(row["report"]["worker"])
            shown_at = row["report"]["at"]
            while pending and pending[0] <= shown_at:
                at = pending.popleft()
                self.lags_ms.append(received_ms - at)
                self.superseded += at < shown_at

    @property
    def unseen(self) -> int:
        return sum(len(pending) for pending in self._written.values())

    async def all_shown(self) -> None:
        while self.unseen:
            self._seen.clear()
            await self._seen.wait()

    async def run(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/api/stream", timeout=None) as response:
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "overview":
                    self.seen(json.loads(line[6:]), _now_ms())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def _ready(client: httpx.AsyncClient, web: Process, log: Path) -> None:
    """Until the status view has caught up and the overview has read the group's offsets."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if web.returncode is not None:
            raise StreamprocError(f"streamproc web exited with {web.returncode}: {_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            health, overview = (await client.get("/api/health")).json(), (await client.get("/api/overview")).json()
            if health["caught_up"] and overview["broker_error"] is None:
                return
        await asyncio.sleep(0.1)
    raise StreamprocError(f"streamproc web was not ready within {READY_TIMEOUT_S:g}s: {_tail(log)}")


@contextlib.asynccontextmanager
async def _web(
    settings: KafkaSettings, topology: Topology, group: str
) -> AsyncIterator[tuple[Process, httpx.AsyncClient]]:
    """`streamproc web` on `topology` in a process of its own, ready; a client of it."""
    with tempfile.TemporaryDirectory() as directory:
        topics_file, log = Path(directory) / "topics.yaml", Path(directory) / "web.log"
        topics_file.write_text(yaml.safe_dump(topology.model_dump()))
        port = _free_port()
        with log.open("w") as out:
            web = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "streamproc", "web", "--port", str(port), "--group", group),
                *("--file", str(topics_file), "--db", str(Path(directory) / "web.sqlite")),
                env=os.environ | {"STREAMPROC_BOOTSTRAP_SERVERS": settings.bootstrap_servers},
                stdout=out,
                stderr=out,
            )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await _ready(client, web, log)
                yield web, client
        finally:
            if web.returncode is None:
                web.terminate()
            await web.wait()


async def run(settings: KafkaSettings, topology: Topology, seconds: float, statuses_per_s: int) -> Figures:
    """The load run on `topology` (applied, and its own): figures of lag, status rate and web RSS."""
    group = f"{topology.prefix}-workers"
    reporters = Reporters(topology, group)
    watcher, samples = Watcher(reporters), []
    order: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "topic": topology.status_topic}
    order |= {"partitions": topology.status.partitions, "rate": statuses_per_s, "seconds": seconds}
    producer = AIOKafkaProducer(**settings.client_kwargs(), acks=1, linger_ms=0)
    async with _web(settings, topology, group) as (web, client):
        await producer.start()
        await asyncio.sleep(2)  # settled: the RSS before is not the start-up's
        rss_before = rss_kib(web.pid)

        async def sample() -> None:
            while True:
                samples.append(rss_kib(web.pid))
                await asyncio.sleep(1)

        watching, sampling = asyncio.create_task(watcher.run(client)), asyncio.create_task(sample())
        statuses = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, json.dumps(order), stdout=asyncio.subprocess.PIPE
        )
        try:
            await reporters.run(producer, seconds)
            out, _ = await statuses.communicate()
            if statuses.returncode != 0:
                raise StreamprocError(f"the status producer exited with {statuses.returncode}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.all_shown(), SHOWN_WITHIN_S)
            if watching.done():
                watching.result()  # raises why the stream ended
            rss_end, hwm = rss_kib(web.pid), rss_kib(web.pid, "VmHWM")
            health = (await client.get("/api/health")).json()
        finally:
            if statuses.returncode is None:
                statuses.kill()
                await statuses.wait()
            for task in (watching, sampling):
                task.cancel()
            await asyncio.gather(watching, sampling, return_exceptions=True)
            await producer.stop()
    sent, lags, mb = json.loads(out), watcher.lags_ms, 1024 / 1e6
    return {
        "seconds": seconds,
        "reporters": REPORTERS,
        "reports": reporters.reports,
        "reports_shown": len(lags),
        "reports_unseen": watcher.unseen,
        "shown_through_a_later_report": watcher.superseded,
        "overviews": watcher.overviews,
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": max(lags, default=float("nan")),
        "target_statuses_per_s": statuses_per_s,
        "statuses_sent": sent["sent"],
        "statuses_per_s": sent["sent"] / sent["seconds"],
        "view_statuses": health["statuses"],
        "view_lag_at_end": health["lag"],
        "rss_before_mb": rss_before * mb,
        "rss_end_mb": rss_end * mb,
        "rss_peak_sampled_mb": max(samples, default=rss_end) * mb,
        "rss_hwm_mb": hwm * mb,
        "rss_samples_mb": [round(kib * mb, 1) for kib in samples],
    }


async def produce(order: dict[str, Any]) -> dict[str, float]:
    """`rate` succeeded statuses a second of distinct task ids to `topic` for `seconds`, round robin over
    `partitions`, paced in `STEP_S` steps; as fast as it can if it cannot keep up. Returns how many were
    sent (and acknowledged) over how long: `seconds`, or until the last was made if that was later."""
    settings = KafkaSettings(bootstrap_servers=order["bootstrap_servers"])
    topic, partitions, rate, seconds = order["topic"], order["partitions"], order["rate"], order["seconds"]
    producer = AIOKafkaProducer(**settings.client_kwargs(), acks=1, max_batch_size=BATCH_BYTES)
    await producer.start()
    try:
        run_id, made, made_by, sent = str(uuid.uuid4())[:24], 0, 0.0, []
        begin = time.monotonic()
        while (elapsed := time.monotonic() - begin) < seconds:
            # Behind its pace, it makes at most a few steps' worth at a time, so it still stops on time.
            due = min(int(rate * (elapsed + STEP_S)), int(rate * seconds), made + int(rate * STEP_S * 4))
            at_ms = int(_now_ms())
            step = (
                TaskStatus(f"{run_id}{n:012x}", TaskState.SUCCEEDED, "noop", 1, at_ms, {"n": n})
                for n in range(made, due)
            )
            sent += await send_statuses(producer, topic, partitions, step, first=made)
            if due > made:
                made, made_by = due, time.monotonic() - begin
            await asyncio.sleep(max(0.0, begin + elapsed + STEP_S - time.monotonic()))
        await asyncio.gather(*sent)  # every record acknowledged
        return {"sent": made, "seconds": max(seconds, made_by)}  # on pace, the last ones are made before the end
    finally:
        await producer.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(produce(json.loads(sys.argv[1])))), flush=True)
