"""`streamproc dlq list|show|replay`: inspect dead letters and send them back to intake."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from streamproc import dlq
from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.envelope import DLQ_REASONS, ERROR_TRACEBACK
from streamproc.settings import KafkaSettings
from streamproc.topology import load_topology

app = typer.Typer(help="Inspect the dead-letter topic and replay dead letters to intake.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

MESSAGE_CHARS = 80


def _reason(value: str | None) -> str | None:
    if value is not None and value not in DLQ_REASONS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(DLQ_REASONS)}")
    return value


def _ref(text: str, param_hint: str) -> dlq.LetterRef:
    try:
        return dlq.parse_ref(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from None


def _refs(values: list[str] | None) -> list[dlq.LetterRef] | None:
    if not values:
        return None
    return [_ref(text, "--offsets") for value in values for text in value.split(",") if text.strip()]


TaskFilter = Annotated[str | None, typer.Option("--task", "-t", help="Only dead letters of this task.")]
ReasonFilter = Annotated[
    str | None,
    typer.Option(
        "--reason", "-r", callback=_reason, help=f"Only dead letters of this reason: {', '.join(DLQ_REASONS)}."
    ),
]


def _progress() -> Progress:
    """A bar over the DLQ offsets a command reads, on stderr, gone once the command is done."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err_console, transient=True)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_or_base64(name: str, data: bytes | None) -> dict[str, Any]:
    """`{name: text}` for UTF-8 bytes, else `{name_base64: …}`, so JSON output never loses a byte."""
    if data is None:
        return {name: None}
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode()}


def _as_json(letter: dlq.DeadLetter) -> dict[str, Any]:
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp,
        **_text_or_base64("key", letter.key),
        "headers": letter.headers,
        **_text_or_base64("value", letter.value),
    }


@app.command("list")
def list_(
    task: TaskFilter = None,
    reason: ReasonFilter = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Show the most recent N matching (0: all).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """List dead letters, oldest first, with why they failed."""
    topology = load_topology(file)
    with _progress() as progress:
        bar = progress.add_task(f"reading {topology.dlq_topic}", total=None)

        def advance(scanned: int, total: int) -> None:
            progress.update(bar, completed=scanned, total=total)

        listing = asyncio.run(
            dlq.list_dead_letters(
                KafkaSettings.from_env(bootstrap_servers), topology, dlq.Selection(task, reason), limit or None, advance
            )
        )
    if as_json:
        print(json.dumps([_as_json(letter) for letter in listing.letters], indent=2))
        return
    table = Table("id", "failed at (UTC)", "task", "reason", "attempt", "error", "task id")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for letter in listing.letters:
        message = letter.error_message.replace("\n", " ")
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 1] + "…"
        table.add_row(  # Text: what handlers wrote is never read as rich markup
            letter.id,
            _utc(letter.failed_at_ms),
            Text(letter.task or dlq.NO_TASK),
            Text(letter.reason or "-"),
            str(letter.attempt),
            Text(f"{letter.error_type}: {message}" if letter.error_type else message),
            Text(letter.task_id or "-"),
        )
    if listing.letters:
        console.print(table)
    shown = f"the most recent {len(listing.letters)} of " if len(listing.letters) < listing.matched else ""
    matching = "matching " if task or reason else ""
    console.print(f"{shown}{listing.matched} {matching}dead letters in {topology.dlq_topic}", highlight=False)


@app.command()
def show(
    offset: Annotated[
        str,
        typer.Argument(
            metavar="OFFSET", help="PARTITION:OFFSET as `dlq list` shows it, or an OFFSET only one partition holds."
        ),
    ],
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Print one dead letter: every header, the failing attempt's traceback, and its value (pretty JSON
    when it is JSON)."""
    topology = load_topology(file)
    letter = asyncio.run(
        dlq.get_dead_letter(KafkaSettings.from_env(bootstrap_servers), topology, _ref(offset, "OFFSET"))
    )
    table = Table(title=f"{letter.topic} {letter.id}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("timestamp", f"{letter.timestamp} ({_utc(letter.timestamp)})")
    table.add_row("key", Text("-" if letter.key is None else letter.key.decode("utf-8", "replace")))
    for name, value in letter.headers.items():
        if name != ERROR_TRACEBACK:  # printed below the table, where its lines stay whole
            table.add_row(Text(name), Text(value))
    console.print(table)
    if letter.error_traceback is not None:
        console.print(f"{ERROR_TRACEBACK}:", style="bold", highlight=False)
        console.print(letter.error_traceback.rstrip("\n"), highlight=False, markup=False, soft_wrap=True)
    if letter.value is None:
        console.print("no value (null)")
        return
    try:
        console.print_json(data=json.loads(letter.value))
    except ValueError:  # not UTF-8, or not JSON
        try:
            console.print(letter.value.decode(), highlight=False, markup=False)
        except UnicodeDecodeError:
            console.print(f"value (not UTF-8, base64): {base64.b64encode(letter.value).decode()}", highlight=False)


@app.command()
def replay(
    task: TaskFilter = None,
    reason: ReasonFilter = None,
    offsets: Annotated[
        list[str] | None,
        typer.Option(
            "--offsets",
            "-o",
            metavar="IDS",
            help="Only these dead letters: comma-separated ids as `dlq show` takes them (0:12,0:15,1:3); repeatable.",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Consumer group that remembers what was replayed (default: <dlq topic>-replay)."),
    ] = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Send dead letters back to intake (attempt 1, replayed-from); never one the group already replayed."""
    topology = load_topology(file)
    refs = _refs(offsets)
    with _progress() as progress:
        bar = progress.add_task("replaying", total=None)

        def advance(state: dlq.ReplayProgress) -> None:
            description = f"replaying ({state.sent} sent)"
            progress.update(bar, completed=state.scanned, total=state.total, description=description)

        summary = asyncio.run(
            dlq.replay(
                KafkaSettings.from_env(bootstrap_servers),
                topology,
                dlq.Selection(task, reason),
                refs,
                group,
                advance,
            )
        )
    if summary.sent:
        table = Table("task", "replayed")
        for name, count in sorted(summary.by_task.items()):
            table.add_row(Text(name), str(count))
        console.print(table)
    to = ", ".join(f"{topic} ({count})" for topic, count in sorted(summary.by_topic.items()))
    console.print(f"replayed {summary.sent} dead letters" + (f" to {to}" if to else ""), highlight=False, markup=False)
    older = (
        f"; {summary.not_read} older dead letters were replayed before and not read again" if summary.not_read else ""
    )
    console.print(
        f"skipped {summary.already_replayed} already replayed (replay group {summary.group}){older}",
        highlight=False,
        markup=False,
    )
    if summary.not_found:
        console.print(f"[yellow]not found:[/yellow] {', '.join(summary.not_found)}", highlight=False)
    if summary.stopped_at is not None:
        err_console.print(
            f"[red]error:[/red] stopped before {summary.stopped_at.id}: the replay group's record of partition "
            f"{summary.stopped_at.partition} would outgrow Kafka's offset metadata limit "
            f"({dlq.MAX_METADATA_BYTES} bytes): too many gaps between the dead letters it replayed. What was sent "
            "is recorded. A replay without filters fills the gaps (it sends the dead letters in them too); a new "
            "--group starts an empty record (it does not know what this one replayed).",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
