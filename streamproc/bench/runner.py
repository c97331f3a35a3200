"""One benchmark consumer in a process of its own: `python -m streamproc.bench.runner '<Spec JSON>'`.

Each scenario runs its consumers as separate processes, so they share nothing with the process
that measures them. A runner prints JSON lines on stdout: `progress` (records finished and
waits sampled so far) every PROGRESS_S, and on SIGTERM a `result`
with its peak RSS and the samples it was asked to keep (waits of `ping` tasks, retry delay
errors). The kinds here consume the same records: a bare aiokafka loop (the baseline), the
dispatch floor (that loop awaiting a no-op handler per record), FastStream's Kafka subscriber, and
a streamproc Worker. The peers (`peers.py`) run scripts of their own that print the same lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel

from streamproc.app import App, Batch
from streamproc.context import TaskContext
from streamproc.envelope import Envelope
from streamproc.event_loop import EventLoop
from streamproc.execution import Outcome
from streamproc.gc_tuning import tune_gc
from streamproc.logs import configure_logging
from streamproc.metrics import Metrics
from streamproc.monitor.reporter import reporting
from streamproc.routing import Routed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig

PROGRESS_S = 0.1
SLEEP_S = 0.02  # the I/O handler's await


Kind = Literal["aiokafka", "floor", "faststream", "streamproc", "arroyo", "faust", "celery"]


class Spec(BaseModel):
    """What one runner process consumes and how."""

    kind: Kind
    bootstrap_servers: str
    topology: Topology
    group: str
    topic: str  # the baseline and FastStream read this one topic; a Worker reads all of the topology's
    concurrency: int = 64
    statuses: bool = True  # a Worker writes each task's status and result (SPEC §12)
    batch: bool = False  # a Worker runs `noop` as a batch handler (`batch_app`, SPEC §15)
    loop: EventLoop = EventLoop.ASYNCIO  # the event loop a runner of this module runs on (`--loop`)
    # A peer (peers.py): this interpreter runs this script with the Spec's JSON as its argument,
    # instead of `sys.executable -m streamproc.bench.runner`.
    python: str | None = None
    script: str | None = None
    count: int = 0  # the backlog, for a peer that produces its own (Celery's messages)

    def command(self) -> list[str]:
        if self.script is None:
            return [sys.executable, "-m", "streamproc.bench.runner", self.model_dump_json()]
        return [self.python or sys.executable, self.script, self.model_dump_json()]


app = App()


@app.task("noop")
async def noop(payload: dict[str, Any]) -> None:
    """Nothing: the framework is what is measured."""


@app.task("ping")
async def ping(payload: dict[str, Any]) -> None:
    """A high-priority no-op whose wait (enqueued -> started) is kept."""


@app.task("io")
async def io(payload: dict[str, Any]) -> None:
    """Stands for a call to another service."""
    await asyncio.sleep(SLEEP_S)


@app.task("fail_once", max_retries=1, failure_threshold=None)  # every first attempt fails: no breaker
async def fail_once(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Fails its first attempt, so it comes back through the first tier."""
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")


# The batch scenario's app: `noop` as a batch handler of SPEC §10's size, on the same backlog.
BATCH = Batch(max_size=500, max_wait=0.05)
batch_app = App()


@batch_app.task("noop", batch=BATCH)
async def noop_batch(payloads: list[dict[str, Any]]) -> None:
    """Nothing, once per batch."""


class Meter:
    """Counts finished records and keeps the samples of the tasks a scenario looks at."""

    def __init__(self) -> None:
        self.done = 0
        self.ping_waits_ms: list[float] = []
        self.retry_errors_ms: list[float] = []

    def task_started(self, envelope: Envelope) -> None:
        now_ms = time.time() * 1000
        if envelope.task == "ping":
            self.ping_waits_ms.append(now_ms - envelope.enqueued_at_ms)
        retry_at = envelope.retry_at_ms
        if retry_at is not None:
            self.retry_errors_ms.append(now_ms - retry_at)

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        self.done += 1


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


async def nothing(payload: Any) -> None:
    """The dispatch floor's handler."""


async def _bare_loop(spec: Spec, meter: Meter, stop: asyncio.Event, *, dispatch: bool) -> None:
    """getmany, JSON-decode each value (and, with `dispatch`, await `nothing` with it), commit after each batch."""
    consumer = AIOKafkaConsumer(
        **KafkaSettings(bootstrap_servers=spec.bootstrap_servers).client_kwargs(),
        group_id=spec.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.subscribe([spec.topic])
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    payload = json.loads(record.value)
                    if dispatch:
                        await nothing(payload)
                    meter.done += 1
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def run_aiokafka(spec: Spec, meter: Meter, stop: asyncio.Event) -> None:
    """The bare loop (SPEC §10)."""
    await _bare_loop(spec, meter, stop, dispatch=False)


async def run_floor(spec: Spec, meter: Meter, stop: asyncio.Event) -> None:
    """The dispatch floor (SPEC §10): the bare loop awaiting a no-op `async def` handler per record."""
    await _bare_loop(spec, meter, stop, dispatch=True)


async def run_faststream(spec: Spec, meter: Meter, stop: asyncio.Event) -> None:
    """FastStream's Kafka subscriber (aiokafka underneath), a no-op handler, manual ack."""
    # Imported here: FastStream is the `bench` extra, not a dependency of the worker.
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker, KafkaMessage

    broker = KafkaBroker(spec.bootstrap_servers, logger=None)

    @broker.subscriber(spec.topic, group_id=spec.group, auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL)
    async def handle(body: dict[str, Any], message: KafkaMessage) -> None:
        meter.done += 1
        await message.ack()

    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()


async def run_streamproc(spec: Spec, meter: Meter, stop: asyncio.Event) -> None:
    """A Worker of the bench app, as `streamproc worker` runs one (metrics hooks and monitor reports included)."""
    config = WorkerConfig(group=spec.group, concurrency=spec.concurrency, statuses=spec.statuses)
    tune_gc()  # as `streamproc worker` does
    settings = KafkaSettings(bootstrap_servers=spec.bootstrap_servers)
    handlers = batch_app if spec.batch else app
    metrics = Metrics(handlers.tasks, spec.group)
    worker = Worker(handlers, settings, spec.topology, config, hooks=[metrics, meter])
    async with reporting(settings, spec.topology.monitor_topic, worker, metrics):
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        worker.stop()
        stopping.cancel()
        await running


RUNS = {"aiokafka": run_aiokafka, "floor": run_floor, "faststream": run_faststream, "streamproc": run_streamproc}


async def main(spec: Spec) -> None:
    meter, stop = Meter(), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def report() -> None:
        while True:
            emit("progress", done=meter.done, sampled=len(meter.ping_waits_ms) + len(meter.retry_errors_ms))
            await asyncio.sleep(PROGRESS_S)

    reporting = asyncio.create_task(report())
    await RUNS[spec.kind](spec, meter, stop)
    reporting.cancel()
    emit(
        "result",
        done=meter.done,
        rss_kib=peak_rss_kib(),
        ping_waits_ms=meter.ping_waits_ms,
        retry_errors_ms=meter.retry_errors_ms,
    )


if __name__ == "__main__":
    configure_logging(level="error")  # failed attempts and rebalances are part of the scenarios
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    spec = Spec.model_validate_json(sys.argv[1])
    with asyncio.Runner(loop_factory=spec.loop.factory()) as loop_runner:
        loop_runner.run(main(spec))
