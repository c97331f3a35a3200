"""The `streamproc` command: one sub-app per concept, errors as one clear line (exit 1)."""

from __future__ import annotations

import logging
import sys

import typer
from aiokafka.errors import KafkaError
from rich.console import Console

from streamproc import __version__
from streamproc.cli import bench, broker, demo, dlq, lag, lifecycle, schedules, submit, top, topics, web, worker
from streamproc.connection_errors import explain
from streamproc.errors import StreamprocError
from streamproc.settings import Settings, last_read, load_env_file

app = typer.Typer(
    name="streamproc",
    help="Kafka-backed streaming task processor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion [bash|zsh|fish|powershell]
)
app.add_typer(broker.app, name="broker")
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")
app.add_typer(schedules.app, name="schedules")
app.command("demo")(demo.demo)
app.command("worker")(worker.worker)
app.command("submit")(submit.submit)
app.command("lag")(lag.lag)
app.command("status")(lifecycle.status)
app.command("result")(lifecycle.result)
app.command("cancel")(lifecycle.cancel)
app.command("bench")(bench.bench)
app.command("web")(web.web)
app.command("top")(top.top)

_debug = False


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"streamproc {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    global _debug
    _debug = debug
    # Before any subcommand reads its options: a `.env` in the current directory fills the
    # variables the environment leaves unset (flags with `envvar=` read them too), and a bad value
    # is one line naming the variable (exit 1) rather than a usage error or a traceback later.
    if not ctx.resilient_parsing:  # not while completing a command line
        load_env_file()
        Settings.read()
    # aiokafka logs every failed connection attempt; a command reports the failure itself, once.
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def main() -> None:
    """Entry point: usage errors exit 2 (click), user and Kafka errors print one line and exit 1."""
    try:
        app()
    except (StreamprocError, KafkaError, OSError) as exc:
        if _debug:
            raise
        message = explain(exc, last_read())
        Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
