"""Worker processes against the real broker: SIGKILL, SIGTERM hand-over, memory with a backlog."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiokafka import TopicPartition

from streamproc import Producer, admin, lag, offsetmap, provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import WorkerProcesses, wait_for


@dataclass(frozen=True)
class Line:
    event: str
    task_id: str
    pid: int
    tp: TopicPartition
    offset: int


class Journal:
    """What the worker subprocesses' `step` handlers wrote (see tests/worker_app.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[Line]:
        if not self.path.exists():
            return []
        found = []
        for raw in self.path.read_text().splitlines():
            parts = raw.split()
            if len(parts) == 6:  # a line being written has fewer parts
                found.append(
                    Line(parts[0], parts[1], int(parts[2]), TopicPartition(parts[3], int(parts[4])), int(parts[5]))
                )
        return found

    def done(self) -> list[Line]:
        return [line for line in self.lines() if line.event == "done"]


@pytest.fixture
def workers(bootstrap: str, topology: Topology, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    processes = WorkerProcesses(
        "tests.worker_app:app", f"{topology.prefix}-g", topics_file, tmp_path, tmp_path / "journal.txt"
    )
    yield processes.start
    processes.close()


async def submit(
    settings: KafkaSettings, topology: Topology, n: int, task: str = "step", **payload: object
) -> set[str]:
    await provisioning.apply(settings, topology)
    async with Producer(settings, topology) as producer:
        handles = await producer.submit_many(task, [dict(payload) for _ in range(n)], priority="normal")
        return {handle.id for handle in handles}


def test_sigkill_mid_run_loses_nothing(
    kafka_settings: KafkaSettings, topology: Topology, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # ~400 tasks/s (20 ms each, 8 at once): the kill comes after a few periodic commits.
    ids = asyncio.run(submit(kafka_settings, topology, 3000, sleep_ms=20))
    journal = Journal(tmp_path / "journal.txt")
    group = f"{topology.prefix}-g"
    first = workers("--concurrency", "8")
    wait_for(lambda: len(journal.done()) >= 1000, 90, "1000 tasks done before the kill")
    wait_for(lambda: bool(asyncio.run(admin.committed_offsets(kafka_settings, group))), 30, "a first commit")
    first.send_signal(signal.SIGKILL)
    first.wait()

    before = journal.lines()
    started = {line.task_id: line for line in before if line.event == "start"}
    done_before = {line.task_id for line in before if line.event == "done"}
    in_flight = set(started) - done_before
    commits = asyncio.run(admin.committed_offsets(kafka_settings, group))
    uncommitted = {i for i, line in started.items() if line.offset >= commits.get(line.tp, 0)}

    second = workers("--concurrency", "8")
    wait_for(lambda: {line.task_id for line in journal.done()} >= ids, 120, "every task done after the restart")
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0

    done = Counter(line.task_id for line in journal.done())
    duplicates = sum(done.values()) - len(done)
    print(
        f"\nkill -9 after {len(done_before)} done: {len(in_flight)} running at the kill, "
        f"{len(uncommitted)} started past the last commit, {duplicates} ran twice"
    )
    assert set(done) == ids
    assert in_flight <= uncommitted  # every task running at the kill is redelivered…
    assert duplicates <= len(uncommitted)  # …and only tasks the dead worker started past its last commit re-run
    assert len(uncommitted) < len(done_before)  # the commits before the kill did spare work


@pytest.mark.parametrize(
    ("task", "commit_interval"),
    [("step", "1"), ("step", "3600"), ("mark", "1")],
    ids=["after-commits", "before-its-first-commit", "handlers-run-in-place"],
)
def test_sigkill_of_one_of_two_workers_reruns_only_what_was_running_thanks_to_the_statuses(
    kafka_settings: KafkaSettings,
    topology: Topology,
    workers: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    task: str,
    commit_interval: str,
) -> None:
    """SPEC §12's last point: with statuses on, the successor skips what the dead worker finished
    (its `succeeded` statuses), so only the tasks running at the kill run twice: also when the dead
    worker never made a periodic commit, so its successor has no commit time to start reading from,
    and when the handler never awaits, so the worker calls it in place (`mark`): what counts against
    the concurrency there is the tasks whose status is on its way."""
    concurrency = 16
    payload = {"sleep_ms": 1} if task == "step" else {}
    ids = asyncio.run(submit(kafka_settings, topology, 20_000, task, **payload))
    journal = Journal(tmp_path / "journal.txt")
    group = f"{topology.prefix}-g"
    victim = workers("--concurrency", str(concurrency), "--commit-interval", commit_interval)
    workers("--concurrency", str(concurrency))
    wait_for(lambda: len(journal.done()) >= 6000, 120, "6000 tasks done before the kill")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    workers("--concurrency", str(concurrency))
    wait_for(lambda: {line.task_id for line in journal.done()} >= ids, 180, "every task done after the restart")

    done = Counter(line.task_id for line in journal.done())
    duplicates = sum(done.values()) - len(done)
    print(f"\nkill -9 of one of two workers, 20,000 tasks: {duplicates} ran twice (bound: {concurrency})")
    assert set(done) == ids
    assert duplicates <= concurrency
    intake = [topology.intake_topic(p) for p in topology.priorities]
    ends = asyncio.run(admin.end_offsets(kafka_settings, intake))

    def committed_to_the_end() -> bool:
        committed = asyncio.run(admin.committed_offsets(kafka_settings, group))
        return all(committed.get(tp, 0) == end for tp, end in ends.items())

    wait_for(committed_to_the_end, 30, "the group's commits at the end of every intake partition")


def test_sigterm_hands_partitions_over_with_nothing_lost(
    kafka_settings: KafkaSettings, topology: Topology, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # ~8 s of work for one worker (3000 x 20 ms / 8), so the second joins while plenty is left.
    ids = asyncio.run(submit(kafka_settings, topology, 3000, sleep_ms=20))
    journal = Journal(tmp_path / "journal.txt")
    a, b = workers("--concurrency", "8"), workers("--concurrency", "8")
    wait_for(lambda: {line.pid for line in journal.done()} == {a.pid, b.pid}, 90, "both workers running tasks")
    a.send_signal(signal.SIGTERM)
    assert a.wait(60) == 0

    wait_for(lambda: {line.task_id for line in journal.done()} >= ids, 120, "every task done after the hand-over")
    b.send_signal(signal.SIGTERM)
    assert b.wait(60) == 0

    done = Counter(line.task_id for line in journal.done())
    by_pid = Counter(line.pid for line in journal.done())
    print(f"\nworker a ran {by_pid[a.pid]}, worker b ran {by_pid[b.pid]}, {sum(done.values()) - len(done)} twice")
    assert set(done) == ids
    assert max(done.values()) == 1  # a graceful hand-over runs nothing twice


def test_a_worker_on_uvloop_runs_every_task_and_stops_on_sigterm(
    kafka_settings: KafkaSettings, topology: Topology, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    ids = asyncio.run(submit(kafka_settings, topology, 300, sleep_ms=1))
    journal = Journal(tmp_path / "journal.txt")
    worker = workers("--loop", "uvloop")
    wait_for(lambda: {line.task_id for line in journal.done()} >= ids, 60, "every task done")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    started = [json.loads(raw) for raw in (tmp_path / "worker-0.log").read_text().splitlines() if '"url"' in raw]
    assert started and started[0]["event_loop"] == "uvloop"  # the loop it really ran on, not just the flag


def test_memory_stays_bounded_with_a_200k_backlog(
    kafka_settings: KafkaSettings, topology: Topology, workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    async def backlog() -> dict[TopicPartition, int]:
        await provisioning.apply(kafka_settings, topology)
        async with Producer(kafka_settings, topology) as producer:
            for _ in range(20):
                await producer.submit_many("noop", [{"n": i} for i in range(10_000)], priority="low")
        return await admin.end_offsets(kafka_settings, [topology.intake_topic("low")])

    ends = asyncio.run(backlog())
    assert sum(ends.values()) == 200_000
    worker = workers("--concurrency", "64", "--prefetch", "256")
    group = f"{topology.prefix}-g"
    wait_for(lambda: asyncio.run(admin.committed_offsets(kafka_settings, group)) == ends, 300, "the backlog drained")
    status = Path(f"/proc/{worker.pid}/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    print(f"\npeak RSS of a worker draining a 200,000-task backlog: {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 250 * 1024


def _exported_lag(worker_log: Path) -> int | None:
    """The sum of the worker's `streamproc_consumer_lag` gauge, None until it serves one (its
    /metrics address is in its start-up log line: it was started with port 0)."""
    lines = worker_log.read_text(errors="replace").splitlines() if worker_log.exists() else []
    urls = [json.loads(raw)["url"] for raw in lines if '"url"' in raw and "/metrics" in raw]
    if not urls:
        return None
    try:
        text = urllib.request.urlopen(urls[0], timeout=5).read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("streamproc_consumer_lag{")
    ]
    return int(sum(values)) if values else None


def test_a_slow_head_holds_back_a_bounded_tail_that_a_successor_does_not_run_again(
    kafka_settings: KafkaSettings, topology: Topology, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """One slow task at the head of a partition, a long tail of quick ones behind it: the worker
    fetches at most `--max-uncommitted` offsets past the commit, reports only the unfinished ones as
    lag, and after a kill -9 its successor runs the head again but none of the finished tail."""
    bound, tail = 1000, 5000

    async def backlog() -> list[str]:
        await provisioning.apply(kafka_settings, topology)
        async with Producer(kafka_settings, topology) as producer:  # one key: one partition
            head = (
                await producer.submit("step", {"label": "head", "sleep_ms": 600_000}, priority="normal", key="k")
            ).id
            return [
                head,
                *[
                    h.id
                    for h in await producer.submit_many("step", [{} for _ in range(tail)], priority="normal", key="k")
                ],
            ]

    ids = asyncio.run(backlog())
    journal = Journal(tmp_path / "journal.txt")
    group = f"{topology.prefix}-g"
    options = ("--ordering", "unordered", "--max-uncommitted", str(bound), "--concurrency", "16")
    first = workers(*options)
    wait_for(lambda: len(journal.done()) >= bound // 2, 90, "the tail running behind the head")
    [tp] = {line.tp for line in journal.lines()}

    def finished_in_commit() -> set[int]:
        commits = asyncio.run(admin.committed_with_metadata(kafka_settings, group))
        return offsetmap.decode(commits[tp].offset, commits[tp].metadata) if tp in commits else set()

    # The tail stops at the bound; once the commit's map holds every finished offset, nothing moves.
    wait_for(lambda: finished_in_commit() == {line.offset for line in journal.done()}, 60, "the tail committed")
    done_before = {line.offset for line in journal.done()}
    head_offset = min(line.offset for line in journal.lines())
    assert asyncio.run(admin.committed_offsets(kafka_settings, group))[tp] == head_offset
    assert bound // 2 <= len(done_before) <= bound
    expected_lag = tail + 1 - len(done_before)
    wait_for(lambda: _exported_lag(tmp_path / "worker-0.log") == expected_lag, 30, "lag without the finished tail")
    [row] = [p for p in asyncio.run(lag.read_lag(kafka_settings, group, [tp.topic])) if p.partition == tp.partition]
    assert (row.lag, row.keda_lag) == (expected_lag, tail + 1)
    rss_kib = int(
        next(
            ln.split()[1]
            for ln in Path(f"/proc/{first.pid}/status").read_text().splitlines()
            if ln.startswith("VmRSS:")
        )
    )
    print(f"\n{len(done_before)} of {tail} tail tasks done behind the head (bound {bound}); RSS {rss_kib // 1024} MiB")
    assert rss_kib < 150 * 1024  # the tail waits on the broker, not in the worker

    first.send_signal(signal.SIGKILL)
    first.wait()
    second = workers(*options)
    # Once the successor fetched the range and skipped the finished offsets, its lag shows them as done.
    wait_for(lambda: _exported_lag(tmp_path / "worker-1.log") == expected_lag, 60, "the successor skipping the tail")
    rerun = [line for line in journal.lines() if line.pid == second.pid]
    assert [line.offset for line in rerun] == [head_offset]  # only the head runs again
    assert {line.task_id for line in journal.done()} <= set(ids)
