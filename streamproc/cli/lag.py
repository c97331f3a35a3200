"""`streamproc lag`: how far the workers' group is behind, and what KEDA would scale it to."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.cli.options import Group as GroupOption
from streamproc.lag import PartitionLag, keda_replicas, read_lag
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology, load_topology
from streamproc.worker import WorkerConfig

console = Console()
WATCH_S = 2.0


def lag(
    group: GroupOption = WorkerConfig.group,
    lag_threshold: Annotated[
        int, typer.Option("--lag-threshold", min=1, help="KEDA's lagThreshold: target lag per replica.")
    ] = 100,
    watch: Annotated[bool, typer.Option("--watch", "-w", help=f"Refresh every {WATCH_S:g}s until Ctrl-C.")] = False,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Lag per topic and partition (end offset - committed - finished above it), totals, and KEDA's replica count.

    Exits 1 when the group has committed nothing on these topics (a mistyped --group looks just
    like a group with a full backlog), after printing what a new group would face."""
    topology = load_topology(file)
    settings = KafkaSettings.from_env(bootstrap_servers)
    consumed = [spec.name for spec in topology.topics() if spec.role in ("intake", "route", "tier")]

    def report() -> Group:
        return render(asyncio.run(read_lag(settings, group, consumed)), topology, group, lag_threshold)

    if not watch:
        partitions = asyncio.run(read_lag(settings, group, consumed))
        console.print(render(partitions, topology, group, lag_threshold))
        if all(p.committed is None for p in partitions):
            Console(stderr=True).print(
                f"[red]error:[/red] consumer group {group!r} has no committed offset on these topics: no worker "
                "of it has committed yet, or the name is wrong (the figures above are a new group's)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)
        return
    with Live(report(), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(WATCH_S)
                live.update(report(), refresh=True)
        except KeyboardInterrupt:
            pass


def render(partitions: list[PartitionLag], topology: Topology, group: str, lag_threshold: int) -> Group:
    """The partition table, the totals, and the replicas per KEDA trigger (intake topics and routes)."""
    table = Table("topic", "partition", "end offset", "committed", "lag", title=f"consumer group {group}")
    by_topic: dict[str, list[PartitionLag]] = defaultdict(list)
    for p in partitions:
        by_topic[p.topic].append(p)
        table.add_row(
            p.topic, str(p.partition), str(p.end), "-" if p.committed is None else str(p.committed), str(p.lag)
        )
    totals = Table("topic", "partitions", "lag", f"KEDA replicas (lagThreshold {lag_threshold})", title="totals")
    triggers = {spec.name for spec in topology.topics() if spec.role in ("intake", "route")}
    replicas = 0
    for topic, topic_partitions in by_topic.items():
        wanted = keda_replicas(topic_partitions, lag_threshold) if topic in triggers else None
        replicas = max(replicas, wanted or 0)
        lag_sum = sum(p.lag for p in topic_partitions)
        totals.add_row(
            topic, str(len(topic_partitions)), str(lag_sum), "not a trigger" if wanted is None else str(wanted)
        )
    totals.add_row("all", str(len(partitions)), str(sum(p.lag for p in partitions)), f"{replicas}", style="bold")
    note = (
        f"KEDA would run {replicas} replica(s): the largest of its triggers, one per intake topic and route "
        "(retry tiers are not triggers: their lag includes retries not yet due), before min/max replicas."
    )
    return Group(table, totals, note)
