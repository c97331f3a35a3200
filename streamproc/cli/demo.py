"""`streamproc demo`: the main job, end to end, on a broker that is there.

Starts (or finds) a broker, applies the topics under a prefix of the demo's own (`demo`, so
it never leaves tasks on the default `tasks.*` topics), runs worker consumers of the example app in
`handlers/`, submits a few thousand tasks across the priorities, shows live progress, and ends
with a summary: attempts per priority and disposition (succeeded, retried through a tier,
deferred by an open circuit, dead-lettered), throughput, wait p50/p99, and where failures went.
On exit, also on failure or Ctrl-C, it deletes its topics unless `--keep`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamproc import provisioning
from streamproc.admin import broker_answers
from streamproc.cli.options import MetricsPort, TopicsFile
from streamproc.envelope import Envelope
from streamproc.errors import StreamprocError
from streamproc.execution import Outcome
from streamproc.health import observed
from streamproc.loading import load_app
from streamproc.localbroker import LocalBroker
from streamproc.logs import configure_logging
from streamproc.metrics import Metrics
from streamproc.percentile import percentile
from streamproc.producer import Producer
from streamproc.routing import Disposition, Routed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology, load_topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig

console = Console()
STALL_S = 60.0
DEMO_PREFIX = "demo"


def demo_topology(base: Topology, prefix: str) -> Topology:
    """`base` (the topics file or the defaults) under the demo's own prefix and without routes:
    the demo submits to its own intake topics only, and must not consume another application's events."""
    try:
        return Topology.model_validate({**base.model_dump(), "prefix": prefix, "routes": []})
    except ValidationError as exc:
        raise StreamprocError(f"--prefix {prefix!r}: not a topic prefix ({exc.errors()[0]['msg']})") from None


def demo_broker() -> KafkaSettings:
    """The broker `STREAMPROC_BOOTSTRAP_SERVERS` names if it answers, else the local broker, started."""
    named = os.environ.get("STREAMPROC_BOOTSTRAP_SERVERS")
    if named and asyncio.run(broker_answers(KafkaSettings.from_env())):
        console.print(f"using the broker at {named}")
        return KafkaSettings.from_env()
    broker = LocalBroker.from_env()
    with console.status("starting the local Kafka broker (the first start downloads its jars)…"):
        started = broker.start()
    console.print(f"local broker on {broker.bootstrap_servers} (pid {started.pid}); `streamproc broker stop` ends it")
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers)


class DemoStats:
    """Task hooks that count this run's tasks (enqueued since it began; a backlog left by an
    earlier run is processed too, but not counted) by priority and disposition, and keep the
    waits of first attempts."""

    def __init__(self) -> None:
        self.since_ms = time.time() * 1000
        self.waits_ms: dict[str, list[float]] = defaultdict(list)
        self.dispositions: Counter[tuple[str, Disposition]] = Counter()
        self.failures: Counter[str] = Counter()
        self.first_start: float | None = None
        self.last_finish = 0.0

    @property
    def done(self) -> int:
        """Tasks that ended: succeeded or dead-lettered."""
        return sum(n for (_, d), n in self.dispositions.items() if d in _ENDED)

    def task_started(self, envelope: Envelope) -> None:
        if envelope.enqueued_at_ms >= self.since_ms and envelope.attempt == 1:
            self.first_start = self.first_start or time.monotonic()
            self.waits_ms[envelope.priority].append(time.time() * 1000 - envelope.enqueued_at_ms)

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        if envelope.enqueued_at_ms >= self.since_ms:
            self.dispositions[(envelope.priority, routed.disposition)] += 1
            if routed.disposition is not Disposition.SUCCEEDED:
                where = f"DLQ {routed.reason}" if routed.reason else f"tier {routed.tier}"
                self.failures[f"{envelope.task}: {outcome.error_type} → {where}"] += 1
            self.last_finish = time.monotonic()

    def table(self, priorities: list[str], total: int, final: bool = False) -> Table:
        elapsed = (self.last_finish if final else time.monotonic()) - (self.first_start or time.monotonic())
        rate = self.done / elapsed if elapsed > 0 else 0.0
        title = f"{self.done}/{total} tasks done, {rate:,.0f} tasks/s"
        columns = [d.value.replace("_", " ") for d in Disposition]
        table = Table("priority", *columns, "wait p50 ms", "wait p99 ms", title=title)
        for priority in priorities:
            waits = sorted(self.waits_ms[priority])
            table.add_row(
                priority,
                *(str(self.dispositions[(priority, d)]) for d in Disposition),
                _percentile(waits, 50),
                _percentile(waits, 99),
            )
        return table


_ENDED = (Disposition.SUCCEEDED, Disposition.DEAD_LETTERED)


def _percentile(values: list[float], pct: int) -> str:
    return f"{percentile(values, pct):.0f}" if values else "-"


