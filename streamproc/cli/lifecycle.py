"""`streamproc status`, `result` and `cancel`: a task's lifecycle from the shell (SPEC §12).

Lookups go through `streamproc web` when `STREAMPROC_WEB_URL` is set, else a bounded read of the
status topic (see the README for its price).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.errors import StreamprocError, TaskCancelled, TaskFailed
from streamproc.lifecycle.client import result_of
from streamproc.lifecycle.status import TaskStatus
from streamproc.producer import Producer

console = Console(highlight=False, soft_wrap=True)

TaskId = Annotated[str, typer.Argument(metavar="ID", help="The task id (what submit printed).")]
Timeout = Annotated[
    float | None, typer.Option("--timeout", min=0, help="Give up after this many seconds (default: wait on).")
]


def _describe(status: TaskStatus) -> str:
    parts = [f"{status.task_id}: {status.state}"]
    if status.task:
        parts.append(f"task {status.task}")
    if status.attempt:
        parts.append(f"attempt {status.attempt}")
    if status.reason:
        parts.append(f"reason {status.reason}")
    if status.error_type:
        parts.append(f"{status.error_type}: {status.error}")
    if status.result_error:
        parts.append(f"result not stored: {status.result_error}")
    return ", ".join(parts)


async def _with_producer(bootstrap_servers: str | None, file: Any, call: Any) -> Any:
    async with Producer.from_env(bootstrap_servers, file) as producer:
        return await call(producer)


def status(
    task_id: TaskId,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the task has finished.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    timeout: Timeout = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Print a task's status: pending, started, retrying, succeeded, dead, cancelled or unknown."""

    async def look(producer: Producer) -> TaskStatus:
        return await (producer.wait(task_id, timeout) if wait else producer.status(task_id))

    found = _run(_with_producer(bootstrap_servers, file, look), task_id, timeout)
    console.print(json.dumps(found.as_dict()) if as_json else _describe(found))


def result(
    task_id: TaskId,
    timeout: Timeout = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Wait for a task's result and print it as JSON (exit 1 if it is dead or was cancelled)."""

    async def get(producer: Producer) -> TaskStatus:
        return await producer.wait(task_id, timeout)

    found = _run(_with_producer(bootstrap_servers, file, get), task_id, timeout)
    try:
        value = result_of(found)
    except (TaskFailed, TaskCancelled) as exc:
        raise StreamprocError(str(exc)) from None
    console.print(json.dumps(value))


def cancel(task_id: TaskId, file: TopicsFile = None, bootstrap_servers: BootstrapServers = None) -> None:
    """Cancel a task: it never starts on any worker; a running async handler is cancelled."""

    async def do(producer: Producer) -> TaskStatus:
        return await producer.cancel(task_id)

    before = _run(_with_producer(bootstrap_servers, file, do), task_id, None)
    if before.state.terminal:
        raise StreamprocError(f"task {task_id} has already finished ({before.state}): nothing to cancel")
    console.print(f"cancelled task {task_id} (it was {before.state})")


def _run(call: Any, task_id: str, timeout: float | None) -> TaskStatus:
    try:
        found: TaskStatus = asyncio.run(call)
    except TimeoutError:
        raise StreamprocError(f"task {task_id} did not finish within {timeout:g}s") from None
    return found
