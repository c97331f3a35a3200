"""The live monitor against the real broker (SPEC §14): a worker's reports and the group's offsets make
the overview; actions need the token; `streamproc top` shows the live figures in a pseudo-terminal.
The browser tests (tests/browser) drive the same server through its UI."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from streamproc import Producer, provisioning
from streamproc.bench.web_view import following, serving
from streamproc.lifecycle.status import TaskState
from streamproc.metrics import Metrics
from streamproc.monitor.board import WorkerState
from streamproc.monitor.live import LiveMonitor, Overview
from streamproc.monitor.reporter import reporting
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.web.dlq_view import DlqView
from streamproc.web.monitor_api import Monitoring
from streamproc.web.monitor_app import create_monitor_app
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import lifecycle_app
from tests.helpers import running, worker_command

TASKS = 40


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    await provisioning.apply(kafka_settings, topology)
    return topology


@asynccontextmanager
async def watching(settings: KafkaSettings, topology: Topology, group: str) -> AsyncIterator[LiveMonitor]:
    live = LiveMonitor(settings, topology, group, lag_threshold=10)
    run = asyncio.create_task(live.run())
    try:
        yield live
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def until_overview(
    live: LiveMonitor, condition: Callable[[Overview], bool], what: str, within_s: float = 30
) -> Overview:
    """The first overview for which `condition` holds, failing after `within_s`."""
    overview = live.overview
    async with asyncio.timeout(within_s):
        while not condition(overview):
            overview = await live.next_overview(overview)
    return overview


async def test_a_worker_s_reports_and_the_group_s_offsets_make_the_overview(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    group = f"{applied.prefix}-g"
    normal = applied.intake_topic("normal")
    metrics = Metrics(lifecycle_app.app.tasks, group)
    worker = Worker(lifecycle_app.app, kafka_settings, applied, WorkerConfig(group=group), hooks=[metrics])
    async with watching(kafka_settings, applied, group) as live, Producer(kafka_settings, applied) as producer:
        await producer.submit_many(lifecycle_app.charge, [{"label": f"m{i}"} for i in range(TASKS)])
        before = await until_overview(live, lambda o: o.pending == TASKS, "the backlog counted from offsets")
        assert before.workers_alive == 0 and before.broker_error is None
        assert before.keda_replicas == 3  # 40 over lagThreshold 10, capped at the 3 intake partitions
        async with running(worker), reporting(kafka_settings, applied.monitor_topic, worker, metrics) as reporter:

            def drained(o: Overview) -> bool:
                rows = [w for w in o.workers if w.report.worker == reporter.id]
                return o.pending == 0 and bool(rows) and rows[0].report.finished == TASKS

            after = await until_overview(live, drained, "the worker's report of the drained backlog")
            (row,) = after.workers
            assert row.state is WorkerState.ALIVE and after.workers_alive == 1
            owned = {topic: len(numbers) for topic, numbers in row.report.partitions.items()}
            assert owned == {
                spec.name: spec.partitions for spec in applied.topics() if spec.name in live_topics(applied)
            }
            (queue,) = [q for q in after.queues if q.topic == normal]
            assert queue.wait_p95_s is not None and queue.wait_p95_s > 0  # from the report's wait histogram
            assert queue.out_per_s > 0 and after.keda_replicas == 0
        stopped = await until_overview(
            live, lambda o: o.workers[0].state is WorkerState.STOPPED, "the last report, marked stopped"
        )
        assert stopped.workers_alive == 0


def live_topics(topology: Topology) -> set[str]:
    return set(topology.consumed_topics())


async def test_actions_need_the_token_and_a_cancel_from_the_api_keeps_a_task_from_running(
    kafka_settings: KafkaSettings, applied: Topology, tmp_path: Path
) -> None:
    group = f"{applied.prefix}-g"
    async with (
        Producer(kafka_settings, applied) as producer,
        following(kafka_settings, applied, tmp_path / "status.sqlite") as view,
    ):
        handle = await producer.submit(lifecycle_app.charge, {"label": "cancelled-by-api"})
        live, dead = LiveMonitor(kafka_settings, applied, group, 10), DlqView(kafka_settings, applied)
        read_only = create_monitor_app(view, Monitoring(kafka_settings, applied, live, dead, producer, None))
        guarded = create_monitor_app(view, Monitoring(kafka_settings, applied, live, dead, producer, "s3cret"))
        cancel = f"/api/tasks/{handle.id}/cancel"
        async with serving(read_only) as url, httpx.AsyncClient(base_url=url) as client:
            refused = await client.post(cancel, headers={"Authorization": "Bearer s3cret"})
            assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
            assert (await client.get("/api/config")).json()["actions"] is False
        async with serving(guarded) as url, httpx.AsyncClient(base_url=url) as client:
            for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
                assert (await client.post(cancel, headers=wrong)).status_code == 401
            assert (await producer.status(handle.id)).state is TaskState.PENDING  # nothing was done
            done = await client.post(cancel, headers={"Authorization": "Bearer s3cret"})
            assert done.status_code == 200, done.text
            assert done.json() == {"id": handle.id, "before": "pending", "cancelled": True}
        worker = Worker(lifecycle_app.app, kafka_settings, applied, WorkerConfig(group=group, commit_interval=0.1))
        async with running(worker):
            after = await producer.submit(lifecycle_app.charge, {"label": "after-the-cancel"})
            assert (await after.result(timeout=30)).label == "after-the-cancel"
        assert (await producer.status(handle.id)).state is TaskState.CANCELLED
    assert lifecycle_app.runs["cancelled-by-api"] == 0


def test_top_shows_the_live_figures_in_a_pseudo_terminal(
    kafka_settings: KafkaSettings, applied: Topology, tmp_path: Path
) -> None:
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(applied.model_dump(mode="json")))
    group = f"{applied.prefix}-g"
    env = os.environ | {"STREAMPROC_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
    worker = subprocess.Popen(
        worker_command("tests.worker_app:app", group, str(topics_file)), env=env, stdout=subprocess.DEVNULL
    )
    primary, secondary = pty.openpty()
    top = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "top", "--group", group, "--file", str(topics_file)],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env | {"COLUMNS": "160", "LINES": "60", "TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        wanted = [str(worker.pid).encode(), b"alive", applied.intake_topic("normal").encode(), b"KEDA replicas"]
        while not all(part in screen for part in wanted):
            assert time.monotonic() < deadline, f"top never showed {wanted}: {screen[-2000:]!r}"
            assert top.poll() is None, f"top exited {top.returncode}: {screen[-2000:]!r}"
            if select.select([primary], [], [], 1.0)[0]:
                screen += os.read(primary, 65536)
        top.send_signal(signal.SIGINT)
        assert top.wait(timeout=15) == 0
    finally:
        for process in (top, worker):
            if process.poll() is None:
                process.kill()
                process.wait()
        os.close(primary)
    assert b"Traceback" not in screen
