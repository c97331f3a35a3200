"""`streamproc broker start|stop|status`: the local single-node Kafka for the demo and tests."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from streamproc.localbroker import KAFKA_VERSION, SASL_MECHANISM, LocalBroker

app = typer.Typer(help="Run a local single-node Kafka (KRaft) from Maven Central jars.", no_args_is_help=True)
console = Console()


@app.command()
def start(
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help=f"Also listen with SASL_SSL ({SASL_MECHANISM}) on port + 2, with a CA of its own; "
            "prints the variables that connect through it.",
        ),
    ] = False,
) -> None:
    """Start the local broker (downloads and caches its jars on first use)."""
    broker = LocalBroker.from_env()
    with console.status(f"starting Kafka {KAFKA_VERSION} on {broker.bootstrap_servers}…"):
        result = broker.start(secure=secure)
    if result.already_running:
        console.print(f"broker already runs (pid {result.pid}) on {broker.bootstrap_servers}")
    else:
        console.print(f"broker started (pid {result.pid}) on {broker.bootstrap_servers} in {result.seconds:.1f}s")
    if secure:
        console.print(f"SASL_SSL ({SASL_MECHANISM}) on 127.0.0.1:{broker.sasl_port}; to connect through it:")
        for name, value in broker.secure_env().items():
            console.print(f"export {name}={value}", highlight=False, soft_wrap=True)


@app.command()
def stop() -> None:
    """Stop the local broker that `start` launched, and nothing else."""
    pid = LocalBroker.from_env().stop()
    console.print("no broker was running" if pid is None else f"broker stopped (pid {pid})")


@app.command()
def status() -> None:
    """Say whether the local broker runs; exit 1 when it does not."""
    broker = LocalBroker.from_env()
    pid = broker.running_pid()
    if pid is None:
        console.print("broker is not running")
        raise typer.Exit(1)
    secure = f" and SASL_SSL on 127.0.0.1:{broker.sasl_port}" if broker.runs_secure() else ""
    console.print(
        f"broker runs (pid {pid}) on {broker.bootstrap_servers}{secure}, Kafka {KAFKA_VERSION}, log {broker.log_file}"
    )
