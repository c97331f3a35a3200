"""Options several commands share, so they read and document the same way everywhere."""

from pathlib import Path
from typing import Annotated

import typer

TopicsFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="Topics file (env STREAMPROC_TOPICS_FILE; default topics/topics.yaml if it exists, else the built-in "
        "defaults; `streamproc topics init` writes them).",
    ),
]
BootstrapServers = Annotated[
    str | None, typer.Option("--bootstrap-servers", help="Kafka bootstrap servers (env STREAMPROC_BOOTSTRAP_SERVERS).")
]
Group = Annotated[str, typer.Option("--group", envvar="STREAMPROC_GROUP", help="The workers' consumer group.")]
MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port",
        envvar="STREAMPROC_METRICS_PORT",
        min=0,
        help="Port of /metrics, /healthz and /readyz (0: a free port, printed).",
    ),
]