def _workload(rng: random.Random, n: int, priorities: list[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """A task-queue mix, grouped by (priority, task): mostly e-mails and documents, some reports,
    flaky inventory syncs, orders and no-ops; each priority gets half as many tasks as the one below it."""
    orders = itertools.count()
    makers: dict[str, Callable[[int], dict[str, Any]]] = {
        "send_email": lambda i: {"to": f"user{i}@example.com", "subject": f"hello #{i}"},
        "process_document": lambda i: {"document_id": f"doc-{i}", "pages": rng.randint(1, 5)},
        "generate_report": lambda i: {"report_id": f"r-{i}", "kind": rng.choice(["daily", "weekly"]), "rows": 50},
        "sync_inventory": lambda i: {"sku": f"sku-{i}", "quantity": rng.randint(0, 500)},
        # One order in twenty has no amount: a PermanentError sends it to the DLQ at once.
        "process_order": lambda i: {"order_id": f"o-{i}", "amount": 0.0 if next(orders) % 20 == 0 else 19.9},
        "noop": lambda i: {"n": i},
    }
    priority_weights = [2**rank for rank in range(len(priorities))]
    work: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for i in range(n):
        task = rng.choices(list(makers), weights=[4, 3, 1, 2, 1, 2])[0]
        priority = rng.choices(priorities, weights=priority_weights)[0]
        work[(priority, task)].append(makers[task](i))
    return work


async def _run_demo(
    settings: KafkaSettings, topology: Topology, tasks: int, workers: int, concurrency: int, metrics_port: int
) -> None:
    app = load_app("handlers.app:app")
    await provisioning.apply(settings, topology)
    stats = DemoStats()
    config = WorkerConfig(group=f"streamproc-{topology.prefix}", concurrency=concurrency)
    metrics = Metrics(app.tasks, config.group)
    consumers = [Worker(app, settings, topology, config, hooks=[stats, metrics]) for _ in range(workers)]
    async with observed(consumers, metrics, metrics_port, host="127.0.0.1") as port:
        console.print(f"metrics on http://127.0.0.1:{port}/metrics (also /healthz, /readyz) while the demo runs")
        await _drive(consumers, stats, settings, topology, tasks)


async def _drive(
    consumers: list[Worker], stats: DemoStats, settings: KafkaSettings, topology: Topology, tasks: int
) -> None:
    """Run the workers, submit the workload, show progress until every task is done, stop the workers."""
    runs = [asyncio.create_task(w.run()) for w in consumers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.joined.wait() for w in consumers)), 60)
        work = _workload(random.Random(42), tasks, topology.priorities)
        with Live(stats.table(topology.priorities, tasks), console=console, refresh_per_second=4) as live:
            async with Producer(settings, topology) as producer:
                # Lowest priority first: the higher ones, submitted behind it, still start first.
                lowest_first = sorted(work.items(), key=lambda item: -topology.priorities.index(item[0][0]))
                for (priority, task), payloads in lowest_first:
                    await producer.submit_many(task, payloads, priority=priority)
                    live.update(stats.table(topology.priorities, tasks))
            progress_at, done = time.monotonic(), stats.done
            while stats.done < tasks:
                live.update(stats.table(topology.priorities, tasks))
                await asyncio.sleep(0.25)
                if stats.done > done:
                    progress_at, done = time.monotonic(), stats.done
                elif time.monotonic() - progress_at > STALL_S:
                    raise StreamprocError(f"demo stalled: {done} of {tasks} tasks finished, none for {STALL_S:.0f}s")
            live.update(stats.table(topology.priorities, tasks, final=True))
    finally:
        for w in consumers:
            w.stop()
        await asyncio.gather(*runs)
    if stats.failures:
        console.print("\nfailed attempts and where they went:")
        for what, count in stats.failures.most_common():
            console.print(f"  {count} x {what}")
        console.print(
            f"dead letters went to {topology.dlq_topic} (run with --keep to inspect them with `streamproc dlq`)"
        )


def demo(
    tasks: Annotated[int, typer.Option("--tasks", min=1, help="Tasks to submit.")] = 3000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker consumers in the group.")] = 2,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Tasks at once per worker.")] = 64,
    metrics_port: MetricsPort = 0,
    file: TopicsFile = None,
    prefix: Annotated[
        str,
        typer.Option("--prefix", help="Prefix of the demo's own topics (the topics file's prefix is not used)."),
    ] = DEMO_PREFIX,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's topics and their records on exit.")] = False,
) -> None:
    """Run the example app on a local (or named) broker and show throughput and waits."""
    topology = demo_topology(load_topology(file), prefix)
    log_file = Path(".streamproc-demo.log")
    with log_file.open("w") as log:
        configure_logging(stream=log)
        settings = demo_broker()
        console.print(f"the demo's topics: {topology.prefix}.* ({'kept' if keep else 'deleted'} on exit)")
        try:
            asyncio.run(_run_demo(settings, topology, tasks, workers, concurrency, metrics_port))
        finally:
            if not keep:
                _delete_topics(settings, topology)
    console.print(f"\nworker logs: {log_file}")


def _delete_topics(settings: KafkaSettings, topology: Topology) -> None:
    """Delete the demo's topics; a failure here is a warning, never hiding the run's own error."""
    try:
        deleted = asyncio.run(provisioning.delete(settings, topology))
    except (KafkaError, OSError, TimeoutError) as exc:
        console.print(f"[yellow]warning:[/yellow] could not delete the demo's topics {topology.prefix}.*: {exc}")
        return
    if deleted:
        console.print(f"deleted the demo's topics ({len(deleted)} x {topology.prefix}.*)", highlight=False)
