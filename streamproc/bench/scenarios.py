"""The scenarios of `streamproc bench`; each prepares its backlog once and returns its figures.

Every consumer runs in a runner process of its own (`runner.py`) with a consumer group of its
own, so the systems compared read the very same records.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from streamproc.bench import delayed_load, monitor_load, peers
from streamproc.bench.harness import Runner, fill, scenario_topics, steady_rate, wait_until
from streamproc.bench.runner import SLEEP_S, Kind, Spec
from streamproc.errors import StreamprocError
from streamproc.event_loop import EventLoop
from streamproc.percentile import percentile
from streamproc.producer import Producer
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology, parse_duration_ms

PARTITIONS = 6
IO_CONCURRENCY = 256
Figures = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario gets: `full` for figures, `quick` for a smoke run."""

    noop_backlog: int
    window_s: float
    io_backlog: int
    low_backlog: int  # saturating the worker while pings arrive
    pings: int
    results: int  # tasks submitted one by one, each awaited to its result
    statuses: int  # in the status topic behind `streamproc web`
    submit_rate: float  # pings and failing tasks submitted per second
    retries: int
    tier: str
    rss_backlog: int
    rss_drain: int  # records the worker finishes before its peak RSS is read
    monitor_s: float  # the live monitor's load run: how long
    monitor_rate: int  # status records/s written meanwhile (SPEC §10: 50,000)
    delayed: int  # delayed tasks (SPEC §13: 100,000)…
    delayed_spread_s: float  # …with etas spread over this long
    rounds: int  # alternating runs of the no-op baselines and workers, of which each reports its median


FULL = Sizes(
    noop_backlog=1_000_000,
    window_s=8,
    io_backlog=150_000,
    low_backlog=60_000,
    pings=1000,
    results=500,
    statuses=1_000_000,
    submit_rate=100,
    retries=500,
    tier="1s",
    rss_backlog=1_000_000,
    rss_drain=300_000,
    monitor_s=60,
    monitor_rate=50_000,
    delayed=100_000,
    delayed_spread_s=600,
    rounds=3,
)
QUICK = Sizes(
    noop_backlog=60_000,
    window_s=0.5,
    io_backlog=5_000,
    low_backlog=5_000,
    pings=20,
    results=20,
    statuses=2_000,
    submit_rate=100,
    retries=20,
    tier="1s",
    rss_backlog=5_000,
    rss_drain=2_000,
    monitor_s=5,
    monitor_rate=5_000,
    delayed=2_000,
    delayed_spread_s=10,
    rounds=1,
)


@dataclass(frozen=True)
class Bench:
    settings: KafkaSettings
    sizes: Sizes

    def spec(
        self,
        kind: Kind,
        topology: Topology,
        group: str | None = None,
        concurrency: int = 64,
        statuses: bool = True,
        batch: bool = False,
        loop: EventLoop = EventLoop.ASYNCIO,
    ) -> Spec:
        return Spec(
            kind=kind,
            bootstrap_servers=self.settings.bootstrap_servers,
            topology=topology,
            group=group or f"{topology.prefix}-{kind}-{uuid.uuid4().hex[:6]}",
            topic=topology.intake_topic("normal"),
            concurrency=concurrency,
            statuses=statuses,
            batch=batch,
            loop=loop,
        )

    def topics(self, tiers: Sequence[str] = ("5s",)) -> AbstractAsyncContextManager[Topology]:
        return scenario_topics(self.settings, PARTITIONS, tiers)

    def rate(self, *specs: Spec, backlog: int) -> Figures:
        """Tasks/s of runners started together (one group if the specs share it)."""
        runners = [Runner.start(spec) for spec in specs]
        try:
            window = steady_rate(runners, backlog, self.sizes.window_s)
            return {"tasks_per_s": window.tasks_per_s, "window_s": window.seconds, "full_window": window.full}
        finally:
            for runner in runners:
                runner.stop()

    def median_rates(self, *specs: Callable[[], Spec], backlog: int) -> list[Figures]:
        """`rate` of each of `specs` in `sizes.rounds` alternating rounds, each round under a group of
        its own: each one's median round, with every round's rate (`rounds`). Runs of the same code
        differ by up to 15% here, so one run cannot judge a ratio."""
        runs: list[list[Figures]] = [[] for _ in specs]
        for _ in range(self.sizes.rounds):
            for spec, rounds in zip(specs, runs, strict=True):
                rounds.append(self.rate(spec(), backlog=backlog))
        return [median_round(rounds) for rounds in runs]


