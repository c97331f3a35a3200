"""faust-streaming consuming the no-op backlog: an agent iterating the stream of JSON-decoded
values, doing nothing with each. At-least-once: faust's `processing_guarantee="at_least_once"`,
offsets of acked events committed every `broker_commit_every` events or `broker_commit_interval`
seconds (faust's defaults: 10,000 and 2.8 s); no leader topic, no web server, nothing created."""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import faust  # type: ignore[import-not-found]

# The sibling module of this directory (the script's own is on sys.path); mypy sees none.
from protocol import Counter, finish, report_progress, spec  # type: ignore[import-not-found]

counter = Counter()


def main(config: dict[str, Any], datadir: str) -> None:
    app = faust.App(
        config["group"],  # faust's consumer group is its app id
        broker=[f"kafka://{server}" for server in config["bootstrap_servers"].split(",")],
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        web_enabled=False,
        store="memory://",
        datadir=datadir,  # faust's default is <app id>-data in the working directory
    )
    topic = app.topic(config["topic"], value_serializer="json")

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def noop(stream: AsyncIterator[Any]) -> None:
        async for _ in stream:
            counter.done += 1

    progress = report_progress(counter)
    worker = faust.Worker(app, loglevel="error", quiet=True, redirect_stdouts=False)
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()  # stops on SIGTERM
    finish(counter, progress)
    logging.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="faust-peer-") as datadir:
        main(spec(), datadir)
