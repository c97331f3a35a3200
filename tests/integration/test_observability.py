"""Metrics, probes, lag and logs against the real broker (SPEC §6, §7)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from streamproc import Producer, provisioning
from streamproc.errors import StreamprocError
from streamproc.health import observed
from streamproc.scheduling import Ordering
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests import worker_app
from tests.helpers import run_cli, running, until
from tests.observing import get, observed_worker, scrape

REPO = Path(__file__).parents[2]
TASK_FIELDS = {"task", "task_id", "topic", "partition", "offset", "attempt", "duration_ms", "outcome"}


@pytest.fixture(autouse=True)
def fresh_journal() -> None:
    worker_app.calls.clear()
    worker_app.journal.clear()
    worker_app.gates.clear()


async def test_a_known_workload_shows_its_counts_under_the_spec_names(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    worker, metrics = observed_worker(kafka_settings, topology)
    async with Producer(kafka_settings, topology) as producer:
        await producer.submit_many("flaky", [{"label": f"ok-{i}"} for i in range(5)], priority="high")
        await producer.submit_many("flaky", [{"label": f"once-{i}", "fail_times": 1} for i in range(2)])
        await producer.submit_many("flaky", [{"label": f"bad-{i}", "permanent": True} for i in range(3)])
    async with observed([worker], metrics, 0, host="127.0.0.1") as port, running(worker):
        await until(lambda: len(worker_app.calls) == 5 + 2 * 2 + 3, what="every attempt")
        await until(lambda: worker.in_flight == 0, what="the last outcome routed")
        # Outcomes count once durable (their statuses acknowledged), which can come after the slot is free.
        await until(lambda: metrics.attempts()[0] == 5 + 2 * 2 + 3, what="every attempt's outcome durable")
        samples = await scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("streamproc_tasks_started_total", task="flaky", priority="high") == 5
    assert value("streamproc_tasks_started_total", task="flaky", priority="normal") == 2 * 2 + 3
    assert value("streamproc_tasks_succeeded_total", task="flaky") == 5 + 2
    assert value("streamproc_tasks_failed_total", task="flaky", error_type="RuntimeError") == 2
    assert value("streamproc_tasks_failed_total", task="flaky", error_type="PermanentError") == 3
    assert value("streamproc_tasks_retried_total", task="flaky", tier="1s") == 2
    assert value("streamproc_tasks_dead_lettered_total", task="flaky", reason="permanent_error") == 3
    for outcome, count in (("succeeded", 7), ("failed", 2), ("dead", 3)):
        assert value("streamproc_task_duration_seconds_count", task="flaky", outcome=outcome) == count
    waits = value("streamproc_task_wait_seconds_count", task="flaky", priority="high") + value(
        "streamproc_task_wait_seconds_count", task="flaky", priority="normal"
    )
    assert waits == 12
    assert value("streamproc_tasks_in_flight") == 0
    assert value("streamproc_circuit_open", task="fragile") == 0
    assert ("streamproc_circuit_open", (("task", "fragile"),)) in samples


async def test_readyz_waits_for_the_group_and_healthz_answers_while_running(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    worker, metrics = observed_worker(kafka_settings, topology)
    async with observed([worker], metrics, 0, host="127.0.0.1") as port:
        assert (await asyncio.to_thread(get, port, "/readyz"))[0] == 503
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        async with running(worker):
            deadline = time.monotonic() + 20
            while (status := (await asyncio.to_thread(get, port, "/readyz"))[0]) != 200:
                assert time.monotonic() < deadline, f"/readyz stayed {status} after the group was joined"
                await asyncio.sleep(0.1)
            assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, port, "/nope"))[0] == 404


async def test_a_busy_metrics_port_is_a_clear_error(kafka_settings: KafkaSettings, topology: Topology) -> None:
    worker, metrics = observed_worker(kafka_settings, topology)
    async with observed([worker], metrics, 0, host="127.0.0.1") as port:
        with pytest.raises(StreamprocError, match=f"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
            async with observed([worker], metrics, port, host="127.0.0.1"):
                pass


async def test_lag_command_and_gauge_show_the_backlog_and_keda_replicas(
    kafka_settings: KafkaSettings, topology: Topology, tmp_path: Path
) -> None:
    await provisioning.apply(kafka_settings, topology)
    backlog = 50  # on `normal`'s 3 partitions; nothing finishes while the gate is closed
    async with Producer(kafka_settings, topology) as producer:
        for i in range(backlog):
            await producer.submit("step", {"label": f"s{i}", "gate": "hold"}, key=f"k{i}")
    worker, metrics = observed_worker(kafka_settings, topology, concurrency=1, ordering=Ordering.PARTITION)
    intake = topology.intake_topic("normal")
    async with observed([worker], metrics, 0, host="127.0.0.1") as port, running(worker):

        async def gauge_total() -> float:
            samples = await scrape(port)
            return sum(
                v
                for (name, labels), v in samples.items()
                if name == "streamproc_consumer_lag" and ("topic", intake) in labels
            )

        deadline = time.monotonic() + 20
        while (total := await gauge_total()) != backlog:
            assert time.monotonic() < deadline, f"lag gauge shows {total}, not {backlog}"
            await asyncio.sleep(0.2)

        topics_file = tmp_path / "topics.yaml"
        topics_file.write_text(yaml.safe_dump(topology.model_dump()))
        env = {"STREAMPROC_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
        args = ("lag", "--group", f"{topology.prefix}-g", "--file", str(topics_file))
        # By hand, KEDA's formula: total lag 50 on 3 partitions. Threshold 10: 50 // 10 = 5 > 3, so the
        # lag is capped at 3 * 10 and ceil(30 / 10) = 3 replicas. Threshold 30: ceil(50 / 30) = 2.
        capped = await asyncio.to_thread(run_cli, *args, "--lag-threshold", "10", "--json", **env)
        uncapped = await asyncio.to_thread(run_cli, *args, "--lag-threshold", "30", **env)
        detailed = await asyncio.to_thread(run_cli, *args, "--lag-threshold", "30", "--by", "partition", **env)
        worker_app.gates["hold"].set()
    for result in (capped, uncapped, detailed):
        assert result.returncode == 0, result.stderr

    document = json.loads(capped.stdout)
    assert (document["group"], document["lag_threshold"], document["keda_replicas"]) == (f"{topology.prefix}-g", 10, 3)
    [totals] = [t for t in document["topics"] if t["topic"] == intake]
    assert (totals["partitions"], totals["lag"], totals["keda_trigger"], totals["keda_replicas"]) == (
        3,
        backlog,
        True,
        3,
    )
    rows = [p for p in document["partitions"] if p["topic"] == intake]
    assert sorted(p["partition"] for p in rows) == [0, 1, 2]
    assert sum(p["lag"] for p in rows) == backlog
    for row in rows:  # a partition never committed counts from its log start, where a new group begins
        start = row["start"] if row["committed"] is None else row["committed"]
        assert row["lag"] == row["end"] - start - row["finished_ahead"], row

    def totals_row(stdout: str) -> list[str]:
        """The intake topic's row of the totals table (topic, partitions, lag, KEDA replicas)."""
        [row] = [line for line in stdout.splitlines() if line.count("│") == 5 and f" {intake} " in line]
        return [cell.strip() for cell in row.split("│")[1:-1]]

    for result in (uncapped, detailed):
        assert totals_row(result.stdout) == [intake, "3", str(backlog), "2"]
        assert "KEDA would run 2 replica(s)" in " ".join(result.stdout.split())
    assert "finished ahead" not in uncapped.stdout  # --by topic (the default): no partition table
    # --by partition: the same totals and KEDA line first, then a row per partition.
    keda_line, partition_table = (detailed.stdout.index(word) for word in ("KEDA would run", "finished ahead"))
    assert keda_line < partition_table
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in detailed.stdout[partition_table:].splitlines()
        if line.count("│") == 7 and f" {intake} " in line
    ]
    assert sorted(row[1] for row in cells) == ["0", "1", "2"]
    assert sum(int(row[5]) for row in cells) == backlog


