"""Records as other Kafka clients write them: compressed with each codec Kafka has, and in transactions
(SPEC §5: nothing a record carries crashes a worker or stalls a partition)."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc import admin, provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import worker_app
from tests.helpers import until
from tests.worker_app import app

CODECS = ("gzip", "snappy", "lz4", "zstd")
FLAKY = [("task", b"flaky")]


def flaky(label: str) -> bytes:
    return json.dumps({"label": label}).encode()


async def test_compressed_records_run_and_an_aborted_transaction_never_does(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    """One partition holds a record compressed with each codec, an aborted transaction of three tasks
    and a committed one of two, which ends the log with its marker. The worker runs the compressed
    and committed tasks, none of the aborted, and commits past the last marker: no lag is left."""
    topology = topology.model_copy(update={"intake": topology.intake.model_copy(update={"partitions": 1})})
    await provisioning.apply(kafka_settings, topology)
    intake = topology.intake_topic("normal")
    tp = TopicPartition(intake, 0)
    for codec in CODECS:
        async with AIOKafkaProducer(**kafka_settings.client_kwargs(), compression_type=codec) as compressing:
            await compressing.send_and_wait(intake, flaky(f"compressed-{codec}"), headers=FLAKY, partition=0)
    transactional = AIOKafkaProducer(**kafka_settings.client_kwargs(), transactional_id=f"{topology.prefix}-tx")
    await transactional.start()
    try:
        await transactional.begin_transaction()
        for i in range(3):
            await transactional.send_and_wait(intake, flaky(f"aborted-{i}"), headers=FLAKY, partition=0)
        await transactional.abort_transaction()
        async with transactional.transaction():
            for i in range(2):
                await transactional.send_and_wait(intake, flaky(f"committed-{i}"), headers=FLAKY, partition=0)
    finally:
        await transactional.stop()
    end = (await admin.end_offsets(kafka_settings, [intake]))[tp]
    assert end == 4 + 3 + 1 + 2 + 1, "four records, three aborted and their marker, two committed and theirs"

    worker_app.calls.clear()
    group = f"{topology.prefix}-g"
    worker = Worker(app, kafka_settings, topology, WorkerConfig(group=group, commit_interval=0.1))
    run = asyncio.create_task(worker.run())
    try:
        expected = {*(f"compressed-{codec}" for codec in CODECS), "committed-0", "committed-1"}
        await until(lambda: expected <= {call.label for call in worker_app.calls}, what="the readable tasks")
        committed: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + 15
        while committed.get(tp) != end:
            assert time.monotonic() < deadline, f"the commit did not pass the last marker: {committed} of {end}"
            assert not run.done(), "the worker stopped"
            committed = await admin.committed_offsets(kafka_settings, group)
        assert (await worker.lag())[tp] == 0
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
    assert sorted(call.label for call in worker_app.calls) == sorted(expected)
