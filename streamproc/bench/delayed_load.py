"""The delayed tasks' load run (SPEC §13): `tasks` delayed tasks with etas spread over `spread_s`,
submitted in random order, run by one `streamproc worker` subprocess (its scheduler fires them).

Each run appends `<task id> <eta ms> <start ms> <run-at ms>` to a journal file
(`STREAMPROC_BENCH_JOURNAL`), on the one clock of this machine; lateness is start - eta, of the
tasks submitted before their eta (the others, if submitting was slower than foreseen, run at once
and are counted apart). The worker's peak RSS is its `VmHWM` (read from `/proc/<pid>/status`
before it stops), sampled `VmRSS` each second besides.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from asyncio.subprocess import Process
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from streamproc import App, TaskContext
from streamproc.envelope import RUN_AT
from streamproc.errors import StreamprocError
from streamproc.percentile import percentile
from streamproc.producer import Producer
from streamproc.settings import KafkaSettings
from streamproc.timing.scheduler import LOOK_AHEAD_S
from streamproc.topology import Topology

JOURNAL = "STREAMPROC_BENCH_JOURNAL"
SUBMIT_AT_ONCE = 1_000
FINISH_WITHIN_S = 120.0
WARM_UP_WITHIN_S = 60.0  # after the last eta, for the last runs
Figures = dict[str, Any]

app = App()


class Due(BaseModel):
    eta_ms: int  # 0: the warm-up task


def _journal(line: str) -> None:
    path = os.environ.get(JOURNAL)
    if path:
        with open(path, "a") as file:
            file.write(line)


@app.task("due")
async def due(payload: Due, ctx: TaskContext) -> None:
    run_at = ctx.headers.get(RUN_AT, "0")  # none: submitted after its eta, so run at once
    _journal(f"{ctx.task_id} {payload.eta_ms} {time.time_ns() // 1_000_000} {run_at}\n")


def _runs(path: Path) -> list[tuple[str, int, int, int]]:
    """(task id, eta, start, run-at) of each run so far (a line being written has fewer parts)."""
    if not path.exists():
        return []
    lines = (line.split() for line in path.read_text().splitlines())
    return [(p[0], int(p[1]), int(p[2]), int(p[3])) for p in lines if len(p) == 4]


def _rss_mb(pid: int, field: str) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _submit(settings: KafkaSettings, topology: Topology, etas_ms: list[int]) -> None:
    async with Producer(settings, topology) as producer:
        limit = asyncio.Semaphore(SUBMIT_AT_ONCE)

        async def one(eta_ms: int) -> None:
            async with limit:
                await producer.submit("due", {"eta_ms": eta_ms}, eta=datetime.fromtimestamp(eta_ms / 1000, UTC))

        await asyncio.gather(*(one(eta) for eta in etas_ms))


async def _warm_up(settings: KafkaSettings, topology: Topology, journal: Path, worker: Process) -> None:
    """Return once the worker ran a delayed task: its worker and its scheduler have their partitions."""
    async with Producer(settings, topology) as producer:
        probe = (await producer.submit("due", {"eta_ms": 0}, countdown=0.5)).id
    deadline = time.monotonic() + WARM_UP_WITHIN_S
    while probe not in {run[0] for run in _runs(journal)}:
        if worker.returncode is not None or time.monotonic() > deadline:
            raise StreamprocError("the worker did not run a first delayed task: see its log")
        await asyncio.sleep(0.1)


async def run(settings: KafkaSettings, topology: Topology, tasks: int, spread_s: float) -> Figures:
    """Submit, let one worker run them all, and measure; see the module docstring."""
    with tempfile.TemporaryDirectory() as directory:
        journal, topics_file = Path(directory) / "journal.txt", Path(directory) / "topics.yaml"
        topics_file.write_text(yaml.safe_dump(topology.model_dump()))
        log = (Path(directory) / "worker.log").open("wb")
        worker = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "streamproc", "worker", "--app", f"{__name__}:app"),
            *("--group", f"{topology.prefix}-delayed", "--file", str(topics_file), "--metrics-port", "0"),
            env=os.environ | {JOURNAL: str(journal), "STREAMPROC_BOOTSTRAP_SERVERS": settings.bootstrap_servers},
            stdout=log,
            stderr=log,
        )
        try:
            await _warm_up(settings, topology, journal, worker)
            lead_s = 5 + tasks / 1_000  # submitting takes about this long: the first etas come after it
            first_ms = int(time.time() * 1000 + lead_s * 1000)
            etas = [first_ms + random.randrange(int(spread_s * 1000)) for _ in range(tasks)]
            submitted_at = time.monotonic()
            await _submit(settings, topology, etas)
            submit_s = time.monotonic() - submitted_at
            samples: list[float] = []
            deadline = first_ms / 1000 + spread_s + FINISH_WITHIN_S
            while len(done := _runs(journal)) < tasks and time.time() < deadline:
                if worker.returncode is not None:
                    raise StreamprocError(f"the worker exited ({worker.returncode}); its log: {log.name}")
                samples.append(_rss_mb(worker.pid, "VmRSS"))
                await asyncio.sleep(1.0)
            await asyncio.sleep(2.0)  # a second run of any would show by now
            done = _runs(journal)
            hwm = _rss_mb(worker.pid, "VmHWM")
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.wait(), 60)
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            log.close()
    done = [run for run in done if run[1] > 0]  # not the warm-up's
    ran = {run[0] for run in done}
    scheduled = [run for run in done if run[3] > 0]  # the others were submitted after their eta: not a delay
    lateness = [start - eta for _, eta, start, _ in scheduled] or [0]
    return {
        "tasks": tasks,
        "spread_s": spread_s,
        "look_ahead_s": LOOK_AHEAD_S,
        "submit_s": submit_s,
        "submitted_after_eta": len(done) - len(scheduled),
        "ran": len(ran),
        "ran_twice": len(done) - len(ran),
        "early": sum(1 for _, eta, start, _ in done if start < eta),
        "lateness_p50_ms": percentile(lateness, 50),
        "lateness_p99_ms": percentile(lateness, 99),
        "lateness_max_ms": max(lateness),
        "rss_peak_mb": hwm,
        "rss_peak_sampled_mb": max(samples, default=0.0),
    }
