"""Small helpers shared by tests."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamproc.settings import KafkaSettings
from streamproc.worker import Worker

CONTAINERS_CONF = Path(__file__).parents[1] / ".tools" / "image" / "containers.conf"


def podman_as_make_image_runs_it() -> tuple[str, dict[str, str]]:
    """podman's path and the environment `make image` runs it with (the project's containers.conf: runc
    and explicit ulimits); fails with the way to get them when either is missing."""
    command = shutil.which("podman")
    assert command, "podman is not installed: `make image` installs it (with runc and debootstrap)"
    assert CONTAINERS_CONF.is_file(), f"{CONTAINERS_CONF} is missing: run `make image` first"
    return command, os.environ | {"CONTAINERS_CONF": str(CONTAINERS_CONF)}


def wait_for(condition: Callable[[], bool], within_s: float, what: str) -> None:
    """Polls `condition` until it holds; fails the test with `what` once `within_s` has passed."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within_s} s waiting for {what}"
        time.sleep(0.05)


def worker_command(app: str, group: str, topics_file: str, *extra: str) -> list[str]:
    """The command line of a `streamproc worker` subprocess on a free metrics port."""
    return [
        sys.executable,
        "-m",
        "streamproc",
        "worker",
        "--app",
        app,
        "--group",
        group,
        "--file",
        topics_file,
        "--metrics-port",
        "0",
        *extra,
    ]


class WorkerProcesses:
    """`streamproc worker` subprocesses of one app and group, each logging to `logs`/worker-N.log, with
    the journal path tests/*_app.py handlers write to; `close` kills the ones still running."""

    def __init__(self, app: str, group: str, topics_file: Path, logs: Path, journal: Path) -> None:
        self.app, self.group, self.topics_file, self.logs, self.journal = app, group, topics_file, logs, journal
        self.started: list[subprocess.Popen[bytes]] = []

    def log_of(self, n: int) -> Path:
        return self.logs / f"worker-{n}.log"

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        with self.log_of(len(self.started)).open("wb") as log:
            process = subprocess.Popen(
                worker_command(self.app, self.group, str(self.topics_file), *extra),
                env=os.environ | {"STREAMPROC_TEST_JOURNAL": str(self.journal)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_cli(*args: str, cwd: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `streamproc ARGS` in a child process, as a user would, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        cwd=cwd,
        env=os.environ | {"COLUMNS": "200"} | env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def read_records(settings: KafkaSettings, topic: str, expected: int, within_s: float = 30.0) -> list[Any]:
    """Exactly `expected` records of `topic`, from the beginning; fails if they do not all come."""
    consumer = AIOKafkaConsumer(
        topic,
        **settings.client_kwargs(),
        group_id=f"reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + within_s
        while len(records) < expected:
            assert time.monotonic() < deadline, f"{len(records)} of {expected} records on {topic} within {within_s}s"
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += batch
    finally:
        await consumer.stop()
    assert len(records) == expected
    return records


async def until(condition: Callable[[], bool], within_s: float = 30.0, what: str = "condition") -> None:
    """Poll `condition` every 20 ms until it holds; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.joined.wait(), 30)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
