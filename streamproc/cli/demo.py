"""`streamproc demo`: the main job on a broker that is there (the named one, or the local one)."""

from __future__ import annotations

import asyncio
import os

from rich.console import Console

from streamproc.admin import broker_answers
from streamproc.cli import topics
from streamproc.localbroker import LocalBroker
from streamproc.settings import KafkaSettings

console = Console()


def demo_broker() -> str:
    """The broker `STREAMPROC_BOOTSTRAP_SERVERS` names if it answers, else the local broker, started."""
    named = os.environ.get("STREAMPROC_BOOTSTRAP_SERVERS")
    if named and asyncio.run(broker_answers(KafkaSettings.from_env())):
        console.print(f"using the broker at {named}")
        return named
    broker = LocalBroker.from_env()
    with console.status("starting the local Kafka broker (the first start downloads its jars)…"):
        started = broker.start()
    console.print(f"local broker on {broker.bootstrap_servers} (pid {started.pid}); `streamproc broker stop` ends it")
    return broker.bootstrap_servers


def demo() -> None:
    """Start or find a broker, apply topics/topics.yaml, and show the topics."""
    bootstrap = demo_broker()
    topics.apply(file=None, dry_run=False, bootstrap_servers=bootstrap)
    topics.list_(file=None, bootstrap_servers=bootstrap)
    console.print("next: the worker and task submission arrive with the core engine (issue 3)")
