"""The measuring side: backlogs, runner processes, and throughput over a steady window.

Throughput is taken between two samples of the runners' progress lines, once every runner is
finishing records (so joins and rebalances are over) and before the backlog runs low (so the
tail, where partitions empty one by one, is left out). With several runners the rates add up.
Runners stamp their samples with `time.monotonic()`, one clock for every process of a machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from streamproc.admin import admin_client
from streamproc.bench.runner import Spec
from streamproc.errors import StreamprocError
from streamproc.producer import Producer
from streamproc.provisioning import apply
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

WARMUP_S = 0.5  # after every runner finishes records, before the window opens
PROGRESS_POLL_S = 0.02
CHUNK = 10_000


@asynccontextmanager
async def scenario_topics(
    settings: KafkaSettings, partitions: int, tiers: Sequence[str] = ("5s",)
) -> AsyncIterator[Topology]:
    """Topics of one scenario's own, so it sees no other's records; deleted after it, so repeated
    runs do not fill the broker's disk (a full run writes about 1.6 million records)."""
    topology = Topology.model_validate(
        {
            "prefix": f"bench-{uuid.uuid4().hex[:8]}",
            "intake": {"partitions": partitions},
            "tiers": {"delays": list(tiers), "partitions": partitions},
        }
    )
    await apply(settings, topology)
    try:
        yield topology
    finally:
        async with admin_client(settings) as client:
            await client.delete_topics([spec.name for spec in topology.managed_topics()])


async def fill(settings: KafkaSettings, topology: Topology, task: str, count: int, priority: str = "normal") -> None:
    """Submit `count` tasks with small distinct payloads, keyless so they spread over the partitions
    (no `pending` statuses: nothing awaits a backlog)."""
    async with Producer(settings, topology, statuses=False) as producer:
        for start in range(0, count, CHUNK):
            await producer.submit_many(
                task, [{"n": n} for n in range(start, min(count, start + CHUNK))], priority=priority
            )


@dataclass
class Runner:
    """A runner process and what it printed so far."""

    spec: Spec
    process: subprocess.Popen[str]
    progress: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, records done)
    sampled: int = 0  # ping waits and retry delay errors kept so far
    result: dict[str, Any] | None = None
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=40))  # its last lines, for errors

    @classmethod
    def start(cls, spec: Spec) -> Runner:
        process = subprocess.Popen(spec.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runner = cls(spec, process)
        threading.Thread(target=runner._read, daemon=True).start()
        threading.Thread(target=runner._read_stderr, daemon=True).start()
        return runner

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.strip():
                self.stderr.append(line.rstrip())

    def why(self) -> str:
        """The runner's last error line (a traceback's last line), for a one-line reason."""
        return next((line.strip() for line in reversed(self.stderr) if not line.startswith(" ")), "no output")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a peer's library may print to stdout too (Celery's banner)
            if not isinstance(event, dict):
                continue
            if event.get("event") == "progress":
                self.progress.append((event["t"], event["done"]))
                self.sampled = event["sampled"]
            elif event.get("event") == "result":
                self.result = event

    @property
    def done(self) -> int:
        return self.progress[-1][1] if self.progress else 0

    def finishing_since(self, since: float) -> bool:
        """Whether the runner finished records after `since` (monotonic)."""
        recent = [done for at, done in self.progress if at >= since]
        return len(recent) >= 2 and recent[-1] > recent[0]

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        """SIGTERM, then the runner's result."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise StreamprocError(f"bench runner {self.spec.kind} did not stop in {timeout:.0f}s") from None
        deadline = time.monotonic() + 5
        while self.result is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if code != 0 or self.result is None:
            raise StreamprocError(f"bench runner {self.spec.kind} exited with {code} and no result: {self.why()}")
        return self.result


def wait_until(condition: Any, timeout: float, what: str, runners: Sequence[Runner]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for runner in runners:
            if runner.process.poll() is not None:
                raise StreamprocError(
                    f"bench runner {runner.spec.kind} exited with {runner.process.returncode}: {runner.why()}"
                )
        if time.monotonic() > deadline:
            raise StreamprocError(f"bench: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(PROGRESS_POLL_S)


@dataclass(frozen=True)
class Window:
    tasks_per_s: float
    seconds: float
    full: bool  # False: over half the backlog was done before it opened (a quick run's tiny backlog)


def steady_rate(runners: Sequence[Runner], backlog: int, window_s: float, timeout: float = 300) -> Window:
    """Records/s of the runners together over a window of at most `window_s` while all are busy.

    The window closes early when 90% of the backlog is done. Each runner's rate is taken between
    its own last samples before the window opens and closes.
    """
    started = time.monotonic()
    wait_until(
        lambda: all(r.finishing_since(started) for r in runners) or sum(r.done for r in runners) >= backlog * 0.9,
        timeout,
        "every runner busy",
        runners,
    )
    time.sleep(WARMUP_S)
    opened = [r.progress[-1] for r in runners]
    closes = time.monotonic() + window_s
    wait_until(
        lambda: (
            (time.monotonic() >= closes or sum(r.done for r in runners) >= backlog * 0.9)
            and all(r.progress[-1][0] > t_open for r, (t_open, _) in zip(runners, opened, strict=True))
        ),
        window_s + timeout,
        "the window to close",
        runners,
    )
    closed = [r.progress[-1] for r in runners]
    rate = sum((end - begin) / (t_end - t_begin) for (t_begin, begin), (t_end, end) in zip(opened, closed, strict=True))
    seconds = max(t_end - t_begin for (t_begin, _), (t_end, _) in zip(opened, closed, strict=True))
    if rate == 0:  # the backlog was gone before the window opened (a fast consumer, a quick run's backlog)
        return drain_rate(runners)
    return Window(rate, seconds, full=sum(done for _, done in opened) <= backlog / 2)


def drain_rate(runners: Sequence[Runner]) -> Window:
    """Records/s of the runners together from each one's first sample with records done to the
    first with all it ever did: the whole drain, join and tail included, so never a full window."""
    rate, seconds = 0.0, 0.0
    for runner in runners:
        started = next(((at, done) for at, done in runner.progress if done > 0), None)
        ended = next(((at, done) for at, done in runner.progress if done == runner.done), None)
        if started is not None and ended is not None and ended[0] > started[0]:
            rate += (ended[1] - started[1]) / (ended[0] - started[0])
            seconds = max(seconds, ended[0] - started[0])
    return Window(rate, seconds, full=False)
