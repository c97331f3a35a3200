"""`streamproc lag`: how far the workers' group is behind, and what KEDA would scale it to.

The totals per topic and KEDA's decision come first, so a long partition table (`--by partition`)
cannot push them off the screen; `--json` prints the whole report as one document for scripts."""

from __future__ import annotations

import asyncio
import json
import time
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.cli.options import Group as GroupOption
from streamproc.lag import LagReport, keda_triggers, read_lag, summarize
from streamproc.settings import KafkaSettings
from streamproc.topology import load_topology
from streamproc.worker_config import WorkerConfig

console = Console()
WATCH_S = 2.0


class By(StrEnum):
    TOPIC = "topic"
    PARTITION = "partition"


def lag(
    group: GroupOption = WorkerConfig.group,
    lag_threshold: Annotated[
        int, typer.Option("--lag-threshold", min=1, help="KEDA's lagThreshold: target lag per replica.")
    ] = 100,
    by: Annotated[
        By,
        typer.Option(
            "--by",
            case_sensitive=False,
            help="topic: the totals per topic and KEDA's decision; partition: a row per partition below them too.",
        ),
    ] = By.TOPIC,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON document (totals, KEDA's decision and every partition) instead of tables."
        ),
    ] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help=f"Refresh every {WATCH_S:g}s until Ctrl-C.")] = False,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Lag per topic (end offset - committed - finished above it), KEDA's replica count, and with --by partition
    the lag of each partition.

    Exits 1 when the group has committed nothing on these topics (a mistyped --group looks just
    like a group with a full backlog), after printing what a new group would face."""
    if as_json and watch:
        raise typer.BadParameter("--json prints one document; it does not go with --watch", param_hint="--json")
    topology = load_topology(file)
    settings = KafkaSettings.from_env(bootstrap_servers)
    consumed = topology.consumed_topics()

    def report() -> LagReport:
        return summarize(
            asyncio.run(read_lag(settings, group, consumed)), keda_triggers(topology), group, lag_threshold
        )

    if not watch:
        current = report()
        if as_json:
            print(json.dumps(current.as_json(), indent=2))
        else:
            console.print(render(current, by))
        if current.never_committed:
            Console(stderr=True).print(
                f"[red]error:[/red] consumer group {group!r} has no committed offset on these topics: no worker "
                "of it has committed yet, or the name is wrong (the figures above are a new group's)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)
        return
    with Live(render(report(), by), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(WATCH_S)
                live.update(render(report(), by), refresh=True)
        except KeyboardInterrupt:
            pass


def render(report: LagReport, by: By = By.TOPIC) -> Group:
    """The totals per topic and the replicas per KEDA trigger, KEDA's decision, then (`by` partition) the
    partition table."""
    totals = Table(
        "topic",
        "partitions",
        "lag",
        f"KEDA replicas (lagThreshold {report.lag_threshold})",
        title=f"consumer group {report.group}",
    )
    for t in report.topics:
        wanted = "not a trigger" if t.keda_replicas is None else str(t.keda_replicas)
        totals.add_row(Text(t.topic), str(t.partitions), str(t.lag), wanted)
    partitions = sum(t.partitions for t in report.topics)
    totals.add_row("all", str(partitions), str(report.lag), str(report.keda_replicas), style="bold")
    note = Text(
        f"KEDA would run {report.keda_replicas} replica(s): the largest of its triggers, one per intake topic and "
        "route (retry tiers are not triggers: their lag includes retries not yet due), before min/max replicas."
    )
    if by is By.TOPIC:
        return Group(totals, note)
    table = Table("topic", "partition", "end offset", "committed", "finished ahead", "lag", title="partitions")
    for p in report.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        table.add_row(Text(p.topic), str(p.partition), str(p.end), committed, str(p.finished_ahead), str(p.lag))
    return Group(totals, note, table)
