"""`streamproc broker start|stop|status`: the local single-node Kafka for the demo and tests."""

from __future__ import annotations

import typer
from rich.console import Console

from streamproc.localbroker import KAFKA_VERSION, LocalBroker

app = typer.Typer(help="Run a local single-node Kafka (KRaft) from Maven Central jars.", no_args_is_help=True)
console = Console()


@app.command()
def start() -> None:
    """Start the local broker (downloads and caches its jars on first use)."""
    broker = LocalBroker.from_env()
    with console.status(f"starting Kafka {KAFKA_VERSION} on {broker.bootstrap_servers}…"):
        result = broker.start()
    if result.already_running:
        console.print(f"broker already runs (pid {result.pid}) on {broker.bootstrap_servers}")
    else:
        console.print(f"broker started (pid {result.pid}) on {broker.bootstrap_servers} in {result.seconds:.1f}s")


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
    console.print(
        f"broker runs (pid {pid}) on {broker.bootstrap_servers}, Kafka {KAFKA_VERSION}, log {broker.log_file}"
    )