def median_round(rounds: Sequence[Figures]) -> Figures:
    """The round with the median `tasks_per_s` (the upper one of an even count), and every round's rate."""
    ordered = sorted(rounds, key=lambda figures: figures["tasks_per_s"])
    return ordered[len(ordered) // 2] | {"rounds": [figures["tasks_per_s"] for figures in rounds]}


async def noop_throughput(bench: Bench) -> dict[str, Figures]:
    """Scenarios 1, 2, 3 and 6 on one backlog of no-op tasks, each run with a group of its own; and
    streamproc without statuses (SPEC §12: what writing each task's status and result costs), with
    `noop` as a batch handler of 500 (SPEC §15); the dispatch floor; and the peers (`peers.py`), each
    `{"could_not_run": reason}` if it cannot run here (Celery reads a copy of the backlog as Celery
    messages, on a topic of its own). The two baselines and the three one-process workers the ratios
    compare run in alternating rounds (`Bench.median_rates`)."""
    backlog = bench.sizes.noop_backlog
    async with bench.topics() as topology:
        await fill(bench.settings, topology, "noop", backlog)
        shared = bench.spec("streamproc", topology)
        compared = {  # the baselines and workers of the ratios, in rounds
            "aiokafka": partial(bench.spec, "aiokafka", topology),
            "floor": partial(bench.spec, "floor", topology),
            "streamproc": partial(bench.spec, "streamproc", topology),
            "streamproc_no_status": partial(bench.spec, "streamproc", topology, statuses=False),
            "streamproc_batch": partial(bench.spec, "streamproc", topology, batch=True),
        }
        results = dict(zip(compared, bench.median_rates(*compared.values(), backlog=backlog), strict=True))
        results |= {
            "faststream": bench.rate(bench.spec("faststream", topology), backlog=backlog),
            "streamproc_two_processes": bench.rate(shared, shared, backlog=backlog),
            "streamproc_uvloop": _on_uvloop(bench, topology, backlog),
        }
        for peer in peers.PEERS:
            results[peer.kind] = await peers.rate(bench, peer, topology, backlog)
        return results


def _on_uvloop(bench: Bench, topology: Topology, backlog: int) -> Figures:
    """The no-op worker on uvloop (`--loop uvloop`), or why it could not run."""
    try:
        EventLoop.UVLOOP.factory()
    except StreamprocError as exc:
        return {"could_not_run": str(exc)}
    return bench.rate(bench.spec("streamproc", topology, loop=EventLoop.UVLOOP), backlog=backlog)


async def io_throughput(bench: Bench) -> Figures:
    """Scenario 4: a 20 ms await per task at concurrency 256."""
    async with bench.topics() as topology:
        await fill(bench.settings, topology, "io", bench.sizes.io_backlog)
        spec = bench.spec("streamproc", topology, concurrency=IO_CONCURRENCY)
        figures = bench.rate(spec, backlog=bench.sizes.io_backlog)
    return figures | {"concurrency": IO_CONCURRENCY, "ideal_per_s": IO_CONCURRENCY / SLEEP_S}


async def paced(count: int, per_s: float) -> AsyncIterator[int]:
    """0 to count - 1, each no earlier than its turn at `per_s` a second: a steady stream, not a burst."""
    begin = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, begin + i / per_s - time.monotonic()))
        yield i


async def _ping_waits(bench: Bench, low_backlog: int) -> list[float]:
    """Waits (ms) of high-priority no-op tasks submitted at a steady rate, with a low backlog or none."""
    async with bench.topics() as topology:
        await fill(bench.settings, topology, "io", low_backlog, priority="low")
        runner = Runner.start(bench.spec("streamproc", topology))
        try:
            async with Producer(bench.settings, topology) as producer:
                if low_backlog:
                    started = time.monotonic()
                    await asyncio.to_thread(
                        wait_until, lambda: runner.finishing_since(started), 120, "the worker busy", [runner]
                    )
                else:  # one task through first, so the pings do not wait for the group join
                    await producer.submit("noop", {}, priority="normal")
                    await asyncio.to_thread(wait_until, lambda: runner.done >= 1, 120, "the first task", [runner])
                async for _ in paced(bench.sizes.pings, bench.sizes.submit_rate):
                    await producer.submit("ping", {}, priority="high")
            await asyncio.to_thread(
                wait_until, lambda: runner.sampled >= bench.sizes.pings, 120, "every ping started", [runner]
            )
        finally:
            result = runner.stop()
    waits: list[float] = result["ping_waits_ms"]
    return waits


