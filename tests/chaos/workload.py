"""The workload side of a run: its topics, a paced submitter, and what the broker says at the end."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc import admin
from streamproc.envelope import TASK_ID, task_headers
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

KEYS = 50  # a keyed workload draws its keys from this many


def chaos_topology() -> Topology:
    """Topics of one run's own: 6 partitions per priority, two short tiers, one DLQ partition."""
    return Topology.model_validate(
        {
            "prefix": f"chaos-{uuid.uuid4().hex[:8]}",
            "intake": {"partitions": 6},
            "tiers": {"delays": ["1s", "2s"], "partitions": 2},
            "dlq": {"partitions": 1},
        }
    )


@dataclass(frozen=True)
class Planned:
    task_id: str
    topic: str
    key: bytes | None
    value: bytes
    priority: str


class Submitter:
    """Submits `count` tasks at an even pace over `duration_s`, so faults strike a flowing system.

    Ids count as submitted once the broker acknowledged them. A send that failed (say, during a
    broker kill) is sent again, same id, by a new producer; such ids are in `resent`, since the
    first send may have landed too and a second run of them would not be the worker's duplicate.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topology: Topology,
        count: int,
        *,
        keyed: bool,
        duration_s: float,
        max_sleep_ms: int,
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.count = count
        self.keyed = keyed
        self.duration_s = duration_s
        self.max_sleep_ms = max_sleep_ms
        self.seed = seed
        self.positions: dict[str, tuple[TopicPartition, int]] = {}  # acknowledged: id → (partition, offset)
        self.resent: set[str] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="chaos-submitter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self, within_s: float = 60.0) -> None:
        """Send no more (a run that failed must not leave a thread writing to the broker)."""
        self._stop.set()
        self._thread.join(within_s)

    def _main(self) -> None:
        try:
            asyncio.run(self._submit())
        except BaseException as exc:  # the run reports it and fails loudly
            self.error = exc

    def _plan(self) -> list[Planned]:
        rng = random.Random(self.seed)
        plan = []
        for _ in range(self.count):
            priority = rng.choice(self.topology.priorities)
            key = f"key-{rng.randrange(KEYS)}".encode() if self.keyed else None
            value = json.dumps({"sleep_ms": rng.randint(0, self.max_sleep_ms)}).encode()
            plan.append(Planned(str(uuid.uuid4()), self.topology.intake_topic(priority), key, value, priority))
        return plan

    async def _submit(self) -> None:
        plan = self._plan()
        failed = await self._send(plan, paced=True)
        for _ in range(5):
            if not failed or self._stop.is_set():
                return
            self.resent.update(p.task_id for p in failed)
            failed = await self._send(failed, paced=False)
        raise RuntimeError(f"{len(failed)} tasks could not be submitted after 5 tries")

    async def _send(self, plan: list[Planned], paced: bool) -> list[Planned]:
        """Send `plan` with one idempotent producer; the ones whose delivery failed."""
        producer = AIOKafkaProducer(**self.settings.client_kwargs(), acks="all", enable_idempotence=True)
        await producer.start()
        deliveries: list[tuple[Planned, asyncio.Future[Any]]] = []
        try:
            begin = time.monotonic()
            for i, task in enumerate(plan):
                if self._stop.is_set():
                    break
                if paced and (ahead := begin + i * self.duration_s / len(plan) - time.monotonic()) > 0.005:
                    await asyncio.sleep(ahead)  # the pace of the experiment, not a synchronisation
                headers = task_headers("chaos", task.task_id, time.time_ns() // 1_000_000, task.priority)
                deliveries.append((task, await producer.send(task.topic, task.value, key=task.key, headers=headers)))
            failed = []
            for task, delivery in deliveries:
                try:
                    metadata = await delivery
                except KafkaError:
                    failed.append(task)
                    continue
                tp = TopicPartition(metadata.topic, metadata.partition)
                self.positions[task.task_id] = (tp, metadata.offset)
            return failed
        finally:
            await producer.stop()


def watched_topics(topology: Topology) -> list[str]:
    """The topics whose lag must reach 0: intake and tiers."""
    return [spec.name for spec in topology.topics() if spec.role in ("intake", "tier")]


async def lagging(settings: KafkaSettings, topology: Topology, group: str) -> dict[TopicPartition, tuple[int, int]]:
    """(committed, end) of every intake or tier partition where the group has not committed the end."""
    ends = await admin.end_offsets(settings, watched_topics(topology))
    committed = await admin.committed_offsets(settings, group)
    return {tp: (committed.get(tp, 0), end) for tp, end in ends.items() if committed.get(tp, 0) != end}


async def dead_lettered(settings: KafkaSettings, topology: Topology) -> set[str]:
    """Task ids of every record in the DLQ (read without a group, up to the end offsets of now)."""
    ends = await admin.end_offsets(settings, [topology.dlq_topic])
    if not any(ends.values()):
        return set()
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    ids: set[str] = set()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    ids.update(dict(r.headers).get(TASK_ID, b"").decode() for r in records)
    finally:
        await consumer.stop()
    return ids


async def delete_topics(settings: KafkaSettings, topology: Topology) -> None:
    """A run's topics go with it, so repeated runs do not fill the broker's disk."""
    async with admin.admin_client(settings) as client:
        await client.delete_topics([spec.name for spec in topology.managed_topics()])
