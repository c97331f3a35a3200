"""`LiveMonitor`: the workers' reports and the group's offsets, as one `Overview` a second.

Two loops on one event loop: one tails `<prefix>.monitor` (assigned, no group, from the reports of
the last minute) into the `Board`; the other reads the group's offsets every `TICK_S` with clients
kept open (`lag.LagProbe`) into the `Queues`, then publishes a new `Overview`. Readers either take
`overview` as it is or await the next one (`next_overview`), which is how the web UI's stream and
`streamproc top` refresh. A broker that does not answer is shown (`broker_error`), and the loops
keep trying; nothing here holds more than the board's and the queues' bounded windows.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, Field

from streamproc.lag import LagProbe
from streamproc.monitor.board import WINDOW_S, Board, WorkerRow, WorkerState
from streamproc.monitor.queues import QueueRow, Queues
from streamproc.monitor.report import WorkerReport
from streamproc.settings import KafkaSettings
from streamproc.tailing import partitions_when_present, start_when_reachable
from streamproc.topology import Topology

TICK_S = 1.0


class Overview(BaseModel):
    """What the monitor shows, as of `at`."""

    at: int = Field(description="ms since epoch")
    group: str
    lag_threshold: int = Field(description="KEDA's lagThreshold the replica figures assume")
    keda_replicas: int = Field(description="what KEDA would scale the workers to (before min/max replicas)")
    pending: int = Field(description="records not finished yet, over every consumed topic")
    broker_error: str | None = Field(description="why the offsets could not be read this second (null: they were)")
    queues: list[QueueRow] = Field(description="intake topics and routes, then retry tiers")
    workers: list[WorkerRow]
    workers_alive: int
    delayed_in_workers: int = Field(description="tier records fetched by live workers, waiting for their retry-at")


class LiveMonitor:
    """Follows `topology`'s monitor topic and the offsets of consumer group `group`."""

    def __init__(self, settings: KafkaSettings, topology: Topology, group: str, lag_threshold: int) -> None:
        self._settings, self._topic = settings, topology.monitor_topic
        self._board = Board()
        self._queues = Queues(topology, group, lag_threshold)
        self._broker_error: str | None = "not read yet"
        self._ticked = asyncio.Event()
        self.overview = self._build()
        self._json: tuple[Overview | None, bytes] = (None, b"")

    def overview_json(self) -> bytes:
        """`overview` as JSON, serialised once per tick however many readers ask."""
        overview = self.overview
        if self._json[0] is not overview:
            self._json = (overview, overview.model_dump_json().encode())
        return self._json[1]

    async def next_overview(self, after: Overview) -> Overview:
        """The first overview newer than `after`."""
        while self.overview is after:
            await self._ticked.wait()
        return self.overview

    async def run(self) -> None:
        """Follow until cancelled."""
        consumer = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
        probe = LagProbe(self._settings)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow_reports(consumer))
                tasks.create_task(self._tick(probe))
        finally:
            await probe.stop()
            await consumer.stop()

    async def _follow_reports(self, consumer: AIOKafkaConsumer) -> None:
        await start_when_reachable(consumer)
        partitions = await partitions_when_present(self._settings, self._topic)
        consumer.assign(partitions)
        window_start_ms = time.time_ns() // 1_000_000 - int(WINDOW_S * 1000)
        since = await consumer.offsets_for_times(dict.fromkeys(partitions, window_start_ms))
        for tp in partitions:
            found = since.get(tp)
            if found is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found.offset)
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    report = WorkerReport.from_json(record.value)
                    if report is not None:
                        self._board.apply(report)

    async def _tick(self, probe: LagProbe) -> None:
        started = False
        while True:
            begun = time.monotonic()
            try:
                async with asyncio.timeout(5 * TICK_S):
                    if not started:
                        await probe.start()
                        started = True
                    self._queues.add(begun, await probe.read(self._queues.group, self._queues.topics))
                self._broker_error = None
            except (KafkaError, OSError, TimeoutError) as exc:
                self._broker_error = str(exc) or type(exc).__name__
                if not started:
                    await probe.stop()
            self._publish()
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - begun)))

    def _publish(self) -> None:
        self.overview = self._build()
        ticked, self._ticked = self._ticked, asyncio.Event()
        ticked.set()

    def _build(self) -> Overview:
        now_ms = time.time_ns() // 1_000_000
        workers = self._board.workers(now_ms)
        alive = [row for row in workers if row.state is WorkerState.ALIVE]
        report = self._queues.report()
        return Overview(
            at=now_ms,
            group=self._queues.group,
            lag_threshold=self._queues.lag_threshold,
            keda_replicas=report.keda_replicas if report else 0,
            pending=report.lag if report else 0,
            broker_error=self._broker_error,
            queues=self._queues.rows(self._board.waits(now_ms)),
            workers=workers,
            workers_alive=len(alive),
            delayed_in_workers=sum(row.report.delayed for row in alive),
        )
