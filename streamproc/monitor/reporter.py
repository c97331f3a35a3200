"""The worker side of the live monitor: a report to `<prefix>.monitor` every second (SPEC §14).

The report is read off state the worker and its metrics keep anyway, once a second, so the task
path pays nothing for it. Reporting is best effort and never stops the worker: a report is sent
only when the previous one was delivered (an outage queues nothing), a missing monitor topic is
logged once and looked for again every `TOPIC_CHECK_S`, and a graceful stop sends a last report
marked `stopped` so the monitor shows the process as stopped rather than gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamproc import __version__
from streamproc.metrics import Metrics
from streamproc.monitor.report import WorkerReport
from streamproc.settings import KafkaSettings
from streamproc.worker import Worker

REPORT_INTERVAL_S = 1.0
TOPIC_CHECK_S = 30.0
RECONNECT_S = 5.0
LAST_REPORT_WITHIN_S = 2.0

log = structlog.get_logger("streamproc.monitor")


class Reporter:
    """Writes `worker`'s report to `topic` every `interval_s` while `run` runs."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        worker: Worker,
        metrics: Metrics,
        interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        self._settings, self._topic, self._worker, self._metrics = settings, topic, worker, metrics
        self._interval_s = interval_s
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._started_at = time.time_ns() // 1_000_000
        self.id = f"{self._host}:{self._pid}:{self._started_at}"
        self._delivery: asyncio.Future[object] | None = None

    def report(self, stopped: bool = False) -> WorkerReport:
        """The worker's state now."""
        worker = self._worker
        partitions: dict[str, list[int]] = {}
        for tp in sorted(worker.partitions):
            partitions.setdefault(tp.topic, []).append(tp.partition)
        finished, failed = self._metrics.attempts()
        return WorkerReport(
            worker=self.id,
            host=self._host,
            pid=self._pid,
            version=__version__,
            group=worker.config.group,
            started_at=self._started_at,
            at=time.time_ns() // 1_000_000,
            interval_s=self._interval_s,
            stopped=stopped,
            concurrency=worker.config.concurrency,
            partitions=partitions,
            in_flight=worker.in_flight,
            waiting=worker.waiting,
            delayed=worker.delayed,
            finished=finished,
            failed=failed,
            circuits=worker.circuits(),
            waits=self._metrics.waits_by_topic(),
        )

    async def run(self) -> None:
        """Report until cancelled, then send the last report (`stopped`) if the topic is there."""
        producer: AIOKafkaProducer | None = None
        found = False
        try:
            producer = await self._connected()
            await self._wait_for_topic(producer)
            found = True
            while True:
                if self._delivery is None or self._delivery.done():
                    self._delivery = await producer.send(self._topic, self.report().to_json(), key=self.id.encode())
                    self._delivery.add_done_callback(_note_failure)
                await asyncio.sleep(self._interval_s)
        except asyncio.CancelledError:
            if producer is not None and found:
                await self._last_report(producer)
            raise
        finally:
            if producer is not None:
                await producer.stop()

    async def _connected(self) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(**self._settings.client_kwargs(), acks=1, linger_ms=0)
            try:
                await producer.start()
                return producer
            except (KafkaError, OSError) as exc:
                await producer.stop()
                log.warning("monitor reports wait for the broker", error=str(exc) or type(exc).__name__)
            except BaseException:  # cancelled while connecting: close it, or aiokafka reports it unclosed
                await producer.stop()
                raise
            await asyncio.sleep(RECONNECT_S)

    async def _wait_for_topic(self, producer: AIOKafkaProducer) -> None:
        """Sending to a missing topic would block aiokafka for its whole request timeout."""
        for attempt in itertools.count():
            with contextlib.suppress(KafkaError, OSError):
                if self._topic in (await producer.client.fetch_all_metadata()).topics():
                    return
            if attempt == 0:
                log.warning(
                    "monitor reports are off until the topic exists: run `streamproc topics apply`", topic=self._topic
                )
            await asyncio.sleep(TOPIC_CHECK_S)

    async def _last_report(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(LAST_REPORT_WITHIN_S):
                await (await producer.send(self._topic, self.report(stopped=True).to_json(), key=self.id.encode()))


def _note_failure(delivery: asyncio.Future[object]) -> None:
    if not delivery.cancelled() and (exc := delivery.exception()) is not None:
        log.warning("a monitor report was not delivered", error=str(exc) or type(exc).__name__)


@contextlib.asynccontextmanager
async def reporting(settings: KafkaSettings, topic: str, worker: Worker, metrics: Metrics) -> AsyncIterator[Reporter]:
    """Report `worker` to `topic` while the block runs."""
    reporter = Reporter(settings, topic, worker, metrics)
    running = asyncio.create_task(reporter.run())
    try:
        yield reporter
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
