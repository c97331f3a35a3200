"""`streamproc dlq list|show|replay`: inspect dead letters and send them back to intake."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from streamproc import dlq
from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.dead_letters import NO_TASK, DeadLetter, LetterRef, Selection, parse_ref
from streamproc.envelope import DLQ_REASONS, ERROR_TRACEBACK
from streamproc.replay_ledger import default_replay_group
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology, load_topology

app = typer.Typer(help="Inspect the dead-letter topic and replay dead letters to intake.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

MESSAGE_CHARS = 80
REPLAYED_MARK = "✓"


def _reason(value: str | None) -> str | None:
    if value is not None and value not in DLQ_REASONS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(DLQ_REASONS)}")
    return value


def _ref(text: str, param_hint: str) -> LetterRef:
    try:
        return parse_ref(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from None


def _refs(values: list[str] | None) -> list[LetterRef] | None:
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
ReplayGroup = Annotated[
    str | None,
    typer.Option("--group", help="Consumer group that remembers what was replayed (default: <dlq topic>-replay)."),
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


def _as_json(letter: DeadLetter, replayed: bool) -> dict[str, Any]:
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp,
        "replayed": replayed,
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
    group: ReplayGroup = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """List dead letters, oldest first, with why they failed; ✓ marks those the replay group replayed."""
    topology = load_topology(file)
    with _progress() as progress:
        bar = progress.add_task(f"reading {topology.dlq_topic}", total=None)

        def advance(scanned: int, total: int) -> None:
            progress.update(bar, completed=scanned, total=total)

        listing = asyncio.run(
            dlq.list_dead_letters(
                KafkaSettings.from_env(bootstrap_servers),
                topology,
                Selection(task, reason),
                limit or None,
                advance,
                group,
            )
        )
    if as_json:
        print(json.dumps([_as_json(letter, letter.id in listing.replayed) for letter in listing.letters], indent=2))
        return
    table = Table("id", "failed at (UTC)", "task", "reason", "attempt", "error", "task id", "replayed")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for letter in listing.letters:
        message = letter.error_message.replace("\n", " ")
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 1] + "…"
        table.add_row(  # Text: what handlers wrote is never read as rich markup
            letter.id,
            _utc(letter.failed_at_ms),
            Text(letter.task or NO_TASK),
            Text(letter.reason or "-"),
            str(letter.attempt),
            Text(f"{letter.error_type}: {message}" if letter.error_type else message),
            Text(letter.task_id or "-"),
            REPLAYED_MARK if letter.id in listing.replayed else "",
        )
    if listing.letters:
        console.print(table)
    shown = f"the most recent {len(listing.letters)} of " if len(listing.letters) < listing.matched else ""
    matching = "matching " if task or reason else ""
    of = "those shown" if shown else "them"  # the marks are read for the letters listed only
    replayed = f", {len(listing.replayed)} of {of} replayed (replay group {listing.group})" if listing.replayed else ""
    console.print(
        f"{shown}{listing.matched} {matching}dead letters in {topology.dlq_topic}{replayed}",
        highlight=False,
        markup=False,
    )


def _is_ref(text: str) -> bool:
    """Whether `dlq show` reads `text` as PARTITION:OFFSET or OFFSET (else it is a task id)."""
    return re.fullmatch(r"\s*-?\d+\s*(:\s*-?\d+\s*)?", text) is not None


async def _letters_to_show(
    settings: KafkaSettings, topology: Topology, text: str, group: str | None, progress: dlq.Progress | None
) -> tuple[list[DeadLetter], frozenset[str]]:
    """The dead letter `text` names (every one of a task id, oldest first) and which were replayed."""
    if _is_ref(text):
        letters = [await dlq.get_dead_letter(settings, topology, _ref(text, "ID"))]
    else:
        letters = await dlq.find_by_task_id(settings, topology, text.strip(), progress)
    return letters, await dlq.replayed_ids(settings, topology, letters, group)


@app.command()
def show(
    letter_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="PARTITION:OFFSET as `dlq list` shows it, an OFFSET only one partition holds, or a task id "
            "(found by reading the whole DLQ; of several dead letters of one task id, the newest is shown).",
        ),
    ],
    group: ReplayGroup = None,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Print one dead letter: every header, whether it was replayed, the failing attempt's traceback, and
    its value (pretty JSON when it is JSON)."""
    topology = load_topology(file)
    settings = KafkaSettings.from_env(bootstrap_servers)
    if _is_ref(letter_id):
        letters, replayed = asyncio.run(_letters_to_show(settings, topology, letter_id, group, None))
    else:  # a scan of the whole DLQ: a bar, as `dlq list` shows
        with _progress() as progress:
            bar = progress.add_task(f"looking for task id {letter_id.strip()} in {topology.dlq_topic}", total=None)

            def advance(scanned: int, total: int) -> None:
                progress.update(bar, completed=scanned, total=total)

            letters, replayed = asyncio.run(_letters_to_show(settings, topology, letter_id, group, advance))
    letter = letters[-1]
    replay_group = group or default_replay_group(topology)
    table = Table(title=f"{letter.topic} {letter.id}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("timestamp", f"{letter.timestamp} ({_utc(letter.timestamp)})")
    table.add_row("key", Text("-" if letter.key is None else letter.key.decode("utf-8", "replace")))
    table.add_row("replayed", f"{'yes' if letter.id in replayed else 'no'} (replay group {replay_group})")
    for name, value in letter.headers.items():
        if name != ERROR_TRACEBACK:  # printed below the table, where its lines stay whole
            table.add_row(Text(name), Text(value))
    console.print(table)
    if len(letters) > 1:
        older = ", ".join(f"{o.id}{' (replayed)' if o.id in replayed else ''}" for o in letters[:-1])
        console.print(
            f"task id {letter.task_id} has {len(letters)} dead letters; this is the newest, the older: {older}",
            highlight=False,
            markup=False,
        )
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
    group: ReplayGroup = None,
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
                Selection(task, reason),
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
