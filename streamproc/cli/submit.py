"""`streamproc submit TASK --json '{…}'`: submit tasks from the shell, for demos, tests and operations."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from streamproc.app import Task
from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.errors import StreamprocError
from streamproc.loading import load_app
from streamproc.producer import Producer
from streamproc.settings import KafkaSettings
from streamproc.submission import encode_payload, resolve_priority
from streamproc.topology import load_topology

console = Console()
err_console = Console(stderr=True)

CHUNK = 5_000  # tasks validated and in flight at once: memory stays bounded whatever --count says


def _parse_payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        raise typer.BadParameter(f"the payload must be a JSON object, got {kind}", param_hint="--json")
    return payload


def submit(
    task: Annotated[str, typer.Argument(metavar="TASK", help="Task name, as registered with @app.task.")],
    payload_json: Annotated[str, typer.Option("--json", help="The payload, a JSON object.")] = "{}",
    priority: Annotated[
        str | None, typer.Option("--priority", "-p", help="Priority (default: normal, else the lowest).")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Record key: orders and partitions the tasks of one key.")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Submit this many copies of the task.")] = 1,
    app: Annotated[
        str | None,
        typer.Option("--app", help="Validate the payload with this App's model first: MODULE:ATTR (handlers.app:app)."),
    ] = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Submit a task (or --count copies) and print its task id once the broker has it."""
    payload = _parse_payload(payload_json)
    target: str | Task[Any, Any] = task
    if app is not None:
        loaded = load_app(app)
        if task not in loaded.tasks:
            known = ", ".join(sorted(loaded.tasks)) or "none"
            raise StreamprocError(f"task {task!r} is not registered in {app} (its tasks: {known})")
        target = loaded.tasks[task]
    topology = load_topology(file)
    # Check all that needs no broker first, so bad input is reported even when Kafka is down.
    resolved = resolve_priority(topology, priority)
    encode_payload(target, payload)
    producer = Producer(KafkaSettings.from_env(bootstrap_servers), topology)
    first, last = asyncio.run(_submit(producer, target, payload, resolved, key, count))
    if count == 1:
        console.print(first, highlight=False, soft_wrap=True)
    else:
        topic = topology.intake_topic(resolved)
        console.print(
            f"submitted {count} tasks to {topic}: first {first}, last {last}", highlight=False, soft_wrap=True
        )


async def _submit(
    producer: Producer, task: str | Task[Any, Any], payload: dict[str, Any], priority: str, key: str | None, count: int
) -> tuple[str, str]:
    """First and last ids of `count` submissions, sent in chunks with a progress bar for long runs."""
    first = last = ""
    async with producer:
        with Progress(console=err_console, transient=True, disable=count <= CHUNK) as progress:
            bar = progress.add_task(f"submitting {task if isinstance(task, str) else task.name}", total=count)
            sent = 0
            while sent < count:
                n = min(CHUNK, count - sent)
                handles = await producer.submit_many(task, [payload] * n, priority=priority, key=key)
                first = first or handles[0].id
                last = handles[-1].id
                sent += n
                progress.advance(bar, n)
    return first, last
