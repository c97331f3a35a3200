"""Things that used to stall a partition or a whole worker (issue: reliability), against the real
broker: a tier record due far in the future, and a retry tier deleted while tasks fail or after its
offsets were committed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc import Producer, admin, provisioning
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import worker_app
from tests.helpers import running, until
from tests.worker_app import Call, app


@pytest.fixture(autouse=True)
def fresh_calls() -> Iterator[None]:
    worker_app.calls.clear()
    yield


def calls_of(label: str) -> list[Call]:
    return [call for call in worker_app.calls if call.label == label]


async def test_a_retry_at_far_ahead_waits_no_longer_than_its_tier_delay(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    """A tier record claiming year 3000 would pin its partition's commit for ever; it runs after the
    tier's delay from when it was written instead."""
    await provisioning.apply(kafka_settings, topology)
    tier = topology.tier_topic("1s")
    year_3000_ms = 32_503_680_000_000
    producer = AIOKafkaProducer(**kafka_settings.client_kwargs())
    await producer.start()
    try:
        headers = [("task", b"flaky"), ("attempt", b"2"), ("retry-at", str(year_3000_ms).encode())]
        sent = await (await producer.send(tier, json.dumps({"label": "future"}).encode(), partition=0, headers=headers))
    finally:
        await producer.stop()
    written = sent.timestamp / 1000  # the record's timestamp, which the clamp counts from
    group = f"{topology.prefix}-g"
    worker = Worker(app, kafka_settings, topology, WorkerConfig(group=group, commit_interval=0.1))
    async with running(worker):
        await until(lambda: bool(calls_of("future")), 30, "the far-future retry running")
        tp = TopicPartition(tier, 0)
        await until_committed(kafka_settings, group, tp, sent.offset + 1)
    [call] = calls_of("future")
    assert call.attempt == 2
    assert call.at >= written + 1.0 - 0.01  # not before its tier's delay (1 s)…
    assert call.at < written + 15  # …and nowhere near year 3000


async def until_committed(settings: KafkaSettings, group: str, tp: TopicPartition, offset: int) -> None:
    deadline = time.monotonic() + 30
    while (await admin.committed_offsets(settings, group)).get(tp, -1) < offset:
        assert time.monotonic() < deadline, f"{tp} not committed to {offset}"
        await asyncio.sleep(0.1)


async def test_a_deleted_tier_holds_no_slot_is_reported_and_is_picked_up_when_recreated(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    """Failing tasks whose tier topic is gone wait for it without their concurrency slots: later
    tasks keep running, the log names the missing topic, and once `topics apply` re-creates it the
    waiting retries are written and run (the worker consumes the new topic)."""
    await provisioning.apply(kafka_settings, topology)
    tiers = [spec.name for spec in topology.topics() if spec.role == "tier"]
    config = WorkerConfig(group=f"{topology.prefix}-g", concurrency=2, shutdown_timeout=2, commit_interval=0.1)
    worker = Worker(app, kafka_settings, topology, config)
    with structlog.testing.capture_logs() as logs:
        async with running(worker):
            async with admin.admin_client(kafka_settings) as client:
                await client.delete_topics(tiers)
            async with Producer(kafka_settings, topology) as producer:
                await producer.submit_many("flaky", [{"label": f"fail{i}", "fail_times": 1} for i in range(4)])
                await producer.submit_many("flaky", [{"label": f"ok{i}"} for i in range(20)])
            # Four failures wait for their tier, twice the concurrency: the other tasks still run.
            await until(lambda: all(calls_of(f"ok{i}") for i in range(20)), 60, "the good tasks running")
            missing = f"topic {tiers[0]} does not exist"
            await until(lambda: any(missing in str(e.get("event")) for e in logs), 90, "the missing topic reported")
            await provisioning.apply(kafka_settings, topology)
            retried = [f"fail{i}" for i in range(4)]
            await until(
                lambda: all(any(c.attempt == 2 for c in calls_of(label)) for label in retried),
                120,
                "the waiting retries written to the re-created tier and run",
            )


async def test_a_tier_deleted_after_its_offsets_were_committed_holds_neither_commits_nor_the_rebalance(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    """A deleted topic's partitions stay assigned until the group rebalances, and a commit naming
    one fails with a retriable error that aiokafka retries without end. The revocation's final
    commit of the deleted tier's partitions held the rebalance for ever: no task ran again."""
    await provisioning.apply(kafka_settings, topology)
    tiers = [spec.name for spec in topology.topics() if spec.role == "tier"]
    group = f"{topology.prefix}-g"
    config = WorkerConfig(group=group, concurrency=2, shutdown_timeout=2, commit_interval=0.1)
    worker = Worker(app, kafka_settings, topology, config)
    async with running(worker), Producer(kafka_settings, topology) as producer:
        await producer.submit_many("flaky", [{"label": f"fail{i}", "fail_times": 1} for i in range(4)])
        await until(lambda: all(calls_of(f"fail{i}")[1:] for i in range(4)), 60, "the retries run from the tier")
        ends = await admin.end_offsets(kafka_settings, [topology.tier_topic("1s")])
        for tp, end in ends.items():
            if end:
                await until_committed(kafka_settings, group, tp, end)  # its tracker holds a commit
        async with admin.admin_client(kafka_settings) as client:
            await admin.delete_topics(client, tiers)
        await producer.submit_many("flaky", [{"label": f"ok{i}"} for i in range(20)])
        await until(lambda: all(calls_of(f"ok{i}") for i in range(20)), 60, "the good tasks running")

        def reassigned_without_tiers() -> bool:
            owned = {tp.topic for tp in worker.partitions}
            return bool(owned) and not owned & set(tiers)

        await until(reassigned_without_tiers, 60, "the rebalance without the tiers")
        intake_ends = await admin.end_offsets(kafka_settings, [topology.intake_topic(p) for p in topology.priorities])
        for tp, end in intake_ends.items():
            if end:
                await until_committed(kafka_settings, group, tp, end)


async def test_a_worker_refuses_to_start_without_its_declared_topics(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    """The group would never settle on a subscription with missing topics: say so at once instead."""
    worker = Worker(app, kafka_settings, topology, WorkerConfig(group=f"{topology.prefix}-g"))
    with pytest.raises(StreamprocError, match=r"declared topics do not exist: .*run `streamproc topics apply`"):
        await asyncio.wait_for(worker.run(), 30)
