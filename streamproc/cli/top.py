"""`streamproc top`: the live monitor's overview in the terminal, refreshed every second (SPEC §14).

It runs the same `LiveMonitor` as `streamproc web`, in-process: no web server needed, nothing
written anywhere. Ctrl-C ends it (exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.cli.options import Group as GroupOption
from streamproc.logs import configure_logging
from streamproc.monitor.board import WorkerState
from streamproc.monitor.live import LiveMonitor, Overview
from streamproc.settings import KafkaSettings
from streamproc.topology import load_topology
from streamproc.worker_config import WorkerConfig

STATE_STYLES = {WorkerState.ALIVE: "green", WorkerState.STOPPED: "dim", WorkerState.GONE: "red"}


def top(
    group: GroupOption = WorkerConfig.group,
    lag_threshold: Annotated[
        int,
        typer.Option(
            "--lag-threshold", envvar="STREAMPROC_LAG_THRESHOLD", min=1, help="KEDA's lagThreshold, for its replicas."
        ),
    ] = 100,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Queues (pending, rates, wait p95, KEDA's replicas) and workers, live, until Ctrl-C."""
    # The screen is the output: warnings (a broker away, a missing topic) would scroll it; errors still show.
    configure_logging(level="error")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    monitor = LiveMonitor(KafkaSettings.from_env(bootstrap_servers), load_topology(file), group, lag_threshold)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_show(monitor))


async def _show(monitor: LiveMonitor) -> None:
    following = asyncio.create_task(monitor.run())
    try:
        with Live(render(monitor.overview), console=Console(), auto_refresh=False, screen=False) as live:
            overview = monitor.overview
            while not following.done():
                overview = await monitor.next_overview(overview)
                live.update(render(overview), refresh=True)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def render(overview: Overview) -> Group:
    """The header line, the queues (intake and routes, then tiers) and the workers."""
    header = Text.assemble(
        ("streamproc top", "bold"),
        f"  group {overview.group}  pending ",
        (f"{overview.pending:,}", "bold"),
        "  workers alive ",
        (str(overview.workers_alive), "bold"),
        "  KEDA replicas ",
        (str(overview.keda_replicas), "bold"),
        f" (lagThreshold {overview.lag_threshold})",
    )
    parts: list[Table | Text] = [header]
    if overview.broker_error:
        parts.append(Text(f"offsets not read: {overview.broker_error}", style="red"))
    queues = Table("topic", "priority / delay", "pending", "in/s", "out/s", "wait p95", "KEDA", title="queues")
    for q in overview.queues:
        kind = q.priority or "" if q.role != "tier" else f"retry after {_seconds(q.delay_s)}"
        keda = "-" if q.keda_replicas is None else str(q.keda_replicas)
        queues.add_row(
            Text(q.topic), kind, f"{q.pending:,}", _rate(q.in_per_s), _rate(q.out_per_s), _seconds(q.wait_p95_s), keda
        )
    parts.append(queues)
    workers = Table("state", "host", "pid", "partitions", "in flight", "waiting", "delayed", "done/s", "open circuits")
    workers.title = "workers"
    for w in overview.workers:
        r = w.report
        open_circuits = ", ".join(task for task, is_open in r.circuits.items() if is_open) or "-"
        workers.add_row(
            Text(w.state.value, style=STATE_STYLES[w.state]),
            Text(r.host),
            str(r.pid),
            str(sum(len(numbers) for numbers in r.partitions.values())),
            f"{r.in_flight}/{r.concurrency}",
            str(r.waiting),
            str(r.delayed),
            _rate(w.rate_per_s),
            Text(open_circuits),
        )
    parts.append(workers)
    return Group(*parts)
