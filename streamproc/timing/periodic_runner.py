"""Periodic tasks (SPEC §13), the Kafka side: every worker process fires the schedules it owns.

There is no scheduler process to keep alive and no lock. A schedule's owner is whichever worker
process owns, in the workers' consumer group, intake partition `stable_hash(name) % partitions` of
the schedule's priority topic (`periodic.owner_partition`); the group already guarantees one owner
per partition and moves it when a process dies. Ownership is checked every `RECHECK_S`.

Firing slot *s* writes, each acknowledged by all in-sync replicas (`AckedWriter`):

1. the intake record of the task, under the deterministic id `uuid5(task, "periodic:<name>@<s>")`
   (the id `submit(task, idempotency_key=…)` would give) and with that id as its key, plus the
   `periodic` and `slot` headers;
2. its `pending` status, as `Producer.submit` writes it;
3. the schedule's state `{"last_slot": s, "at": ms, "task_id": id}` under key `periodic:<name>` on
   `<prefix>.schedules` (compacted: the latest state per schedule is what stays), to the partition
   Kafka's default partitioner gives that key among the declared `schedules.partitions`.

A new owner reads the state (`read_states`) and fires what `periodic.due_slots` says was missed.
If a process dies between 1 and 3, or two processes briefly both own a schedule during a
rebalance, slot *s* is produced twice: with the same id and key, so into the same partition and
key lane, where SPEC §12's rule skips an id that already succeeded. The handler runs once.

Nothing here may stop the worker: a missing topic, a broker outage or a junk state record is
logged, and the runner starts over (re-reading the state) after `RETRY_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic_core import from_json, to_json

from streamproc.acked import AckedWriter
from streamproc.app import App
from streamproc.envelope import PERIODIC, SLOT, task_headers
from streamproc.errors import StreamprocError
from streamproc.lifecycle.identity import idempotent_task_id
from streamproc.lifecycle.reading import records_until
from streamproc.lifecycle.status import TaskState, TaskStatus, status_partition
from streamproc.settings import KafkaSettings
from streamproc.submission import resolve_priority
from streamproc.timing.periodic import Periodic, due_slots, owner_partition, state_key
from streamproc.topology import Topology
from streamproc.worker import Worker

RECHECK_S = 0.5  # how often ownership is looked at (a slot's own timer wakes the runner otherwise)
RETRY_S = 5.0  # after a failure (an outage, a missing topic), start over after this long
REPORT_EVERY_S = 60.0  # while failures go on, one warning in so long
FIRST_WINDOW = 1000  # records: a state read goes back from the end in windows doubling from this

log = structlog.get_logger("streamproc.periodic")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fire_id(schedule: Periodic, slot: int) -> str:
    """The task id of `schedule`'s fire of `slot`: the same in every process and after every crash."""
    return idempotent_task_id(schedule.task, f"{state_key(schedule.name)}@{slot}")


def state_partition(name: str, partitions: int) -> int:
    """The schedules partition of `name`'s state record: where Kafka's default partitioner puts its key."""
    return int(DefaultPartitioner()(state_key(name).encode(), list(range(partitions)), list(range(partitions))))


def parse_state(raw: bytes | None) -> int | None:
    """The last fired slot a state record holds; None for a tombstone or a value this module did not write."""
    try:
        value = from_json(raw) if raw else None
    except ValueError:
        return None
    slot = value.get("last_slot") if isinstance(value, dict) else None
    return slot if isinstance(slot, int) and not isinstance(slot, bool) and slot >= 0 else None


async def read_states(
    consumer: AIOKafkaConsumer, topology: Topology, names: Iterable[str]
) -> dict[str, tuple[int | None, bytes | None]]:
    """Each schedule's last fired slot and its raw state record (both None without one).

    Kafka has no lookup by key, so this reads the schedules partition holding each key, backwards
    from its end in windows that double (`FIRST_WINDOW` records first): a schedule that fired
    recently is found at once, and one that never fired costs a read of its whole partition (a
    compacted one: one record per schedule and per delayed task not yet due).
    """
    topic, partitions = topology.schedules_topic, topology.schedules.partitions
    wanted: dict[TopicPartition, dict[bytes, str]] = {}
    for name in names:
        wanted.setdefault(TopicPartition(topic, state_partition(name, partitions)), {})[state_key(name).encode()] = name
    found: dict[str, bytes | None] = {}
    for tp, keys in wanted.items():
        consumer.assign([tp])
        begin = (await consumer.beginning_offsets([tp]))[tp]
        stop, window = (await consumer.end_offsets([tp]))[tp], FIRST_WINDOW
        missing = dict(keys)
        while missing and stop > begin:
            start = max(begin, stop - window)
            consumer.seek(tp, start)
            latest: dict[bytes, bytes | None] = {}
            async for record in records_until(consumer, {tp: stop}):
                if record.key in missing:
                    latest[record.key] = record.value
            for key, value in latest.items():
                found[missing.pop(key)] = value
            stop, window = start, window * 2
    return {name: (parse_state(found.get(name)), found.get(name)) for name in names}


