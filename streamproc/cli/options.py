"""Options several commands share, so they read and document the same way everywhere."""

from pathlib import Path
from typing import Annotated

import typer

TopicsFile = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Topics file (env STREAMPROC_TOPICS_FILE, default topics/topics.yaml)."),
]
BootstrapServers = Annotated[
    str | None, typer.Option("--bootstrap-servers", help="Kafka bootstrap servers (env STREAMPROC_BOOTSTRAP_SERVERS).")
]
