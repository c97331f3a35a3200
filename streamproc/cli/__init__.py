"""The `streamproc` command: one sub-app per concept, errors as one clear line (exit 1)."""

from __future__ import annotations

import sys

import typer
from aiokafka.errors import KafkaError
from rich.console import Console

from streamproc.cli import broker, demo, topics
from streamproc.errors import StreamprocError

app = typer.Typer(
    name="streamproc",
    help="Kafka-backed streaming task processor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(topics.app, name="topics")
app.command("demo")(demo.demo)

_debug = False


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    global _debug
    _debug = debug


def main() -> None:
    """Entry point: usage errors exit 2 (click), user and Kafka errors print one line and exit 1."""
    try:
        app()
    except (StreamprocError, KafkaError, OSError) as exc:
        if _debug:
            raise
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
