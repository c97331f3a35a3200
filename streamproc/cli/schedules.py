"""`streamproc schedules list`: an app's periodic schedules, who fires them, their last and next fire.

The schedules are the app's own declarations (`@app.periodic`), so the command imports the app like
`streamproc worker` does; the last fired slot of each comes from its state record on
`<prefix>.schedules` (`periodic_runner.read_states`), the one thing only the cluster knows.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.errors import StreamprocError
from streamproc.loading import load_app
from streamproc.settings import KafkaSettings
from streamproc.submission import resolve_priority
from streamproc.timing.periodic import Periodic, owner_partition
from streamproc.timing.periodic_runner import iso, now_ms, read_states
from streamproc.topology import Topology, load_topology

app = typer.Typer(help="Periodic tasks (`@app.periodic`): their schedules and fires.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)


@app.command("list")
def list_schedules(
    app_spec: Annotated[
        str, typer.Option("--app", help="The App whose schedules to show, as MODULE:ATTR (e.g. handlers.app:app).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Each periodic schedule: cron or interval (UTC), catch-up policy, the intake partition whose
    owner fires it, the last fired slot (from `<prefix>.schedules`) and the next one."""
    schedules = list(load_app(app_spec).schedules.values())
    topology = load_topology(file)
    settings = KafkaSettings.from_env(bootstrap_servers)
    last = asyncio.run(_last_slots(settings, topology, [s.name for s in schedules])) if schedules else {}
    now = now_ms()
    rows = [_row(schedule, topology, last.get(schedule.name), now) for schedule in schedules]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"{app_spec} declares no periodic schedules (`@app.periodic`).")
        return
    table = Table(
        "schedule", "task", "when (UTC)", "catch-up", "owner partition", "last fired", "next fire", title="schedules"
    )
    for row in rows:
        last_slot = row["last_slot"]
        last_fired = "never" if last_slot is None else f"{row['last_slot_at']} ({_ago(now - last_slot)} ago)"
        table.add_row(
            Text(row["name"]),
            Text(row["task"]),
            Text(row["schedule"]),
            row["catch_up"],
            Text(f"{row['owner']['topic']}[{row['owner']['partition']}]"),
            last_fired,
            f"{row['next_slot_at']} (in {_ago(row['next_slot'] - now)})",
        )
    console.print(table)
    console.print(
        "Each schedule is fired by the worker process that owns its owner partition in the workers' group; "
        "times are UTC."
    )


def _row(schedule: Periodic, topology: Topology, last_slot: int | None, now: int) -> dict[str, Any]:
    try:
        topic = topology.intake_topic(resolve_priority(topology, schedule.priority))
    except StreamprocError as exc:
        raise StreamprocError(f"periodic schedule {schedule.name!r}: {exc}") from None
    next_slot = schedule.next_slot(now)
    return {
        "name": schedule.name,
        "task": schedule.task,
        "schedule": schedule.describe(),
        "cron": schedule.cron,
        "every_s": None if schedule.every_ms is None else schedule.every_ms / 1000,
        "catch_up": schedule.catch_up,
        "owner": {"topic": topic, "partition": owner_partition(schedule, topology.intake.partitions)},
        "last_slot": last_slot,
        "last_slot_at": None if last_slot is None else iso(last_slot),
        "next_slot": next_slot,
        "next_slot_at": iso(next_slot),
    }


async def _last_slots(settings: KafkaSettings, topology: Topology, names: list[str]) -> dict[str, int | None]:
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        if topology.schedules_topic not in await consumer.topics():
            raise StreamprocError(
                f"topic {topology.schedules_topic!r} does not exist on {settings.bootstrap_servers}: "
                "run `streamproc topics apply`"
            )
        return {name: last for name, (last, _) in (await read_states(consumer, topology, names)).items()}
    finally:
        await consumer.stop()


def _ago(ms: int) -> str:
    """A duration as `3s`, `4m 10s`, `2h 5m`, `3d 4h`."""
    seconds = max(0, ms) // 1000
    for unit, size, sub, sub_size in (("d", 86_400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = seconds % size // sub_size
            return f"{seconds // size}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{seconds}s"
