"""What recording the SPEC §7 metrics costs: no-op tasks/s of one in-process worker, with and
without the `Metrics` hooks, on the same broker and backlog, in one run.

    .venv/bin/python -m benchmarks.metrics_overhead [--tasks 50000] [--rounds 3]

Each round drains the same backlog twice, once per variant, each time with a new consumer group,
alternating which goes first; the figure is the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from streamproc import App, Producer, provisioning
from streamproc.envelope import Envelope
from streamproc.execution import Outcome
from streamproc.hooks import TaskHooks
from streamproc.localbroker import LocalBroker
from streamproc.logs import configure_logging
from streamproc.metrics import Metrics
from streamproc.routing import Routed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig

app = App()


@app.task("noop")
async def noop(payload: dict[str, object]) -> None:
    """Does nothing: the framework is what is measured."""


class Countdown:
    """Sets `done` once `total` tasks finished."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.done = asyncio.Event()

    def task_started(self, envelope: Envelope) -> None:
        pass

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        self.left -= 1
        if not self.left:
            self.done.set()


async def drain(settings: KafkaSettings, topology: Topology, tasks: int, with_metrics: bool) -> float:
    """Tasks/s of one worker draining the backlog with a new group."""
    group = f"{topology.prefix}-{uuid.uuid4().hex[:6]}"
    countdown = Countdown(tasks)
    hooks: list[TaskHooks] = [countdown]
    if with_metrics:
        hooks.append(Metrics(app.tasks, group))
    worker = Worker(app, settings, topology, WorkerConfig(group=group), hooks=hooks)
    run = asyncio.create_task(worker.run())
    await worker.joined.wait()
    begin = time.perf_counter()
    await countdown.done.wait()
    elapsed = time.perf_counter() - begin
    worker.stop()
    await run
    return tasks / elapsed


async def main(settings: KafkaSettings, tasks: int, rounds: int) -> None:
    topology = Topology.model_validate({"prefix": f"bench{uuid.uuid4().hex[:6]}", "intake": {"partitions": 6}})
    await provisioning.apply(settings, topology)
    async with Producer(settings, topology) as producer:
        for start in range(0, tasks, 10_000):
            await producer.submit_many("noop", [{}] * min(10_000, tasks - start))
    rates: dict[bool, list[float]] = {False: [], True: []}
    for i in range(rounds):
        for with_metrics in (False, True) if i % 2 == 0 else (True, False):
            rates[with_metrics].append(await drain(settings, topology, tasks, with_metrics))
            print(f"round {i + 1}, metrics {'on ' if with_metrics else 'off'}: {rates[with_metrics][-1]:,.0f} tasks/s")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median: off {off:,.0f} tasks/s, on {on:,.0f} tasks/s, on/off = {on / off:.3f} ({(1 - on / off):+.1%} cost)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    configure_logging(level="warning")
    broker = LocalBroker.from_env()
    broker.start()
    asyncio.run(main(KafkaSettings(bootstrap_servers=broker.bootstrap_servers), options.tasks, options.rounds))
