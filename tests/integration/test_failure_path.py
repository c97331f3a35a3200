"""The failure path against the real broker: retry tiers, the DLQ, poison records, the circuit
breaker and rate limits (SPEC §3, §5). The test topology's tiers are 1s and 2s."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc import Producer, admin, dlq, provisioning
from streamproc.envelope import Envelope
from streamproc.execution import Outcome
from streamproc.routing import Disposition, Routed
from streamproc.scheduling import Ordering
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests import worker_app
from tests.helpers import read_records, run_cli, running, until
from tests.worker_app import Call, app

SPEC_HEADERS = {"task", "task-id", "enqueued-at", "attempt", "priority", "traceparent"}
FAILURE_HEADERS = {
    "original-topic",
    "original-partition",
    "original-offset",
    "error-type",
    "error-message",
    "failed-at",
}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def fresh_calls() -> Iterator[None]:
    worker_app.calls.clear()
    worker_app.upstream_down.clear()
    yield
    worker_app.upstream_down.clear()


class Recorder:
    """Task hooks that keep every attempt's disposition, by task id."""

    def __init__(self) -> None:
        self.routed: list[tuple[str, Routed]] = []

    def task_started(self, envelope: Envelope) -> None:
        pass

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        self.routed.append((envelope.task_id, routed))

    def of(self, task_id: str) -> list[Disposition]:
        return [routed.disposition for tid, routed in self.routed if tid == task_id]


def config(topology: Topology, **options: object) -> WorkerConfig:
    return WorkerConfig(group=f"{topology.prefix}-g", commit_interval=0.1, **options)  # type: ignore[arg-type]


def calls_of(label: str) -> list[Call]:
    return [call for call in worker_app.calls if call.label == label]


def headers_of(record: object) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}  # type: ignore[attr-defined]


