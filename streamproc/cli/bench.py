"""`streamproc bench`: the SPEC §10 figures, each a ratio against a baseline measured in the same run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from streamproc.bench import scenarios
from streamproc.bench.report import document, figures, machine, table
from streamproc.cli.demo import demo_broker
from streamproc.errors import StreamprocError
from streamproc.localbroker import KAFKA_VERSION, LocalBroker
from streamproc.logs import configure_logging

console = Console()


def _steps(bench: scenarios.Bench) -> tuple[tuple[str, str], ...]:
    return (
        ("noop", "1-3, 6: no-op throughput: bare loop, dispatch floor, streamproc (task, batch, 2 processes), peers"),
        ("io", "4: 20 ms handler at concurrency 256"),
        ("priority", "5: high-priority wait, idle and behind a low backlog"),
        ("retry", "7: retry delay through a short tier"),
        ("memory", f"8: peak RSS with a {bench.sizes.rss_backlog:,}-task backlog"),
        ("results", "§12: submit → result of a no-op task on an idle worker"),
        ("view", f"§12: streamproc web with {bench.sizes.statuses:,} statuses: ingest and lookup"),
        (
            "monitor",
            f"§14: streamproc web's update lag, 20 workers reporting and {bench.sizes.monitor_rate:,} statuses/s "
            f"for {bench.sizes.monitor_s:g} s",
        ),
        (
            "delayed",
            f"§13: {bench.sizes.delayed:,} delayed tasks over {bench.sizes.delayed_spread_s:g} s: lateness, worker RSS",
        ),
    )


RUN = {
    "noop": scenarios.noop_throughput,
    "io": scenarios.io_throughput,
    "priority": scenarios.priority_wait,
    "retry": scenarios.retry_delay,
    "memory": scenarios.memory,
    "results": scenarios.result_latency,
    "view": scenarios.status_view,
    "monitor": scenarios.live_monitor,
    "delayed": scenarios.delayed_tasks,
}


async def _run(bench: scenarios.Bench, only: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, what in _steps(bench):
        if only and name not in only:
            continue
        with console.status(f"scenario {what}"):
            results[name] = await RUN[name](bench)
        console.print(f"done: scenario {what}")
    return results


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny backlogs: checks the bench runs, not the speed.")
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the JSON results.")] = Path(
        "bench.json"
    ),
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", "-s", help=f"Run only this scenario (repeatable): {', '.join(RUN)}."),
    ] = None,
) -> None:
    """Measure streamproc against a bare aiokafka loop, the dispatch floor and its peers (FastStream,
    sentry-arroyo, faust-streaming, Celery on Kafka) on one broker, in one run."""
    if importlib.util.find_spec("faststream") is None:
        raise StreamprocError("streamproc bench compares against FastStream: pip install 'streamproc[bench]'")
    only = scenario or []
    if unknown := [name for name in only if name not in RUN]:
        raise StreamprocError(f"no scenario {', '.join(unknown)}: the scenarios are {', '.join(RUN)}")
    configure_logging(level="warning")
    settings = demo_broker()
    local = LocalBroker.from_env().bootstrap_servers == settings.bootstrap_servers
    broker = f"Apache Kafka {KAFKA_VERSION} (local, KRaft)" if local else settings.bootstrap_servers
    sizes = scenarios.QUICK if quick else scenarios.FULL
    results = asyncio.run(_run(scenarios.Bench(settings, sizes), only))
    console.print(figures(results))
    console.print(table(results))
    output.write_text(json.dumps(document(results, machine(broker), "quick" if quick else "full"), indent=2) + "\n")
    console.print(f"results written to {output}")
