"""The worker against the real broker, in-process: commit-after-success, priority, ordering, routes."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc import Producer, admin, provisioning
from streamproc.scheduling import Ordering
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import worker_app
from tests.helpers import running, until
from tests.worker_app import app


@pytest.fixture(autouse=True)
def fresh_journal() -> None:
    worker_app.journal.clear()
    worker_app.gates.clear()


async def committed(settings: KafkaSettings, group: str, tp: TopicPartition) -> int | None:
    return (await admin.committed_offsets(settings, group)).get(tp)


def labels(event: str) -> list[str]:
    return [label for e, label, _ in worker_app.journal if e == event]


async def test_slow_task_holds_the_commit_until_it_finishes(
    kafka_settings: KafkaSettings, one_partition: Topology
) -> None:
    group = f"{one_partition.prefix}-g"
    config = WorkerConfig(group=group, ordering=Ordering.UNORDERED, commit_interval=0.05)
    async with Producer(kafka_settings, one_partition) as producer:
        await producer.submit("step", {"label": "slow", "gate": "slow"}, priority="normal")
        await producer.submit_many("step", [{"label": f"fast{i}"} for i in range(9)], priority="normal")
    tp = TopicPartition(one_partition.intake_topic("normal"), 0)

    async with running(Worker(app, kafka_settings, one_partition, config)):
        await until(lambda: len(labels("end")) == 9, what="the nine fast tasks")
        # For 20 commit intervals, the commit stays at the slow task's offset 0.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert await committed(kafka_settings, group, tp) in (None, 0)
        worker_app.gates["slow"].set()
        await until(lambda: "slow" in labels("end"), what="the slow task")
        commits: list[int | None] = []

        async def moved() -> bool:
            commits.append(await committed(kafka_settings, group, tp))
            return commits[-1] == 10

        deadline = time.monotonic() + 10
        while not await moved():
            assert time.monotonic() < deadline, f"commit did not pass the finished tasks: {commits[-5:]}"
    assert await committed(kafka_settings, group, tp) == 10


async def test_high_priority_starts_before_a_waiting_low_backlog(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    config = WorkerConfig(group=f"{topology.prefix}-g", concurrency=1, ordering=Ordering.UNORDERED)
    async with (
        Producer(kafka_settings, topology) as producer,
        running(Worker(app, kafka_settings, topology, config)) as worker,
    ):
        # The one slot is busy and 40 low tasks wait in the worker…
        await producer.submit("step", {"label": "first", "gate": "first"}, priority="low")
        await until(lambda: labels("start") == ["first"], what="the first task")
        await producer.submit_many("step", [{"label": f"low{i}"} for i in range(40)], priority="low")
        await until(lambda: worker.waiting == 40, what="the low backlog")
        # …when normal and high tasks arrive behind them.
        await producer.submit_many("step", [{"label": f"normal{i}"} for i in range(5)], priority="normal")
        await producer.submit_many("step", [{"label": f"high{i}"} for i in range(5)], priority="high")
        await until(lambda: worker.waiting == 50, what="the high and normal tasks fetched")
        worker_app.gates["first"].set()
        await until(lambda: len(labels("end")) == 51, what="every task")
    started = labels("start")
    assert [s[:-1] for s in started[1:11]] == ["high"] * 5 + ["normal"] * 5, started
    assert all(s.startswith("low") for s in started[11:])


async def test_a_reserved_slot_starts_a_high_task_on_a_worker_saturated_by_low_ones(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    config = WorkerConfig(group=f"{topology.prefix}-g", concurrency=8, ordering=Ordering.UNORDERED)
    assert config.top_priority_slots == 1
    async with (
        Producer(kafka_settings, topology) as producer,
        running(Worker(app, kafka_settings, topology, config)) as worker,
    ):
        await producer.submit_many("step", [{"label": f"low{i}", "gate": "low"} for i in range(20)], priority="low")
        await until(lambda: worker.in_flight == 7 and worker.waiting == 13, what="7 low tasks holding 7 slots")
        await producer.submit_many("step", [{"label": "normal", "gate": "low"}], priority="normal")
        await producer.submit("step", {"label": "high"}, priority="high")
        await until(lambda: "high" in labels("end"), what="the high task, in the reserved slot")
        assert "normal" not in labels("start")  # the reserved slot is the top priority's only
        assert worker.in_flight == 7
        worker_app.gates["low"].set()
        await until(lambda: len(labels("end")) == 22, what="every task")


async def test_key_ordering_serialises_a_key_and_runs_keys_concurrently(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    config = WorkerConfig(group=f"{topology.prefix}-g", concurrency=16, ordering=Ordering.KEY)
    keys = [f"k{i}" for i in range(4)]
    async with Producer(kafka_settings, topology) as producer:
        for seq in range(8):
            for key in keys:
                await producer.submit("step", {"label": f"{key}:{seq}", "sleep_ms": 15}, key=key)
    async with running(Worker(app, kafka_settings, topology, config)):
        await until(lambda: len(labels("end")) == 32, what="every task")

    spans: dict[str, list[tuple[int, float, float]]] = {key: [] for key in keys}
    starts = {label: t for e, label, t in worker_app.journal if e == "start"}
    for e, label, t in worker_app.journal:
        if e == "end":
            key, number = label.split(":")
            spans[key].append((int(number), starts[label], t))
    for key, key_spans in spans.items():
        by_start = sorted(key_spans, key=lambda s: s[1])
        assert [seq for seq, _, _ in by_start] == list(range(8)), f"{key} started out of offset order"
        assert all(prev[2] <= nxt[1] for prev, nxt in itertools.pairwise(by_start)), f"{key} overlapped"
    all_spans = sorted((s, e) for key_spans in spans.values() for _, s, e in key_spans)
    assert any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(all_spans)), (
        "different keys never ran concurrently"
    )


async def test_plain_record_with_only_a_task_header_is_processed(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    async with AIOKafkaProducer(**kafka_settings.client_kwargs()) as plain:
        await plain.send_and_wait(
            topology.intake_topic("normal"), json.dumps({"label": "plain"}).encode(), headers=[("task", b"step")]
        )
    async with running(Worker(app, kafka_settings, topology, WorkerConfig(group=f"{topology.prefix}-g"))):
        await until(lambda: labels("end") == ["plain"], what="the plain record")


async def test_route_turns_a_headerless_event_into_a_task(kafka_settings: KafkaSettings, topology: Topology) -> None:
    events = f"{topology.prefix}.orders"
    routed = Topology.model_validate(
        topology.model_dump() | {"routes": [{"topic": events, "task": "step", "priority": "high", "partitions": 2}]}
    )
    await provisioning.apply(kafka_settings, routed)
    async with AIOKafkaProducer(**kafka_settings.client_kwargs()) as plain:
        await plain.send_and_wait(events, b'{"label": "order-1"}', key=b"o1")
    async with running(Worker(app, kafka_settings, routed, WorkerConfig(group=f"{topology.prefix}-g"))):
        await until(lambda: labels("end") == ["order-1"], what="the routed event")
