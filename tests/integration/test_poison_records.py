"""Nothing a record carries crashes a worker (SPEC §11): one partition of poison between good tasks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import generate_latest

from streamproc import admin, provisioning
from streamproc.metrics import Metrics
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import worker_app
from tests.helpers import read_records, until
from tests.worker_app import app

# aiokafka's producer cannot write a header key that is not UTF-8, nor a record with neither key nor
# value, except through its pure-Python batch builder (AIOKAFKA_NO_EXTENSIONS), which takes a header
# key's bytes from its `encode()`. One batch: a good task, both of those, and another good task.
PRODUCE_BAD_BATCH = """
import asyncio, sys
from aiokafka import AIOKafkaProducer
from streamproc.settings import KafkaSettings

class NotUtf8(str):
    def encode(self, encoding="utf-8", errors="strict"):
        return b"trace\\xff"

async def main(topic):
    async with AIOKafkaProducer(**KafkaSettings.from_env().client_kwargs()) as producer:
        batch = producer.create_batch()
        for key, value, headers in [
            (None, b'{"label": "good-1"}', [("task-id", b"good-1")]),
            (None, None, [("task-id", b"no-key-no-value")]),
            (b"raw-key", b'{"label": "bad-key"}', [("task-id", b"bad-key"), (NotUtf8("trace"), b"x")]),
            (None, b'{"label": "good-2"}', [("task-id", b"good-2")]),
        ]:
            assert batch.append(timestamp=None, key=key, value=value, headers=[("task", b"flaky"), *headers])
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))

asyncio.run(main(sys.argv[1]))
"""
HUGE = json.dumps({"label": "huge", "permanent": True, "blob": "x" * 5_000_000}).encode()


def headers_of(record: object) -> dict[str, bytes]:
    return dict(record.headers)  # type: ignore[attr-defined]


async def test_poison_records_are_dead_lettered_while_the_partition_flows_and_the_worker_lives(
    kafka_settings: KafkaSettings, topology: Topology, bootstrap: str
) -> None:
    topology = topology.model_copy(
        update={
            "intake": topology.intake.model_copy(update={"partitions": 1, "configs": {"max.message.bytes": 8_000_000}}),
            "dlq": topology.dlq.model_copy(update={"configs": {"max.message.bytes": 100_000}}),
        }
    )
    await provisioning.apply(kafka_settings, topology)
    intake = topology.intake_topic("normal")
    worker_app.calls.clear()
    started_ms = time.time() * 1000
    producing = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PRODUCE_BAD_BATCH, intake, env=os.environ | {"AIOKAFKA_NO_EXTENSIONS": "1"}
    )
    assert await asyncio.wait_for(producing.wait(), 60) == 0
    flaky = [("task", b"flaky")]
    permanent = b'{"label": "%s", "permanent": true}'
    later: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (permanent % b"absurd-attempt", [("task-id", b"absurd-attempt"), ("attempt", b"1" + b"0" * 30)]),
        (
            permanent % b"absurd-numbers",
            [
                ("task-id", b"absurd-numbers"),
                ("enqueued-at", b"-1"),
                ("retry-at", b"32503680000000"),  # the year 3000, on an intake topic
                ("attempt", b"7" * 5000),
                ("original-partition", b"9" * 5000),
                ("original-offset", b"-5"),
            ],
        ),
        (b'{"label": "unknown-priority"}', [("task-id", b"unknown-priority"), ("priority", b"urgent")]),
        (HUGE, [("task-id", b"huge")]),
        (b'{"label": "good-last"}', [("task-id", b"good-last")]),
    ]
    async with AIOKafkaProducer(**kafka_settings.client_kwargs(), max_request_size=8_000_000) as plain:
        for value, headers in later:
            await plain.send_and_wait(intake, value, headers=[*flaky, *headers], partition=0)
    end = 4 + len(later)

    group = f"{topology.prefix}-g"
    metrics = Metrics(app.tasks, group)
    worker = Worker(app, kafka_settings, topology, WorkerConfig(group=group, commit_interval=0.1), hooks=[metrics])
    run = asyncio.create_task(worker.run())
    try:
        await until(lambda: any(call.label == "good-last" for call in worker_app.calls), what="the last good task")
        dead = await read_records(kafka_settings, topology.dlq_topic, 5)
        committed: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + 15
        while committed.get(TopicPartition(intake, 0)) != end:
            assert time.monotonic() < deadline, f"the commit did not reach the end: {committed}"
            committed = await admin.committed_offsets(kafka_settings, group)
        assert not run.done(), "the worker stopped"
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)

    ran = [call.label for call in worker_app.calls]
    assert [label for label in ran if label.startswith("good")] == ["good-1", "good-2", "good-last"]
    assert "bad-key" not in ran and "unknown-priority" in ran
    letters = {headers_of(r)["task-id"].decode(): r for r in dead}
    reasons = {task_id: headers_of(r)["dlq-reason"].decode() for task_id, r in letters.items()}
    assert reasons == {
        "no-key-no-value": "undecodable",
        "bad-key": "undecodable",
        "absurd-attempt": "permanent_error",
        "absurd-numbers": "permanent_error",
        "huge": "permanent_error",
    }
    nothing = letters["no-key-no-value"]
    assert (nothing.key, nothing.value) == (None, b"")
    assert headers_of(nothing)["error-message"] == b"the record has no value"

    bad_key = letters["bad-key"]
    assert (bad_key.key, bad_key.value) == (b"raw-key", b'{"label": "bad-key"}')  # raw, as it came
    assert headers_of(bad_key)["trace\\xff"] == b"x"  # the key escaped, so any client can read it
    assert b"trace\\xff is not UTF-8" in headers_of(bad_key)["error-message"]

    assert headers_of(letters["absurd-attempt"])["attempt"] == b"1"
    numbers = headers_of(letters["absurd-numbers"])
    assert (numbers["attempt"], numbers["original-partition"], numbers["original-offset"]) == (b"1", b"0", b"5")
    assert started_ms <= int(numbers["enqueued-at"]) <= time.time() * 1000  # the record's timestamp
    assert "retry-at" not in numbers

    huge = letters["huge"]
    assert huge.value == b"" and headers_of(huge)["value-dropped"] == str(len(HUGE)).encode()
    assert headers_of(huge)["error-type"] == b"PermanentError"
    assert b"so it was dropped" in headers_of(huge)["error-message"]

    exposition = generate_latest(metrics.registry).decode()
    assert 'priority="normal"' in exposition and "urgent" not in exposition
