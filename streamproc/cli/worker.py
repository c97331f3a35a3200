"""`streamproc worker`: one worker process (one consumer in the group) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import structlog
import typer

from streamproc import offsetmap, termination
from streamproc.app import App
from streamproc.cli.options import BootstrapServers, Group, MetricsPort, TopicsFile
from streamproc.event_loop import EventLoop
from streamproc.gc_tuning import tune_gc
from streamproc.health import observed
from streamproc.loading import load_app
from streamproc.logs import configure_logging
from streamproc.metrics import Metrics
from streamproc.monitor.reporter import reporting
from streamproc.scheduling import Ordering
from streamproc.settings import KafkaSettings
from streamproc.timing.keeper import timekeeping
from streamproc.topology import Topology, load_topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig

_DEFAULTS = WorkerConfig()
DEFAULT_METRICS_PORT = 9400
LOG_REPEAT_INTERVAL_S = 10.0  # each distinct warning at most this often (an outage repeats them)
log = structlog.get_logger("streamproc.worker")


def worker(
    app: Annotated[str, typer.Option("--app", help="The App to run, as MODULE:ATTR (e.g. handlers.app:app).")],
    group: Group = _DEFAULTS.group,
    concurrency: Annotated[
        int, typer.Option("--concurrency", envvar="STREAMPROC_CONCURRENCY", min=1, help="Tasks run at once.")
    ] = _DEFAULTS.concurrency,
    prefetch: Annotated[
        int, typer.Option("--prefetch", min=1, help="Most fetched tasks waiting per partition (backpressure).")
    ] = _DEFAULTS.prefetch,
    ordering: Annotated[Ordering, typer.Option("--ordering", help="Which tasks never overlap.")] = _DEFAULTS.ordering,
    shutdown_timeout: Annotated[
        float, typer.Option("--shutdown-timeout", min=0, help="Seconds running tasks get to finish on stop.")
    ] = _DEFAULTS.shutdown_timeout,
    commit_interval: Annotated[
        float,
        typer.Option(
            "--commit-interval",
            min=0.05,
            help="Seconds between offset commits: about what a SIGKILL makes run again without statuses.",
        ),
    ] = _DEFAULTS.commit_interval,
    reserved_slots: Annotated[
        int | None,
        typer.Option(
            "--reserved-slots",
            min=0,
            help="Slots only the highest priority may take (default: 1 in 64, at least 1 from concurrency 8).",
        ),
    ] = None,
    max_uncommitted: Annotated[
        int,
        typer.Option(
            "--max-uncommitted",
            min=1,
            max=offsetmap.MAX_SPAN,
            help="Most offsets of one partition past its committed offset (finished or not); "
            "fetching that partition waits there.",
        ),
    ] = _DEFAULTS.max_uncommitted,
    sync_threads: Annotated[
        int,
        typer.Option(
            "--sync-threads",
            envvar="STREAMPROC_SYNC_THREADS",
            min=1,
            help="Threads that run synchronous (def) handlers; at most this many run at once. "
            "For CPU-bound work, run more worker processes.",
        ),
    ] = _DEFAULTS.sync_threads,
    statuses: Annotated[
        bool,
        typer.Option(
            "--statuses/--no-statuses",
            help="Write each task's status and result (SPEC 12). Off: no results, no de-duplication.",
        ),
    ] = _DEFAULTS.statuses,
    event_loop: Annotated[
        EventLoop,
        typer.Option(
            "--loop",
            envvar="STREAMPROC_LOOP",
            help="The event loop: asyncio's, or uvloop's (the `uvloop` extra; a few percent faster, see the README).",
        ),
    ] = EventLoop.ASYNCIO,
    metrics_port: MetricsPort = DEFAULT_METRICS_PORT,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Run tasks from the intake topics, routes and retry tiers until SIGTERM or SIGINT, then drain and exit 0."""
    configure_logging(repeat_interval_s=LOG_REPEAT_INTERVAL_S)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    config = WorkerConfig(
        group=group,
        concurrency=concurrency,
        prefetch=prefetch,
        ordering=ordering,
        shutdown_timeout=shutdown_timeout,
        commit_interval=commit_interval,
        reserved_slots=reserved_slots,
        max_uncommitted=max_uncommitted,
        sync_threads=sync_threads,
        statuses=statuses,
    )
    handlers = load_app(app)
    metrics = Metrics(handlers.tasks, group)
    settings, topology = KafkaSettings.from_env(bootstrap_servers), load_topology(file)
    factory = event_loop.factory()  # a missing uvloop is a usage error, said before anything starts
    runner = Worker(handlers, settings, topology, config, hooks=[metrics])
    tune_gc()  # after the app's import: its modules are frozen, not walked at every collection
    try:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(_serve(runner, metrics, metrics_port, settings, topology, handlers))
    finally:
        termination.record()  # closing the loop restored the default; a late SIGTERM changes nothing now


async def _serve(
    runner: Worker, metrics: Metrics, metrics_port: int, settings: KafkaSettings, topology: Topology, app: App
) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    if termination.received():
        log.info("SIGTERM during start-up: stopping before anything started")
        return
    async with (
        observed([runner], metrics, metrics_port) as port,
        reporting(settings, topology.monitor_topic, runner, metrics),
        timekeeping(settings, topology, app, runner),
    ):
        log.info(
            "serving /metrics, /healthz and /readyz",
            port=port,
            url=f"http://localhost:{port}/metrics",
            event_loop=type(loop).__module__.partition(".")[0],  # asyncio or uvloop (`--loop`)
        )
        await runner.run()