class PeriodicRunner:
    """Fires the schedules of `app` that `worker`'s process owns; see the module docstring."""

    def __init__(self, settings: KafkaSettings, topology: Topology, app: App, worker: Worker) -> None:
        self._settings, self._topology, self._worker = settings, topology, worker
        self._schedules: dict[str, tuple[Periodic, TopicPartition]] = {}
        for schedule in app.schedules.values():
            try:
                topic = topology.intake_topic(resolve_priority(topology, schedule.priority))
            except StreamprocError as exc:
                log.error("periodic schedule left out", schedule=schedule.name, error=str(exc))
                continue
            partition = owner_partition(schedule, topology.intake.partitions)
            self._schedules[schedule.name] = (schedule, TopicPartition(topic, partition))
        self._writer = AckedWriter(settings)
        self._reader: AIOKafkaConsumer | None = None
        # Schedules owned here → the slot up to which they are done (fired, or let go by `catch_up`).
        self._done: dict[str, int] = {}

    async def run(self) -> None:
        """Fire until cancelled; every failure is logged and followed by a fresh start."""
        if not self._schedules:
            return
        warned = -REPORT_EVERY_S
        while True:
            try:
                await self._connect()
                await self._serve()
            except (KafkaError, OSError, StreamprocError) as exc:
                if time.monotonic() - warned >= REPORT_EVERY_S:  # an outage is a line a minute, not one every retry
                    warned = time.monotonic()
                    log.warning("periodic schedules wait", error=str(exc) or type(exc).__name__, retry_in_s=RETRY_S)
            except Exception:  # a bug here must not stop the worker's tasks
                log.exception("periodic schedules failed; starting over", retry_in_s=RETRY_S)
            finally:
                self._done.clear()  # a fresh start reads the state again
                await self._close()
            await asyncio.sleep(RETRY_S)

    async def _connect(self) -> None:
        self._reader = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
        await self._reader.start()
        needed = {self._topology.schedules_topic, *(tp.topic for _, tp in self._schedules.values())}
        if missing := sorted(needed - await self._reader.topics()):
            names = f"topic {missing[0]} does not" if len(missing) == 1 else f"topics {', '.join(missing)} do not"
            raise StreamprocError(f"{names} exist: run `streamproc topics apply`")
        await self._writer.start()

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        with contextlib.suppress(KafkaError, OSError):
            await self._writer.stop()
        if reader is not None:
            with contextlib.suppress(KafkaError, OSError):
                await reader.stop()

    async def _serve(self) -> None:
        """Take over newly owned schedules, fire what is due, sleep until the next slot or recheck."""
        while True:
            owned = set(self._worker.partitions)
            mine = {name for name, (_, tp) in self._schedules.items() if tp in owned}
            for name in self._done.keys() - mine:
                del self._done[name]
                log.info("periodic schedule handed over", schedule=name)
            if taken := sorted(mine - self._done.keys()):
                await self._take_over(taken)
            await asyncio.gather(*(self._fire_due(name) for name in list(self._done)))
            wake = min((self._schedules[name][0].next_slot(done) for name, done in self._done.items()), default=None)
            delay = RECHECK_S if wake is None else min(RECHECK_S, max(0.0, (wake - now_ms()) / 1000))
            await asyncio.sleep(delay)

    async def _take_over(self, names: list[str]) -> None:
        """Read the state of schedules this process just came to own and fire what they missed."""
        assert self._reader is not None
        states = await read_states(self._reader, self._topology, names)
        now = now_ms()
        for name in names:
            schedule = self._schedules[name][0]
            last, raw = states[name]
            if last is None and raw is not None:
                log.warning("periodic schedule's state record is unreadable: starting at its next slot", schedule=name)
            # No state: start at the next slot, as if the slot before it were done.
            self._done[name] = schedule.prev_slot(now) if last is None else last
            log.info(
                "periodic schedule owned here",
                schedule=name,
                last_slot=None if last is None else iso(last),
                next_slot=iso(schedule.next_slot(max(now, last or 0))),
            )

    async def _fire_due(self, name: str) -> None:
        """Fire each due slot of `name` in order while this process still owns it."""
        schedule, owner = self._schedules[name]
        now = now_ms()
        for slot in due_slots(schedule, self._done[name], now):
            if owner not in set(self._worker.partitions):
                return  # handed over meanwhile: the next owner reads the state and goes on
            await self._fire(schedule, owner.topic, slot)
            if name in self._done:
                self._done[name] = slot
        if name in self._done:  # slots older than the grace that `catch_up` let go are done too
            self._done[name] = max(self._done[name], schedule.prev_slot(now))

    async def _fire(self, schedule: Periodic, topic: str, slot: int) -> None:
        """Intake record, `pending` status, state: in that order, each acknowledged (module docstring)."""
        task_id, at = fire_id(schedule, slot), now_ms()
        priority = topic.removeprefix(f"{self._topology.prefix}.")
        headers = task_headers(schedule.task, task_id, at, priority)
        headers += [(PERIODIC, schedule.name.encode()), (SLOT, str(slot).encode())]
        sent = await self._writer.send(topic, schedule.payload, task_id.encode(), headers)
        if self._worker.config.statuses:
            pending = TaskStatus(task_id, TaskState.PENDING, schedule.task, 1, at).to_json()
            partition = status_partition(sent.partition, self._topology.status.partitions)
            await self._writer.send(self._topology.status_topic, pending, task_id.encode(), [], partition)
        state = to_json({"last_slot": slot, "at": now_ms(), "task_id": task_id})
        partition = state_partition(schedule.name, self._topology.schedules.partitions)
        await self._writer.send(self._topology.schedules_topic, state, state_key(schedule.name).encode(), [], partition)
        log.info(
            "periodic task fired",
            schedule=schedule.name,
            task=schedule.task,
            task_id=task_id,
            slot=iso(slot),
            late_ms=at - slot,
        )


@contextlib.asynccontextmanager
async def periodic_firing(settings: KafkaSettings, topology: Topology, app: App, worker: Worker) -> AsyncIterator[None]:
    """Fire `app`'s periodic schedules that `worker`'s process owns while the block runs."""
    running = asyncio.create_task(PeriodicRunner(settings, topology, app, worker).run())
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
