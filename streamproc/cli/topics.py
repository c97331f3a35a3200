"""`streamproc topics apply|list|init`: the declared topics of `topics/topics.yaml` on the cluster."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamproc import provisioning
from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import default_topics_text, load_topology, topics_file_target

app = typer.Typer(help="Make the cluster's topics match the topics file.", no_args_is_help=True)
console = Console()


@app.command()
def apply(
    file: TopicsFile = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")] = False,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Create missing topics, raise partition counts and set configs; refuse decreases."""
    topology = load_topology(file)
    plan = asyncio.run(provisioning.apply(KafkaSettings.from_env(bootstrap_servers), topology, dry_run=dry_run))
    for line in plan.describe():
        console.print(("would " if dry_run and not line.startswith("warning") else "") + line, highlight=False)
    if plan.is_empty:
        console.print("topics are up to date")


@app.command("list")
def list_(file: TopicsFile = None, bootstrap_servers: BootstrapServers = None) -> None:
    """Show each declared topic with its role and what the cluster has."""
    topology = load_topology(file)
    existing, plan = asyncio.run(provisioning.cluster_state(KafkaSettings.from_env(bootstrap_servers), topology))
    table = Table("topic", "role", "priority", "partitions", "rf", "configs", "state")
    table.columns[0].no_wrap = True
    for spec in topology.topics():
        state = existing.get(spec.name)
        if state is None:
            partitions = str(spec.partitions or "-")
            table.add_row(spec.name, spec.role, spec.priority, partitions, "-", "", "[red]missing[/red]")
            continue
        table.add_row(
            spec.name,
            spec.role,
            spec.priority,
            str(state.partitions),
            str(state.replication_factor),
            ", ".join(f"{k}={v}" for k, v in sorted(state.configs.items())),
            "[yellow]differs[/yellow]" if plan.differs(spec.name) else "[green]ok[/green]",
        )
    console.print(table)


@app.command()
def init(
    file: TopicsFile = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the default topics file (the topology every command uses when there is none) to edit."""
    target = topics_file_target(file)
    if target.exists() and not force:
        raise StreamprocError(f"{target} exists; `streamproc topics init --force` overwrites it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(default_topics_text())
    console.print(f"wrote {target}; edit it, then `streamproc topics apply`", highlight=False)
