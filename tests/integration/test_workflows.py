"""Workflows against the real broker (SPEC §13): chains, groups and chords, their ends, cancel, and
a crash test with worker processes SIGKILLed while 500 chains and 100 chords run."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamproc import Producer, SyncProducer, TaskCancelled, TaskFailed, TaskState, chain, chord, group, provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from streamproc.workflows.handle import WorkflowHandle
from tests import workflow_app
from tests.helpers import WorkerProcesses, running, until
from tests.workflow_app import Priced, app, charge, hop, join, land, member, notify, price, total


@pytest.fixture(autouse=True)
def fresh_app() -> Iterator[None]:
    workflow_app.runs.clear()
    workflow_app.gates.clear()
    yield
    for gate in workflow_app.gates.values():
        gate.set()


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    await provisioning.apply(kafka_settings, topology)
    return topology


def worker(settings: KafkaSettings, topology: Topology) -> Worker:
    return Worker(app, settings, topology, WorkerConfig(group=f"{topology.prefix}-g", commit_interval=0.1))


async def test_a_chain_passes_results_along_and_returns_the_last(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        handle = await producer.submit(
            chain(price.s({"label": "a", "cents": 200}), charge.s(), notify.s({"channel": "sms"}))
        )
        assert await handle.result(timeout=30) == {"sent": "a: 220 by sms"}
        assert handle.kind == "chain" and str(handle) == handle.id
        assert (await handle.status()).state is TaskState.SUCCEEDED
        assert (await producer.status(handle.id)).result == {"label": "a", "cents": 200, "tax": 20}
        # A lone signature is an ordinary submit.
        single = await producer.submit(price.s({"label": "single"}))
        assert await single.result(timeout=30) == Priced(label="single", cents=100, tax=10)
    assert workflow_app.runs == Counter({"price:a": 1, "charge:a": 1, "notify:a": 1, "price:single": 1})


async def test_a_step_that_dies_stops_the_chain_naming_the_step(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        handle = await producer.submit(chain(price.s({"label": "declined"}), charge.s(), notify.s({"channel": "sms"})))
        with pytest.raises(TaskFailed) as failed:
            await handle.result(timeout=30)
        assert failed.value.reason == "step 2 of 3 (charge) died: retries_exhausted"
        assert failed.value.error_type == "RuntimeError" and "declined" in (failed.value.error or "")
        assert (await handle.status()).state is TaskState.DEAD
        await asyncio.sleep(0.5)
    assert workflow_app.runs == Counter({"price:declined": 1, "charge:declined": 1})  # step 3 never ran


async def test_cancel_of_the_root_stops_the_steps_not_started(kafka_settings: KafkaSettings, applied: Topology) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        # Step 1 (the root) held: the cancel reaches it, and nothing follows.
        held = await producer.submit(
            chain(price.s({"label": "held", "gate": "g1"}), charge.s(), notify.s({"channel": "sms"}))
        )
        await until(lambda: workflow_app.runs["price:held"] == 1, 30, "step 1 started")
        assert (await held.cancel()).state is TaskState.PENDING
        with pytest.raises(TaskCancelled):
            await held.result(timeout=30)
        # Step 1 done and step 2 held: the root succeeded, yet its cancel keeps step 3 from running.
        later = await producer.submit(
            chain(price.s({"label": "later"}), charge.s({"gate": "g2"}), notify.s({"channel": "sms"}))
        )
        await until(lambda: workflow_app.runs["charge:later"] == 1, 30, "step 2 started")
        assert (await producer.cancel(later.id)).state is TaskState.SUCCEEDED
        await asyncio.sleep(1.0)  # the workers' control-topic follower sees it
        workflow_app.gates["g2"].set()
        with pytest.raises(TaskCancelled):
            await later.result(timeout=30)
        assert (await producer.status(later.id)).state is TaskState.SUCCEEDED  # the root's own status stays
        await asyncio.sleep(0.5)
    assert workflow_app.runs == Counter({"price:held": 1, "price:later": 1, "charge:later": 1})


async def test_group_results_in_order_and_a_chord_callback_runs_once(
    kafka_settings: KafkaSettings, applied: Topology
) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        members = [price.s({"label": f"m{i}", "cents": 10 * (i + 1)}) for i in range(6)]
        grouped = await producer.submit(group(members))
        assert await grouped.results(timeout=30) == [
            Priced(label=f"m{i}", cents=10 * (i + 1), tax=i + 1) for i in range(6)
        ]
        assert (await grouped.status()).state is TaskState.SUCCEEDED
        joined = await producer.submit(chord(group(members), total.s({"label": "sum"})))
        assert await joined.result(timeout=30) == sum(11 * (i + 1) for i in range(6))
        assert [r.label for r in await joined.results(timeout=30)] == [f"m{i}" for i in range(6)]
        await asyncio.sleep(0.5)
    assert workflow_app.runs["total:sum"] == 1
    assert all(workflow_app.runs[f"price:m{i}"] == 2 for i in range(6))


async def test_a_chord_member_that_dies_means_no_callback(kafka_settings: KafkaSettings, applied: Topology) -> None:
    async with Producer(kafka_settings, applied) as producer, running(worker(kafka_settings, applied)):
        members = [price.s({"label": "fine"}), price.s({"label": "dies", "die": True}), price.s({"label": "also"})]
        handle = await producer.submit(chord(members, total.s({"label": "never"})))
        with pytest.raises(TaskFailed) as failed:
            await handle.result(timeout=30)
        assert failed.value.reason == "chord member 2 of 3 (price) died: permanent_error"
        assert "no price for dies" in (failed.value.error or "")
        await until(lambda: workflow_app.runs["price:also"] == 1, 30, "the other members ran")
        await asyncio.sleep(1.0)
    assert workflow_app.runs["total:never"] == 0


async def test_the_sync_producer_submits_workflows(kafka_settings: KafkaSettings, applied: Topology) -> None:
    async with running(worker(kafka_settings, applied)):
        with SyncProducer(kafka_settings, applied) as producer:
            handle = await asyncio.to_thread(
                producer.submit, chain(price.s({"label": "sync"}), charge.s(), notify.s({"channel": "fax"}))
            )
            assert await asyncio.to_thread(handle.result, 30) == {"sent": "sync: 110 by fax"}
            grouped = await asyncio.to_thread(producer.submit, group(price.s({"label": f"s{i}"}) for i in range(3)))
            assert [r.label for r in await asyncio.to_thread(grouped.results, 30)] == ["s0", "s1", "s2"]


# The crash test: worker processes SIGKILLed and restarted while workflows run.

CHAINS = 500
CHORDS = 100
MEMBERS = 10
KILLS = 5
WAVES = 20
WAVE_EVERY_S = 2.0


@pytest.fixture
def topics_file(topology: Topology, tmp_path: Path) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(topology.model_dump()))
    return path


def journal(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


async def test_killed_workers_finish_every_chain_and_chord_and_reruns_stay_within_what_ran_at_the_kills(
    kafka_settings: KafkaSettings, applied: Topology, topics_file: Path, bootstrap: str, tmp_path: Path
) -> None:
    runs = tmp_path / "journal.txt"
    processes = WorkerProcesses("tests.workflow_app:app", f"{applied.prefix}-g", topics_file, tmp_path, runs)
    workers = [processes.start(), processes.start()]
    killed: set[str] = set()  # pids, as the journal writes them

    async def kill_and_restart() -> None:
        """Kill a worker once the group runs workflows again (the last steps and callbacks journal),
        restart it, and do it again: each kill lands while work is in flight."""
        for n in range(KILLS):
            wanted = len(journal(runs)) + 10
            await until(lambda: len(journal(runs)) >= wanted, 60, "workflows finishing again")  # noqa: B023
            workers[n % 2].send_signal(signal.SIGKILL)
            await asyncio.to_thread(workers[n % 2].wait)
            killed.add(str(workers[n % 2].pid))
            workers[n % 2] = processes.start()

    async def submit_waves(producer: Producer) -> tuple[list[WorkflowHandle], list[WorkflowHandle]]:
        """The workflows in waves over some 40 s, so that work runs across every kill."""
        chains: list[WorkflowHandle] = []
        chords: list[WorkflowHandle] = []
        for _ in range(WAVES):
            chains += await asyncio.gather(
                *(producer.submit(chain(hop.s({"hops": 0}), hop.s(), land.s())) for _ in range(CHAINS // WAVES))
            )
            members = [member.s({"index": i}) for i in range(MEMBERS)]
            chords += await asyncio.gather(*(producer.submit(chord(members, join.s())) for _ in range(CHORDS // WAVES)))
            await asyncio.sleep(WAVE_EVERY_S)
        return chains, chords

    began = time.monotonic()
    try:
        killer = asyncio.create_task(kill_and_restart())
        async with Producer(kafka_settings, applied) as producer:
            chains, chords = await submit_waves(producer)
            submitted = time.monotonic() - began
            finished = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in chains), *(h.result() for h in chords)), 120
            )
            took = time.monotonic() - began
            await asyncio.wait_for(killer, 60)
        assert finished[:CHAINS] == [{"landed": 2}] * CHAINS
        assert finished[CHAINS:] == [MEMBERS] * CHORDS
        await asyncio.sleep(2.0)  # a duplicate run would journal by now
        lines = journal(runs)
        chain_runs = Counter(line[1] for line in lines if line[0] == "chain")
        chord_runs = Counter(line[1] for line in lines if line[0] == "chord")
        report = (
            f"{len(killed)} kills; submitted in {submitted:.1f}s, all finished after {took:.1f}s; "
            f"chain last steps run again: {sum(n - 1 for n in chain_runs.values())}, "
            f"chord callbacks run again: {sum(n - 1 for n in chord_runs.values())}"
        )
        print(report)
        assert len(killed) == KILLS
        assert {line[3] for line in lines if line[0] == "chord"} == {",".join(map(str, range(MEMBERS)))}
        assert set(chain_runs) == {h.id for h in chains}, report
        assert set(chord_runs) == {h.id for h in chords}, report
        # SPEC §13: each last step and callback is produced once and runs at least once. It runs
        # again only when a process was killed while running it (or before its status was durable):
        # no id has two runs in processes that lived on, and the re-runs stay within the concurrency
        # per kill.
        survivors = Counter(line[1] for line in lines if line[0] in ("chain", "chord") and line[2] not in killed)
        assert max(survivors.values()) == 1, [(i, n) for i, n in survivors.items() if n > 1]
        assert sum(n - 1 for n in chain_runs.values()) + sum(n - 1 for n in chord_runs.values()) <= KILLS * 64
    finally:
        processes.close()