def test_every_log_line_of_a_worker_run_is_json_with_the_task_fields(
    kafka_settings: KafkaSettings, topology: Topology, tmp_path: Path
) -> None:
    asyncio.run(provisioning.apply(kafka_settings, topology))

    async def submit() -> None:
        async with Producer(kafka_settings, topology) as producer:
            await producer.submit_many("flaky", [{"label": "ok"}, {"label": "retry", "fail_times": 1}])
            await producer.submit("flaky", {"label": "dead", "permanent": True})

    asyncio.run(submit())
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "worker", "--app", "tests.worker_app:app", "--metrics-port", "0"],
        cwd=REPO,
        env=os.environ
        | {
            "STREAMPROC_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "STREAMPROC_TOPICS_FILE": str(topics_file),
            "STREAMPROC_GROUP": f"{topology.prefix}-g",
            "STREAMPROC_LOG_LEVEL": "debug",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while sum('"outcome": "succeeded"' in line for line in lines) < 2 or not any(
            "dead-lettered" in line for line in lines
        ):
            assert time.monotonic() < deadline, "the worker did not finish the three tasks:\n" + "".join(lines)
            line = worker.stderr.readline()
            assert line, "the worker exited early:\n" + "".join(lines)
            lines.append(line)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    assert worker.returncode == 0, "".join(lines)
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    task_events = [e for e in events if e.get("event", "").startswith("task ")]
    assert {e["event"] for e in task_events} >= {"task succeeded", "task retried", "task dead-lettered"}
    for event in task_events:
        assert set(event) >= TASK_FIELDS, event
    levels = {e["event"]: e["level"] for e in task_events}
    assert (levels["task succeeded"], levels["task retried"], levels["task dead-lettered"]) == (
        "debug",
        "warning",
        "error",
    )
    assert any(e.get("event") == "serving /metrics, /healthz and /readyz" for e in events)


async def test_lag_of_a_group_that_never_committed_says_so_and_exits_1(
    kafka_settings: KafkaSettings, topology: Topology, tmp_path: Path
) -> None:
    await provisioning.apply(kafka_settings, topology)
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    env = {"STREAMPROC_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
    result = await asyncio.to_thread(run_cli, "lag", "--group", "no-such-group", "--file", str(topics_file), **env)
    assert result.returncode == 1
    assert "'no-such-group' has no committed offset" in " ".join(result.stderr.split())
    assert len(result.stderr.strip().splitlines()) == 1
    # With --json: the document first (a new group's figures), then the same one error line.
    as_json = await asyncio.to_thread(
        run_cli, "lag", "--group", "no-such-group", "--json", "--file", str(topics_file), **env
    )
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["committed"] is False and document["group"] == "no-such-group"
    assert all(p["committed"] is None for p in document["partitions"]) and document["partitions"]
    assert "'no-such-group' has no committed offset" in " ".join(as_json.stderr.split())
    assert len(as_json.stderr.strip().splitlines()) == 1
