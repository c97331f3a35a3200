"""`streamproc status`, `result` and `cancel`: a task's lifecycle from the shell (SPEC §12).

Lookups go through `streamproc web` when `STREAMPROC_WEB_URL` is set, else a bounded read of the
status topic (see the README for its price).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.errors import StreamprocError, TaskCancelled, TaskFailed
from streamproc.lifecycle.client import result_of
from streamproc.lifecycle.status import TaskStatus
from streamproc.producer import Producer

console = Console(highlight=False, soft_wrap=True)

Question = Callable[[Producer], Awaitable[TaskStatus]]
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


def _ask(file: Path | None, bootstrap_servers: str | None, question: Question) -> TaskStatus:
    """The answer to `question`, asked of a producer from the environment; a timeout is one line."""

    async def ask() -> TaskStatus:
        async with Producer.from_env(bootstrap_servers, file) as producer:
            return await question(producer)

    try:
        return asyncio.run(ask())
    except TimeoutError as exc:  # `Producer.wait` says which task and how long
        raise StreamprocError(str(exc)) from None


def status(
    task_id: TaskId,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the task has finished.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    timeout: Timeout = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Print a task's status: pending, started, retrying, succeeded, dead, cancelled or unknown."""

    found = _ask(file, bootstrap_servers, lambda p: p.wait(task_id, timeout) if wait else p.status(task_id))
    console.print(json.dumps(found.as_dict()) if as_json else _describe(found))


def result(
    task_id: TaskId,
    timeout: Timeout = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Wait for a task's result and print it as JSON (exit 1 if it is dead or was cancelled)."""

    found = _ask(file, bootstrap_servers, lambda p: p.wait(task_id, timeout))
    try:
        value = result_of(found)
    except (TaskFailed, TaskCancelled) as exc:
        raise StreamprocError(str(exc)) from None
    console.print(json.dumps(value))


def cancel(task_id: TaskId, file: TopicsFile = None, bootstrap_servers: BootstrapServers = None) -> None:
    """Cancel a task: it never starts on any worker; a running async handler is cancelled."""

    before = _ask(file, bootstrap_servers, lambda p: p.cancel(task_id))
    if before.state.terminal:
        raise StreamprocError(f"task {task_id} has already finished ({before.state}): nothing to cancel")
    console.print(f"cancelled task {task_id} (it was {before.state})")
