"""Batch handlers against the real broker (SPEC §15): one handler call per batch, key order kept,
per-item results, and per-item failures through the retry tiers and the DLQ."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

from aiokafka import TopicPartition
from pydantic import BaseModel

from streamproc import App, Batch, BatchFailed, PermanentError, Producer, TaskContext, admin, provisioning
from streamproc.envelope import Envelope
from streamproc.execution import Outcome
from streamproc.routing import Disposition, Routed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests.helpers import read_records, running, until


class Reading(BaseModel):
    sensor: str
    seq: int
    fail: str = ""  # "once": fails its first attempt; "never": a permanent error


app = App()
calls: list[list[tuple[str, int, int]]] = []  # each call: (sensor, seq, attempt) per item


@app.task("store_readings", batch=Batch(max_size=50, max_wait=0.2))
async def store_readings(items: list[Reading], contexts: list[TaskContext]) -> list[int]:
    calls.append([(item.sensor, item.seq, ctx.attempt) for item, ctx in zip(items, contexts, strict=True)])
    failures: dict[int, BaseException] = {}
    for i, (item, ctx) in enumerate(zip(items, contexts, strict=True)):
        if item.fail == "once" and ctx.attempt == 1:
            failures[i] = RuntimeError(f"{item.sensor}/{item.seq} not stored yet")
        elif item.fail == "never":
            failures[i] = PermanentError(f"{item.sensor}/{item.seq} is refused")
    if failures:
        raise BatchFailed(failures)
    return [item.seq * 2 for item in items]


async def committed_intake(
    settings: KafkaSettings, group: str, ends: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    committed = await admin.committed_offsets(settings, group)
    return {tp: committed.get(tp, 0) for tp in ends}


class Finished:
    """Each task id's dispositions, in order."""

    def __init__(self) -> None:
        self.of: dict[str, list[Disposition]] = defaultdict(list)

    def task_started(self, envelope: Envelope) -> None:
        pass

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        self.of[envelope.task_id].append(routed.disposition)

    def settled(self, ids: list[str]) -> bool:
        final = (Disposition.SUCCEEDED, Disposition.DEAD_LETTERED)
        return all(self.of[i] and self.of[i][-1] in final for i in ids)


async def test_batches_keep_key_order_and_route_each_item_on_its_own(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    calls.clear()
    await provisioning.apply(kafka_settings, topology)
    sensors, per_sensor = 20, 30
    async with Producer(kafka_settings, topology) as producer:
        handles = {}
        for seq in range(per_sensor):
            for s in range(sensors):
                fail = "once" if (s, seq) == (3, 7) else "never" if (s, seq) == (5, 11) else ""
                payload = {"sensor": f"s{s}", "seq": seq, "fail": fail}
                handles[(f"s{s}", seq)] = await producer.submit("store_readings", payload, key=f"s{s}")
        ids = [h.id for h in handles.values()]
        finished = Finished()
        config = WorkerConfig(group=f"{topology.prefix}-g", concurrency=4, commit_interval=0.1)
        async with running(Worker(app, kafka_settings, topology, config, hooks=[finished])) as worker:
            await until(lambda: finished.settled(ids), 60, "every reading stored or dead")
            assert await handles[("s1", 4)].result(timeout=10) == 8
            assert await handles[("s3", 7)].result(timeout=10) == 14  # on its second attempt

            sizes = [len(call) for call in calls]
            print(
                f"\n{len(calls)} batch calls for {len(ids)} readings; "
                f"sizes: max {max(sizes)}, mean {sum(sizes) / len(sizes):.1f}"
            )
            # One slot per batch: batches of many items, never two readings of one sensor (key lanes).
            assert max(sizes) > 1 and all(len({sensor for sensor, _, _ in call}) == len(call) for call in calls)
            first_runs = [(sensor, seq) for call in calls for sensor, seq, attempt in call if attempt == 1]
            for s in range(sensors):
                seqs = [seq for sensor, seq in first_runs if sensor == f"s{s}"]
                assert seqs == list(range(per_sensor)), f"s{s} ran out of key order: {seqs}"
            assert Counter(d for dispositions in finished.of.values() for d in dispositions) == {
                Disposition.SUCCEEDED: sensors * per_sensor - 1,
                Disposition.RETRIED: 1,
                Disposition.DEAD_LETTERED: 1,
            }
            [dead] = await read_records(kafka_settings, topology.dlq_topic, 1)
            assert dict(dead.headers)["dlq-reason"] == b"permanent_error"
            assert dict(dead.headers)["task-id"] == handles[("s5", 11)].id.encode()

            # Every offset finished: the group's commits reach the end of each intake partition.
            intake = [topology.intake_topic(p) for p in topology.priorities]
            ends = await admin.end_offsets(kafka_settings, intake)
            deadline = time.monotonic() + 30
            while (committed := await committed_intake(kafka_settings, config.group, ends)) != ends:
                assert time.monotonic() < deadline, f"commits {committed} short of the ends {ends}"
                await asyncio.sleep(0.1)
            assert worker.in_flight == 0


async def test_readings_without_a_key_fill_batches_to_max_size(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    calls.clear()
    await provisioning.apply(kafka_settings, topology)
    async with Producer(kafka_settings, topology) as producer:
        handles = await producer.submit_many("store_readings", [{"sensor": "any", "seq": n} for n in range(400)])
    finished = Finished()
    config = WorkerConfig(group=f"{topology.prefix}-g", concurrency=2)
    async with running(Worker(app, kafka_settings, topology, config, hooks=[finished])):
        await until(lambda: finished.settled([h.id for h in handles]), 60, "every reading stored")
    assert max(len(call) for call in calls) == 50  # Batch.max_size
    assert sorted(seq for call in calls for _, seq, _ in call) == list(range(400))