async def test_a_task_failing_twice_runs_three_attempts_each_after_its_tier_delay(
    kafka_settings: KafkaSettings, topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    await provisioning.apply(kafka_settings, topology)
    recorder = Recorder()
    async with Producer(kafka_settings, topology) as producer:
        task_id = (await producer.submit("flaky", {"label": "twice", "fail_times": 2})).id
    async with running(Worker(app, kafka_settings, topology, config(topology), hooks=[recorder])):
        await until(lambda: Disposition.SUCCEEDED in recorder.of(task_id), what="the third attempt")
    attempts = calls_of("twice")
    assert [call.attempt for call in attempts] == [1, 2, 3]
    assert recorder.of(task_id) == [Disposition.RETRIED, Disposition.RETRIED, Disposition.SUCCEEDED]
    delays = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    with capsys.disabled():
        print(f"\nmeasured retry delays: {', '.join(f'{d:.3f}s' for d in delays)} (tiers 1s, 2s)")
    assert delays[0] >= 1.0
    assert delays[1] >= 2.0

    for tier, attempt, delay_ms in (("1s", "2", 1000), ("2s", "3", 2000)):
        [record] = await read_records(kafka_settings, topology.tier_topic(tier), 1)
        headers = headers_of(record)
        assert headers["attempt"] == attempt
        assert int(headers["retry-at"]) - int(headers["failed-at"]) == delay_ms
        assert headers["task-id"] == task_id
        # Each tier record carries the traceback of the attempt that just failed, not an earlier one's.
        trace = headers["error-traceback"]
        assert ", in flaky\n" in trace and trace.endswith(f"RuntimeError: twice failed on attempt {int(attempt) - 1}\n")


async def test_a_task_that_always_fails_ends_in_the_dlq_with_every_header(
    kafka_settings: KafkaSettings, topology: Topology, tmp_path: Path
) -> None:
    await provisioning.apply(kafka_settings, topology)
    recorder = Recorder()
    async with Producer(kafka_settings, topology) as producer:
        task_id = (
            await producer.submit(
                "flaky", {"label": "always", "fail_times": 99}, priority="high", key="k1", traceparent=TRACEPARENT
            )
        ).id
    async with running(Worker(app, kafka_settings, topology, config(topology), hooks=[recorder])):
        await until(lambda: Disposition.DEAD_LETTERED in recorder.of(task_id), what="the dead letter")
    # max_retries defaults to the number of tiers: two retries, so three attempts.
    assert [call.attempt for call in calls_of("always")] == [1, 2, 3]
    [dead] = await read_records(kafka_settings, topology.dlq_topic, 1)
    headers = headers_of(dead)
    assert SPEC_HEADERS | FAILURE_HEADERS | {"dlq-reason"} <= set(headers)
    assert "retry-at" not in headers
    assert headers["dlq-reason"] == "retries_exhausted"
    assert (headers["task"], headers["task-id"], headers["attempt"], headers["priority"]) == (
        "flaky",
        task_id,
        "3",
        "high",
    )
    assert headers["traceparent"] == TRACEPARENT
    assert headers["original-topic"] == topology.intake_topic("high")
    assert (headers["error-type"], headers["error-message"]) == ("RuntimeError", "always failed on attempt 3")
    assert dead.key == b"k1"
    assert json.loads(dead.value) == {"label": "always", "fail_times": 99}
    trace = headers["error-traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert ", in flaky\n" in trace and trace.endswith("RuntimeError: always failed on attempt 3\n")

    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    shown = await asyncio.to_thread(
        run_cli,
        "dlq",
        "show",
        f"{dead.partition}:{dead.offset}",
        "--file",
        str(topics_file),
        STREAMPROC_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
    )
    assert shown.returncode == 0, shown.stderr
    # Below the header table, the traceback's lines as they are, the handler's frame among them.
    below = shown.stdout.split("error-traceback:\n", 1)[1]
    assert below.startswith("Traceback (most recent call last):\n")
    assert ", in flaky\n" in below and "RuntimeError: always failed on attempt 3\n" in below


async def test_each_poison_kind_lands_in_the_dlq_while_the_partition_keeps_flowing(
    kafka_settings: KafkaSettings, one_partition: Topology
) -> None:
    topology = one_partition
    intake = topology.intake_topic("normal")
    flaky = [("task", b"flaky")]
    records: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
        ("good-1", b'{"label": "good-1"}', flaky),
        ("undecodable", b"not json {", flaky),
        ("invalid_payload", b'{"fail_times": "often"}', flaky),
        ("unknown_task", b"{}", [("task", b"no_such_task")]),
        ("missing_task", b"{}", []),
        ("permanent_error", b'{"label": "doomed", "permanent": true}', flaky),
        ("good-2", b'{"label": "good-2"}', flaky),
    ]
    async with AIOKafkaProducer(**kafka_settings.client_kwargs()) as plain:
        for task_id, value, headers in records:
            await plain.send_and_wait(intake, value, headers=[*headers, ("task-id", task_id.encode())])
    group = f"{topology.prefix}-g"
    async with running(Worker(app, kafka_settings, topology, config(topology, ordering=Ordering.PARTITION))):
        await until(lambda: calls_of("good-2") != [], what="the good record behind the poison")
        dead = await read_records(kafka_settings, topology.dlq_topic, 5)

        async def committed() -> int | None:
            return (await admin.committed_offsets(kafka_settings, group)).get(TopicPartition(intake, 0))

        deadline = time.monotonic() + 10
        while await committed() != len(records):
            assert time.monotonic() < deadline, "the commit did not pass the poison records"
            await asyncio.sleep(0.05)  # a poll with a deadline, not a busy loop on the broker
    reasons = {headers_of(r)["task-id"]: headers_of(r)["dlq-reason"] for r in dead}
    assert reasons == {kind: kind for kind, _, _ in records[1:-1]}
    assert [call.label for call in worker_app.calls if call.label.startswith("good")] == ["good-1", "good-2"]
    by_id = {headers_of(r)["task-id"]: r for r in dead}
    assert by_id["undecodable"].value == b"not json {"  # kept as it came, for inspection
    assert "task" not in headers_of(by_id["missing_task"])
    # A poison record is the record's fault: no traceback. A handler's PermanentError has its own.
    traced = {task_id for task_id, r in by_id.items() if "error-traceback" in headers_of(r)}
    assert traced == {"permanent_error"}
    assert ", in flaky\n" in headers_of(by_id["permanent_error"])["error-traceback"]


async def test_a_record_too_large_for_the_dlq_lands_there_without_its_value(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    small_dlq = topology.model_copy(
        update={"dlq": topology.dlq.model_copy(update={"configs": {"max.message.bytes": "20000"}})}
    )
    await provisioning.apply(kafka_settings, small_dlq)
    value = json.dumps({"label": "huge", "blob": "x" * 50_000}).encode()
    async with AIOKafkaProducer(**kafka_settings.client_kwargs()) as plain:
        await plain.send_and_wait(small_dlq.intake_topic("low"), value, headers=[("task", b"no_such_task")])
    async with running(Worker(app, kafka_settings, small_dlq, config(small_dlq))):
        [dead] = await read_records(kafka_settings, small_dlq.dlq_topic, 1)
    headers = headers_of(dead)
    assert dead.value == b""
    assert (headers["dlq-reason"], headers["value-dropped"]) == ("unknown_task", str(len(value)))  # its real reason
    assert f"{len(value)}-byte value is too large" in headers["error-message"]


async def test_a_waiting_tier_record_costs_no_cpu_and_no_slot_and_runs_when_due(
    kafka_settings: KafkaSettings, topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 10 s tier: a record is never held past its tier's delay after it was written.
    topology = topology.model_copy(update={"tiers": topology.tiers.model_copy(update={"delays": ["10s"]})})
    await provisioning.apply(kafka_settings, topology)
    retry_at_ms = int(time.time() * 1000) + 10_000
    async with AIOKafkaProducer(**kafka_settings.client_kwargs()) as plain:
        await plain.send_and_wait(
            topology.tier_topic("10s"),
            b'{"label": "later"}',
            headers=[("task", b"flaky"), ("attempt", b"2"), ("retry-at", str(retry_at_ms).encode())],
        )
    async with running(Worker(app, kafka_settings, topology, config(topology))) as worker:
        await until(lambda: worker.delayed == 1, what="the tier record fetched")
        cpu_before, wall_before = time.process_time(), time.monotonic()
        await asyncio.sleep(3)  # a measurement window, not synchronisation
        cpu_share = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
        assert worker.in_flight == 0
        await until(lambda: calls_of("later") != [], within_s=20, what="the record to come due")
    with capsys.disabled():
        print(f"\nCPU while a tier record waited: {cpu_share:.1%} of a core")
    assert cpu_share < 0.05
    [call] = calls_of("later")
    assert call.at * 1000 >= retry_at_ms
    assert call.attempt == 2


async def test_an_open_circuit_defers_without_calling_the_handler_or_spending_an_attempt(
    kafka_settings: KafkaSettings, one_partition: Topology
) -> None:
    topology = one_partition
    recorder = Recorder()
    worker = Worker(app, kafka_settings, topology, config(topology, concurrency=1), hooks=[recorder])
    worker_app.upstream_down.set()
    async with Producer(kafka_settings, topology) as producer, running(worker):
        failing = [h.id for h in await producer.submit_many("fragile", [{"label": "a"}, {"label": "b"}])]
        await until(lambda: worker.circuits()["fragile"], what="two failures to open the circuit")
        opened_at = time.time()
        later = [h.id for h in await producer.submit_many("fragile", [{"label": f"later-{i}"} for i in range(3)])]
        await until(
            lambda: all(Disposition.DEFERRED in recorder.of(tid) for tid in later), what="the later tasks deferred"
        )
        assert [call.label for call in worker_app.calls] == ["a", "b"]  # not called while open
        worker_app.upstream_down.clear()
        await until(
            lambda: all(Disposition.SUCCEEDED in recorder.of(tid) for tid in failing + later),
            within_s=40,
            what="every task to succeed after the probe",
        )
        assert not worker.circuits()["fragile"]
    after_open = [call for call in worker_app.calls if call.at >= opened_at]
    assert after_open[0].at - opened_at >= 3.0 - 0.5  # the probe waited (most of) the reset timeout
    for label in ("later-0", "later-1", "later-2"):
        assert [call.attempt for call in calls_of(label)] == [1], f"{label} spent an attempt while deferred"
    assert {routed.tier for _, routed in recorder.routed if routed.disposition is Disposition.DEFERRED} == {"1s"}


async def test_rate_limited_tasks_wait_for_their_start_without_holding_a_slot(
    kafka_settings: KafkaSettings, one_partition: Topology
) -> None:
    topology = one_partition
    worker = Worker(app, kafka_settings, topology, config(topology, concurrency=1, ordering=Ordering.UNORDERED))
    async with Producer(kafka_settings, topology) as producer:
        await producer.submit_many("limited", [{"label": f"limited-{i}"} for i in range(10)], priority="low")
        await producer.submit_many("flaky", [{"label": f"free-{i}"} for i in range(10)], priority="low")
    async with running(worker):
        await until(lambda: len(worker_app.calls) == 20, what="every task")
    starts = [call.at for call in worker_app.calls if call.label.startswith("limited")]
    # 10/s: ten starts span at least nine intervals of 100 ms.
    assert starts[-1] - starts[0] >= 0.9 - 0.01
    free_done = max(call.at for call in worker_app.calls if call.label.startswith("free"))
    assert free_done < starts[4], "the free tasks waited behind rate-limited ones: a slot was held"


async def test_a_dead_letter_replayed_after_the_fix_runs_again_as_a_first_attempt(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    await provisioning.apply(kafka_settings, topology)
    recorder = Recorder()
    worker_app.upstream_down.set()
    async with Producer(kafka_settings, topology) as producer:
        task_id = (await producer.submit("brittle", {"label": "outage"}, priority="low")).id
    async with running(Worker(app, kafka_settings, topology, config(topology), hooks=[recorder])):
        await until(lambda: Disposition.DEAD_LETTERED in recorder.of(task_id), what="the dead letter")
        worker_app.upstream_down.clear()  # the outage is over
        first = await dlq.replay(kafka_settings, topology)
        await until(lambda: Disposition.SUCCEEDED in recorder.of(task_id), what="the replayed task")
        again = await dlq.replay(kafka_settings, topology)
    assert (first.sent, again.sent) == (1, 0)
    failed, replayed = calls_of("outage")
    assert (failed.attempt, replayed.attempt) == (1, 1)
    assert replayed.headers["replayed-from"] == f"{topology.dlq_topic}-0-0"
    assert replayed.headers["task-id"] == task_id
    assert "dlq-reason" not in replayed.headers
