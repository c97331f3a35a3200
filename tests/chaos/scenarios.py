"""The SPEC §11 fault scenarios, two freezes besides, and the run that measures one of them.

A run: topics of its own, a paced submitter, a pool of worker processes, the scenario's fault
schedule while tasks are submitted, then a wait (with a deadline) until every submitted task is
done or dead-lettered and the group has committed every intake and tier partition to its end.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiokafka.errors import KafkaError

from streamproc import provisioning
from tests.chaos.cluster import ChaosBroker, WorkerPool
from tests.chaos.journal import Fault, Journal
from tests.chaos.workload import Submitter, chaos_topology, dead_lettered, delete_topics, lagging

WARM_UP_S = 4.0  # submission starts this long before the faults: about the time workers take to start
# Longer than the worker's group session (aiokafka's default 10 s): the group gives a frozen worker's
# partitions to others, and the worker wakes as a stale member still running tasks.
FREEZE_S = 12.0


@dataclass(frozen=True)
class Options:
    tasks: int
    keyed: bool
    duration_s: float  # how long the fault schedule lasts (submission: a warm-up longer)
    concurrency: int = 16
    max_sleep_ms: int = 20
    commit_interval: float = 1.0  # the worker's (WorkerConfig.commit_interval)
    drain_s: float = 180.0  # deadline for everything to finish once submission is over
    seed: int = 0


@dataclass
class Run:
    """The faults' view of a run: the workers, the broker, and the record of what was done when."""

    broker: ChaosBroker
    pool: WorkerPool
    submitter: Submitter
    journal: Journal
    rng: random.Random
    until: float = 0.0  # monotonic end of the fault schedule
    faults: list[Fault] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Whether the schedule goes on: it lasts `duration_s` from the moment the workers are ready."""
        return time.monotonic() < self.until

    def pause(self, low: float, high: float) -> None:
        """Wait a random pause of `low` to `high` seconds between faults, noting workers that die meanwhile."""
        until = time.monotonic() + self.rng.uniform(low, high)
        while time.monotonic() < until:
            self.pool.check()
            time.sleep(0.05)

    def live_pids(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.pool.live)

    def kill_worker(self, victim: int | None = None) -> int:
        """kill -9 a worker (`victim`, if still live) and start its replacement; the new pid."""
        proc = next((p for p in self.pool.live if p.pid == victim), None) or self.rng.choice(self.pool.live)
        self.pool.kill(proc)
        self.faults.append(Fault("worker kill -9", time.time(), frozenset({proc.pid})))
        return self.pool.start().pid

    def stop_worker(self) -> bool:
        """SIGTERM a worker that has run tasks (one still starting up would just die of the signal,
        which tests nothing); False if there is none yet."""
        self.journal.refresh()
        working = [p for p in self.pool.live if p.pid in self.journal.running_pids()]
        if not working:
            return False
        proc = self.rng.choice(working)
        self.faults.append(Fault("worker SIGTERM", time.time(), frozenset({proc.pid})))
        self.pool.terminate(proc)
        return True

    def add_worker(self) -> None:
        """A member joins: a rebalance that revokes every live worker's partitions."""
        self.faults.append(Fault("worker joins", time.time(), self.live_pids()))
        self.pool.start()

    def freeze_worker(self) -> None:
        """SIGSTOP a worker for `FREEZE_S` (a VM paused, a process swapped out), then SIGCONT it."""
        proc = self.rng.choice(self.pool.live)
        at = time.time()
        self.faults.append(Fault("worker freeze", at, frozenset({proc.pid}), until=_freeze(proc.pid)))

    def freeze_broker(self) -> None:
        """SIGSTOP the broker for `FREEZE_S`: connections stay open and nothing answers, unlike a kill."""
        pid = self.broker.running_pid()
        assert pid is not None, "the chaos broker is not running"
        at, pids = time.time(), self.live_pids()
        self.faults.append(Fault("broker freeze", at, pids, until=_freeze(pid)))

    def kill_broker(self) -> None:
        """kill -9 the broker, then start it again on the same data; the outage lasts until it answers."""
        at, pids = time.time(), self.live_pids()
        self.broker.kill9()
        self.broker.start()
        self.faults.append(Fault("broker kill -9", at, pids, until=time.time()))


