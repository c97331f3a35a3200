"""`SyncProducer` from plain synchronous code (no event loop in the calling thread), against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from streamproc import Producer, SyncProducer, provisioning
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import read_records
from tests.integration.test_producer import Charge, charge

T = TypeVar("T")


@pytest.fixture
def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    asyncio.run(provisioning.apply(kafka_settings, topology))
    return topology


@pytest.fixture
def producer(kafka_settings: KafkaSettings, applied: Topology) -> Iterator[SyncProducer]:
    with SyncProducer(kafka_settings, applied) as started:
        yield started


def in_plain_thread(call: Callable[[], T]) -> T:
    """`call()` in a new thread that has no event loop, as in a Django or Flask worker thread."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise AssertionError("the thread must not have a running loop")
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the call did not return"
    if errors:
        raise errors[0]
    [result] = results
    return result


def headers_of(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def test_submit_writes_the_same_record_as_producer(
    kafka_settings: KafkaSettings, applied: Topology, producer: SyncProducer
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    payload = {"to": "a@b.c", "subject": "hi"}
    sync_id = in_plain_thread(
        lambda: producer.submit("send_email", payload, priority="high", key="user-42", traceparent=traceparent).id
    )

    async def submit_async() -> str:
        async with Producer(kafka_settings, applied) as async_producer:
            handle = await async_producer.submit(
                "send_email", payload, priority="high", key="user-42", traceparent=traceparent
            )
            return handle.id

    async_id = asyncio.run(submit_async())
    assert uuid.UUID(sync_id).version == 4 and sync_id != async_id

    records = asyncio.run(read_records(kafka_settings, applied.intake_topic("high"), 2))
    by_id = {headers_of(r)["task-id"]: r for r in records}
    sync_record, async_record = by_id[sync_id], by_id[async_id]
    assert sync_record.partition == async_record.partition  # same key, same partition
    assert sync_record.key == async_record.key == b"user-42"
    assert sync_record.value == async_record.value and json.loads(sync_record.value) == payload
    sync_headers, async_headers = headers_of(sync_record), headers_of(async_record)
    assert [name for name, _ in sync_record.headers] == [name for name, _ in async_record.headers]
    for varying in ("task-id", "enqueued-at"):
        del sync_headers[varying], async_headers[varying]
    assert (
        sync_headers
        == async_headers
        == {
            "task": "send_email",
            "attempt": "1",
            "priority": "high",
            "traceparent": traceparent,
        }
    )


def test_submit_many_validates_then_sends_in_order(
    kafka_settings: KafkaSettings, applied: Topology, producer: SyncProducer
) -> None:
    payloads = [Charge(order_id=f"o-{n}", cents=n) for n in range(5)]
    ids = [h.id for h in in_plain_thread(lambda: producer.submit_many(charge, payloads, key="shop-1"))]
    assert len(ids) == len(set(ids)) == 5

    with pytest.raises(StreamprocError, match="invalid payload for task 'charge'"):
        in_plain_thread(lambda: producer.submit_many(charge, [{"order_id": "o-9", "cents": 1}, {"cents": "x"}]))
    assert producer.submit_many(charge, []) == []

    records = asyncio.run(read_records(kafka_settings, applied.intake_topic("normal"), 5))
    assert [headers_of(r)["task-id"] for r in records] == ids  # one key: one partition, in order
    assert [json.loads(r.value) for r in records] == [p.model_dump() for p in payloads]


def test_four_threads_submit_at_once(kafka_settings: KafkaSettings, applied: Topology) -> None:
    per_thread = 25
    start = threading.Barrier(4)
    submitted: dict[int, list[str]] = {}
    producer = SyncProducer(kafka_settings, applied)  # not started: the first caller connects it
    try:

        def submit(worker: int) -> None:
            start.wait(timeout=30)
            submitted[worker] = [
                producer.submit("noop", {"worker": worker, "n": n}, key=f"w{worker}").id for n in range(per_thread)
            ]

        threads = [threading.Thread(target=submit, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        producer.close()

    assert sorted(submitted) == [0, 1, 2, 3]
    records = asyncio.run(read_records(kafka_settings, applied.intake_topic("normal"), 4 * per_thread))
    for worker, ids in submitted.items():
        mine = [r for r in records if r.key == f"w{worker}".encode()]
        assert [headers_of(r)["task-id"] for r in mine] == ids  # each thread's tasks, in its order
        assert [json.loads(r.value)["n"] for r in mine] == list(range(per_thread))


def test_use_after_close_is_a_clear_error(kafka_settings: KafkaSettings, applied: Topology) -> None:
    producer = SyncProducer(kafka_settings, applied)
    with producer:
        assert producer.submit("noop", {}) and not producer.closed
    assert producer.closed
    for use in (
        lambda: producer.submit("noop", {}),
        lambda: producer.submit_many("noop", [{}]),
        producer.start,
    ):
        with pytest.raises(StreamprocError, match="the SyncProducer is closed"):
            in_plain_thread(use)
    producer.close()  # a second close does nothing
    with pytest.raises(StreamprocError, match="the SyncProducer is closed"), producer:
        pass


def test_errors_of_the_async_producer_reach_the_caller(kafka_settings: KafkaSettings, topology: Topology) -> None:
    """Topics not applied: the caller gets `Producer`'s one-line error, in its own thread."""
    with SyncProducer(kafka_settings, topology) as producer:
        with pytest.raises(StreamprocError, match="does not exist"):
            in_plain_thread(lambda: producer.submit("noop", {}))
        with pytest.raises(StreamprocError, match="unknown priority"):
            producer.submit("noop", {}, priority="urgent")


def test_from_env_reads_the_environment(
    kafka_settings: KafkaSettings, applied: Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(json.dumps(applied.model_dump(mode="json")))
    monkeypatch.setenv("STREAMPROC_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("STREAMPROC_TOPICS_FILE", str(topics_file))
    with SyncProducer.from_env() as producer:
        assert producer.topology.prefix == applied.prefix
        task_id = producer.submit("noop", {"from": "env"}, priority="low").id
    [record] = asyncio.run(read_records(kafka_settings, applied.intake_topic("low"), 1))
    assert headers_of(record)["task-id"] == task_id


def test_a_forked_child_connects_afresh(kafka_settings: KafkaSettings, applied: Topology) -> None:
    """A pre-forking server (gunicorn) forks after the parent used the producer: both keep working."""
    producer = SyncProducer(kafka_settings, applied)
    try:
        producer.submit("noop", {"who": "parent"})
        child = os.fork()
        if child == 0:  # the child: the parent's loop thread does not exist here
            code = 1
            try:
                producer.submit("noop", {"who": "child"})
                producer.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        producer.submit("noop", {"who": "parent again"})
    finally:
        producer.close()
    records = asyncio.run(read_records(kafka_settings, applied.intake_topic("normal"), 3))
    assert sorted(json.loads(r.value)["who"] for r in records) == ["child", "parent", "parent again"]
