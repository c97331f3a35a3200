"""Every command in a directory without a topics file uses the built-in default topology (prefix
`tasks`, SPEC §2), as the producer does: `topics apply`, `worker`, `lag` and `dlq` all start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.admin import admin_client, topic_partitions
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import run_cli

REPO = Path(__file__).parents[2]
NO_FILE = {"STREAMPROC_TOPICS_FILE": ""}  # unset: no file named, and none in the empty cwd
CONSUMED = [spec.name for spec in Topology().topics() if spec.role in ("intake", "tier")]


async def _commit_at_end(settings: KafkaSettings, group: str) -> int:
    """Commit the end of every consumed default topic for `group`, so its worker finds nothing old
    (the shared broker's `tasks.*` may hold someone's tasks) and `lag` has offsets to read.
    Returns the number of partitions."""
    async with admin_client(settings) as client:
        found = await topic_partitions(client, CONSUMED)
    partitions = [TopicPartition(topic, p) for topic, numbers in found.items() for p in numbers]
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()
    return len(partitions)


def test_commands_without_a_topics_file_use_the_default_topology(
    kafka_settings: KafkaSettings, bootstrap: str, tmp_path: Path
) -> None:
    cwd = str(tmp_path)
    dry = run_cli("topics", "apply", "--dry-run", cwd=cwd, **NO_FILE)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would create tasks." in dry.stdout or "topics are up to date" in dry.stdout  # default names
    applied = run_cli("topics", "apply", cwd=cwd, **NO_FILE)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    listed = run_cli("topics", "list", cwd=cwd, **NO_FILE)
    assert listed.returncode == 0, listed.stderr
    assert all(spec.name in listed.stdout for spec in Topology().topics())
    assert not list(tmp_path.iterdir())  # no topics file was needed, and none was written

    group = f"default-{uuid.uuid4().hex[:10]}"
    partitions = asyncio.run(_commit_at_end(kafka_settings, group))
    assert partitions == 3 * 12 + 3 * 6  # the default intake and tier partitions
    log_path = tmp_path / "worker.log"
    command = [sys.executable, "-m", "streamproc", "worker", "--app", "tests.worker_app:app", "--group", group]
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [*command, "--metrics-port", "0"],
            cwd=cwd,
            env=os.environ | NO_FILE | {"PYTHONPATH": str(REPO), "STREAMPROC_TEST_JOURNAL": str(tmp_path / "j")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "partitions assigned" not in log_path.read_text():
                assert worker.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the worker was not assigned partitions within 60s"
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, log_path.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assigned = log_path.read_text()
    assert "no such topics file" not in assigned
    assert f'"partitions": {partitions}' in assigned or f"partitions={partitions}" in assigned, assigned

    lag = run_cli("lag", "--group", group, "--json", cwd=cwd, **NO_FILE)
    assert lag.returncode == 0, lag.stdout + lag.stderr
    assert "tasks.high" in lag.stdout
    dlq = run_cli("dlq", "list", "--limit", "1", cwd=cwd, **NO_FILE)
    assert dlq.returncode == 0, dlq.stdout + dlq.stderr
    assert "no such topics file" not in dlq.stdout + dlq.stderr