def worker_kills(run: Run) -> None:
    """Bursts of kill -9: one worker killed and restarted three times, 1 to 3 s apart, then another."""
    while run.active:
        victim = None
        for _ in range(3):
            if not run.active:
                return
            victim = run.kill_worker(victim)
            run.pause(1, 3)
        run.pause(1, 3)


def _repeated(run: Run, low: float, high: float, fault: Callable[[], None]) -> None:
    """`fault()` after a pause of `low` to `high` seconds, as long as the schedule lasts."""
    while run.active:
        run.pause(low, high)
        fault()


def broker_kills(run: Run) -> None:
    """kill -9 the broker every few seconds and restart it at once on the same data directory."""
    _repeated(run, 2, 4, run.kill_broker)


def scale(run: Run) -> None:
    """1 → 3 workers, then 3 → 1 by SIGTERM, over and over."""
    while run.active:
        run.pause(2, 4)
        for _ in range(2):
            run.add_worker()
            run.pause(1, 2)
        run.pause(2, 4)
        for _ in range(2):  # even after submission: the scenario ends with one worker
            run.stop_worker()
            run.pause(1, 2)


def rebalance_storm(run: Run) -> None:
    """A member joins or leaves every 1 to 3 s, keeping one to four."""
    while run.active:
        run.pause(1, 3)
        count = len(run.pool.live)
        leave = count >= 4 or (count > 1 and run.rng.random() < 0.5)
        if leave and run.stop_worker():
            continue
        if count < 4:
            run.add_worker()


def _freeze(pid: int) -> float:
    """SIGSTOP `pid` for `FREEZE_S`, then SIGCONT it; the time it went on."""
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(FREEZE_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    return time.time()


def worker_freezes(run: Run) -> None:
    """One worker after another frozen past its group session, 1 to 2 s apart."""
    _repeated(run, 1, 2, run.freeze_worker)


def broker_freezes(run: Run) -> None:
    """The broker frozen, 2 to 3 s apart."""
    _repeated(run, 2, 3, run.freeze_broker)


@dataclass(frozen=True)
class Scenario:
    name: str
    workers: int  # at the start
    faults: Callable[[Run], None]


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("worker-kill", 3, worker_kills),
        Scenario("broker-kill", 2, broker_kills),
        Scenario("scale", 1, scale),
        Scenario("storm", 2, rebalance_storm),
        Scenario("worker-freeze", 2, worker_freezes),
        Scenario("broker-freeze", 2, broker_freezes),
    )
}


@dataclass
class Result:
    scenario: str
    ordering: str
    submitted: int
    finished: int
    duplicates: int
    bound: int  # SPEC §11's allowed re-runs, summed over the faults
    dead_lettered: int
    lost: int
    in_flight: int  # runs in flight at the faults, summed
    faults: int
    lag: int  # end - committed, summed over intake and tier partitions
    seconds: float
    notes: list[str] = field(default_factory=list)  # what went wrong, in detail

    HEADER = (
        f"{'scenario':<13} {'ordering':<8} {'submitted':>9} {'finished':>8} {'dups':>6} {'bound':>6} "
        f"{'dlq':>4} {'lost':>5} {'in flight':>9} {'faults':>6} {'lag':>5} {'seconds':>7}"
    )

    def row(self) -> str:
        return (
            f"{self.scenario:<13} {self.ordering:<8} {self.submitted:>9} {self.finished:>8} {self.duplicates:>6} "
            f"{self.bound:>6} {self.dead_lettered:>4} {self.lost:>5} {self.in_flight:>9} {self.faults:>6} "
            f"{self.lag:>5} {self.seconds:>7.1f}"
        )


def _ready(run: Run, journal: Journal, within_s: float = 60.0) -> None:
    """Wait until every first worker runs tasks, so the first fault finds them at work."""
    deadline = time.monotonic() + within_s
    while not run.live_pids() <= journal.running_pids():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the first workers ran no task within {within_s:.0f}s; see {run.pool.log_dir}")
        run.pool.check()
        journal.refresh()
        time.sleep(0.05)