async def priority_wait(bench: Bench) -> Figures:
    """Scenario 5: high-priority wait alone, then behind a backlog of low tasks that saturates the worker."""
    idle = await _ping_waits(bench, 0)
    busy = await _ping_waits(bench, bench.sizes.low_backlog)
    return {
        "pings": bench.sizes.pings,
        "submit_rate": bench.sizes.submit_rate,
        "idle_p50_ms": percentile(idle, 50),
        "idle_p99_ms": percentile(idle, 99),
        "saturated_p50_ms": percentile(busy, 50),
        "saturated_p99_ms": percentile(busy, 99),
    }


async def retry_delay(bench: Bench) -> Figures:
    """Scenario 7: how late a retry starts after its `retry-at`, through a short tier."""
    tier, count = bench.sizes.tier, bench.sizes.retries
    async with bench.topics(tiers=[tier]) as topology:
        runner = Runner.start(bench.spec("streamproc", topology))
        try:
            async with Producer(bench.settings, topology) as producer:
                async for i in paced(count, bench.sizes.submit_rate):
                    await producer.submit("fail_once", {"n": i})
            await asyncio.to_thread(wait_until, lambda: runner.sampled >= count, 120, "every retry started", [runner])
        finally:
            result = runner.stop()
    errors: list[float] = result["retry_errors_ms"]
    return {
        "retries": len(errors),
        "tier_ms": parse_duration_ms(tier),
        "error_p50_ms": percentile(errors, 50),
        "error_p99_ms": percentile(errors, 99),
    }


async def memory(bench: Bench) -> Figures:
    """Scenario 8: the worker's peak RSS while it works through a large backlog."""
    async with bench.topics() as topology:
        await fill(bench.settings, topology, "noop", bench.sizes.rss_backlog)
        runner = Runner.start(bench.spec("streamproc", topology))
        try:
            await asyncio.to_thread(
                wait_until, lambda: runner.done >= bench.sizes.rss_drain, 300, "the worker to drain", [runner]
            )
        finally:
            result = runner.stop()
    return {
        "backlog": bench.sizes.rss_backlog,
        "drained": result["done"],
        "peak_rss_mb": result["rss_kib"] * 1024 / 1e6,
    }


async def result_latency(bench: Bench) -> Figures:
    """SPEC §12: submit → `await handle.result()` of a no-op task on an idle worker, one at a time."""
    async with bench.topics() as topology:
        runner = Runner.start(bench.spec("streamproc", topology))
        latencies: list[float] = []
        try:
            async with Producer(bench.settings, topology) as producer:
                first = await producer.submit("noop", {})  # the group's join is not a task's latency
                await first.result(timeout=120)
                for _ in range(bench.sizes.results):
                    begin = time.perf_counter()
                    handle = await producer.submit("noop", {})
                    await handle.result(timeout=60)
                    latencies.append((time.perf_counter() - begin) * 1000)
        finally:
            runner.stop()
    return {"results": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


async def status_view(bench: Bench) -> Figures:
    """SPEC §12: how fast a fresh `streamproc web` view reads the status topic, and the lookup of an
    old id over HTTP with that many statuses stored (the store of the first read, resumed)."""
    from streamproc.bench import web_view  # fastapi and uvicorn: only this scenario needs them

    async with bench.topics() as topology:
        with tempfile.TemporaryDirectory() as directory:
            db = Path(directory) / "status.sqlite"
            ingest = await web_view.ingest_rate(bench.settings, topology, statuses=bench.sizes.statuses, db=db)
            lookup = await web_view.lookup_latency(bench.settings, topology, statuses=bench.sizes.statuses, db=db)
    return {"ingest": ingest, "lookup": lookup}


async def live_monitor(bench: Bench) -> Figures:
    """SPEC §14: `streamproc web`'s update lag and RSS with 20 reporting workers and a stream of statuses."""
    async with bench.topics() as topology:
        return await monitor_load.run(bench.settings, topology, bench.sizes.monitor_s, bench.sizes.monitor_rate)


async def delayed_tasks(bench: Bench) -> Figures:
    """SPEC §13: how late delayed tasks run, and the worker's RSS, with many scheduled at once."""
    async with bench.topics() as topology:
        return await delayed_load.run(bench.settings, topology, bench.sizes.delayed, bench.sizes.delayed_spread_s)