def _settled(run: Run, journal: Journal, group: str, deadline: float) -> tuple[set[str], dict[str, str]]:
    """Poll until every submitted task is done or dead-lettered and nothing lags, or the deadline.

    The journal is read often (it is cheap); the broker is asked at most once a second.
    """
    settings, topology = run.broker.settings, run.submitter.topology
    run.submitter.join(max(0.0, deadline - time.monotonic()))
    dlq: set[str] = set()
    lag: dict[str, str] = {}
    next_query = 0.0
    while time.monotonic() < deadline:
        run.pool.check()
        journal.refresh()
        pending = set(run.submitter.positions) - journal.done.keys() - dlq
        if time.monotonic() >= next_query:
            next_query = time.monotonic() + 1.0
            try:
                if pending:
                    dlq = asyncio.run(dead_lettered(settings, topology))
                else:
                    behind = asyncio.run(lagging(settings, topology, group))
                    lag = {f"{tp.topic}-{tp.partition}": f"{c}/{e}" for tp, (c, e) in behind.items()}
                    if not lag:
                        break
            except (KafkaError, OSError, TimeoutError):
                pass  # the broker is just back: ask again
        time.sleep(0.1)
    return dlq, lag


def run_scenario(broker: ChaosBroker, scenario: Scenario, options: Options, work_dir: Path) -> Result:
    """Run one scenario with one workload against `broker`; everything started is stopped again."""
    topology = chaos_topology()
    settings = broker.settings
    asyncio.run(provisioning.apply(settings, topology))
    topics_file = work_dir / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    journal = Journal(work_dir / "journal.txt")
    group = f"{topology.prefix}-workers"
    pool = WorkerPool(broker.bootstrap_servers, topics_file, group, journal.path, work_dir, options.concurrency)
    submitter = Submitter(
        settings,
        topology,
        options.tasks,
        keyed=options.keyed,
        duration_s=options.duration_s + WARM_UP_S,
        max_sleep_ms=options.max_sleep_ms,
        seed=options.seed,
    )
    run = Run(broker, pool, submitter, journal, random.Random(options.seed))
    begin = time.monotonic()
    try:
        for _ in range(scenario.workers):
            pool.start()
        submitter.start()
        _ready(run, journal)
        run.until = time.monotonic() + options.duration_s
        scenario.faults(run)
        dlq, lag = _settled(run, journal, group, time.monotonic() + options.duration_s + options.drain_s)
        seconds = time.monotonic() - begin
        pool.stop()
    finally:
        submitter.stop()
        pool.close()
    journal.refresh()
    if submitter.error is not None:
        raise RuntimeError(f"submitting failed: {submitter.error!r}") from submitter.error
    lag_now = asyncio.run(lagging(settings, topology, group))  # after the workers' final commits
    result = _measure(scenario, options, run, journal, dlq, seconds)
    result.lag = sum(end - committed for committed, end in lag_now.values())
    result.notes += [f"worker: {problem}" for problem in pool.problems]
    if lag:
        result.notes.append(f"lagging at the deadline (committed/end): {lag}")
    if not result.lost and not result.lag:
        asyncio.run(delete_topics(settings, topology))
    else:
        result.notes.append(f"topics {topology.prefix}.* kept; journal and worker logs in {work_dir}")
    return result


def _measure(scenario: Scenario, options: Options, run: Run, journal: Journal, dlq: set[str], seconds: float) -> Result:
    submitted = set(run.submitter.positions)
    finished = submitted & journal.done.keys()
    lost = submitted - finished - dlq
    duplicates = sum(n - 1 for task_id, n in journal.done.items() if task_id not in run.submitter.resent)
    result = Result(
        scenario=scenario.name,
        ordering="keyed" if options.keyed else "unkeyed",
        submitted=len(submitted),
        finished=len(finished),
        duplicates=duplicates,
        bound=sum(journal.rerun_bound(fault, options.commit_interval) for fault in run.faults)
        # A frozen worker wakes and may fill its free slots once more before it hears it was evicted.
        + options.concurrency * sum(1 for fault in run.faults if fault.kind == "worker freeze"),
        dead_lettered=len(dlq & submitted),
        lost=len(lost),
        in_flight=sum(journal.in_flight(fault.at, fault.pids) for fault in run.faults),
        faults=len(run.faults),
        lag=0,
        seconds=seconds,
    )
    if run.submitter.resent:
        result.notes.append(f"{len(run.submitter.resent)} tasks were sent twice by the submitter (not counted)")
    for task_id in sorted(lost)[:10]:
        tp, offset = run.submitter.positions[task_id]
        start = journal.last_start(task_id)
        ran = f"last started by pid {start.pid} at {start.at:.3f}" if start else "never started"
        result.notes.append(f"lost {task_id} at {tp.topic}-{tp.partition}@{offset}: {ran}")
    return result
