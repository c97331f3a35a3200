"""`Producer` and `streamproc submit` against the real broker: the SPEC §3 record, validation, batches."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.client import AIOKafkaClient
from pydantic import BaseModel

from streamproc import App, Producer, admin, provisioning
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import read_records, run_cli


class Charge(BaseModel):
    order_id: str
    cents: int


tasks = App()


@tasks.task("charge")
async def charge(payload: Charge) -> None:
    pass


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    await provisioning.apply(kafka_settings, topology)
    return topology


@pytest.fixture
async def producer(kafka_settings: KafkaSettings, applied: Topology) -> AsyncIterator[Producer]:
    async with Producer(kafka_settings, applied) as started:
        yield started


async def total_records(settings: KafkaSettings, topology: Topology, priority: str = "normal") -> int:
    """The sum of an intake topic's end offsets: 0 when nothing was ever produced to it."""
    return sum((await admin.end_offsets(settings, [topology.intake_topic(priority)])).values())


def headers_of(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def test_submit_writes_the_spec_record(kafka_settings: KafkaSettings, producer: Producer) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    before_ms = time.time() * 1000
    task_id = (
        await producer.submit(
            "send_email", {"to": "a@b.c", "subject": "hi"}, priority="high", key="user-42", traceparent=traceparent
        )
    ).id
    after_ms = time.time() * 1000
    assert uuid.UUID(task_id).version == 4

    [record] = await read_records(kafka_settings, producer.topology.intake_topic("high"), 1)
    headers = headers_of(record)
    assert set(headers) == {"task", "task-id", "enqueued-at", "attempt", "priority", "traceparent"}
    assert headers["task"] == "send_email"
    assert headers["task-id"] == task_id
    assert before_ms - 1 <= int(headers["enqueued-at"]) <= after_ms + 1
    assert headers["attempt"] == "1"
    assert headers["priority"] == "high"
    assert headers["traceparent"] == traceparent
    assert record.key == b"user-42"
    assert json.loads(record.value.decode("utf-8")) == {"to": "a@b.c", "subject": "hi"}


async def test_default_priority_is_normal_and_no_traceparent_means_no_header(
    kafka_settings: KafkaSettings, producer: Producer
) -> None:
    task_id = (await producer.submit("noop", {}, key=b"raw-bytes")).id
    [record] = await read_records(kafka_settings, producer.topology.intake_topic("normal"), 1)
    headers = headers_of(record)
    assert headers["task-id"] == task_id
    assert headers["priority"] == "normal"
    assert "traceparent" not in headers
    assert record.key == b"raw-bytes"
    assert json.loads(record.value) == {}


async def test_without_a_normal_priority_the_default_is_the_lowest(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    four = topology.model_copy(update={"priorities": ["critical", "high", "low", "bulk"]})
    await provisioning.apply(kafka_settings, four)
    async with Producer(kafka_settings, four) as producer:
        await producer.submit("noop", {"n": 1})
    [record] = await read_records(kafka_settings, four.intake_topic("bulk"), 1)
    assert headers_of(record)["priority"] == "bulk"


async def test_submit_with_a_task_validates_before_sending(kafka_settings: KafkaSettings, producer: Producer) -> None:
    topic = producer.topology.intake_topic("normal")
    with pytest.raises(StreamprocError, match=r"invalid payload for task 'charge': cents"):
        await producer.submit(charge, {"order_id": "o-1", "cents": "a lot"})
    with pytest.raises(StreamprocError, match=r"order_id: Field required"):
        await producer.submit_many(charge, [{"order_id": "o-2", "cents": 5}, {"cents": 6}])
    assert await total_records(kafka_settings, producer.topology) == 0

    task_id = (await producer.submit(charge, Charge(order_id="o-3", cents=250))).id
    [record] = await read_records(kafka_settings, topic, 1)
    assert headers_of(record)["task"] == "charge"
    assert headers_of(record)["task-id"] == task_id
    assert json.loads(record.value) == {"order_id": "o-3", "cents": 250}


async def test_unknown_priority_names_the_priorities(kafka_settings: KafkaSettings, producer: Producer) -> None:
    with pytest.raises(StreamprocError, match=r"unknown priority 'urgent': the priorities are high, normal, low"):
        await producer.submit("noop", {}, priority="urgent")
    for priority in producer.topology.priorities:
        assert await total_records(kafka_settings, producer.topology, priority) == 0


async def test_oversized_payload_raises_before_sending(kafka_settings: KafkaSettings, producer: Producer) -> None:
    with pytest.raises(StreamprocError, match=r"too large: \d+ bytes as a record, the limit is 1048576"):
        await producer.submit("noop", {"blob": "x" * 1_100_000})
    with pytest.raises(StreamprocError, match="too large"):
        await producer.submit_many("noop", [{"n": 1}, {"blob": "x" * 1_100_000}])
    assert await total_records(kafka_settings, producer.topology) == 0


async def test_max_request_size_is_configurable(kafka_settings: KafkaSettings, applied: Topology) -> None:
    async with Producer(kafka_settings, applied, max_request_size=2_000) as small:
        await small.submit("noop", {"blob": "x" * 1_000})
        with pytest.raises(StreamprocError, match="the limit is 2000"):
            await small.submit("noop", {"blob": "x" * 2_000})
    assert await total_records(kafka_settings, applied) == 1


async def test_payload_must_be_a_json_object(producer: Producer) -> None:
    with pytest.raises(StreamprocError, match="must be a mapping or a pydantic model"):
        await producer.submit("noop", [1, 2])  # type: ignore[call-overload]
    with pytest.raises(StreamprocError, match="not JSON-serialisable"):
        await producer.submit("noop", {"when": object()})


async def test_a_missing_topic_is_a_clear_error(kafka_settings: KafkaSettings, topology: Topology) -> None:
    """Topics are not applied here: the producer says so at once instead of waiting for a timeout."""
    started = time.monotonic()
    async with Producer(kafka_settings, topology) as producer:
        with pytest.raises(StreamprocError, match=r"does not exist .*streamproc topics apply"):
            await producer.submit("noop", {})
    assert time.monotonic() - started < 10


async def test_concurrent_first_submits_read_the_cluster_metadata_once(
    kafka_settings: KafkaSettings, applied: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read decodes every topic of the cluster (thousands on a shared one, and on the test
    broker by the end of a run): 300 submits at once, delayed ones included, must not make 300 reads."""
    reads = 0
    read_all = AIOKafkaClient.fetch_all_metadata

    async def counted(client: AIOKafkaClient) -> Any:
        nonlocal reads
        reads += 1
        return await read_all(client)

    monkeypatch.setattr(AIOKafkaClient, "fetch_all_metadata", counted)
    async with Producer(kafka_settings, applied) as producer:
        handles = await asyncio.gather(
            *(producer.submit("noop", {"n": n}, countdown=60 if n % 2 else None) for n in range(300))
        )
    assert len({h.id for h in handles}) == 300
    assert reads == 1


async def test_submit_before_start_is_a_clear_error(kafka_settings: KafkaSettings, applied: Topology) -> None:
    with pytest.raises(StreamprocError, match="not started"):
        await Producer(kafka_settings, applied).submit("noop", {})


async def test_submit_many_sends_every_task(kafka_settings: KafkaSettings, producer: Producer) -> None:
    ids = [
        h.id for h in await producer.submit_many("noop", [{"n": i} for i in range(500)], priority="low", key="batch")
    ]
    assert len(ids) == len(set(ids)) == 500
    records = await read_records(kafka_settings, producer.topology.intake_topic("low"), 500)
    assert {headers_of(r)["task-id"] for r in records} == set(ids)
    # One key, one partition: the batch keeps its order there.
    assert [json.loads(r.value)["n"] for r in records] == list(range(500))
    assert [h.id for h in await producer.submit_many("noop", [])] == []


async def test_from_env_reads_the_topics_file(
    kafka_settings: KafkaSettings, bootstrap: str, applied: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(applied.model_dump()))
    monkeypatch.setenv("STREAMPROC_TOPICS_FILE", str(topics_file))
    async with Producer.from_env() as producer:
        assert producer.topology == applied
        await producer.submit("noop", {})
    assert await total_records(kafka_settings, applied) == 1


@pytest.fixture
def topics_env(bootstrap: str, applied: Topology, tmp_path: Path) -> dict[str, str]:
    """Environment for `streamproc` subprocesses: the session broker and this test's topics."""
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(applied.model_dump()))
    return {"STREAMPROC_BOOTSTRAP_SERVERS": bootstrap, "STREAMPROC_TOPICS_FILE": str(topics_file)}


async def test_cli_submit_count(kafka_settings: KafkaSettings, applied: Topology, topics_env: dict[str, str]) -> None:
    result = run_cli("submit", "noop", "--json", '{"n": 7}', "--priority", "high", "--count", "3", **topics_env)
    assert result.returncode == 0, result.stderr
    assert f"submitted 3 tasks to {applied.intake_topic('high')}" in result.stdout
    records = await read_records(kafka_settings, applied.intake_topic("high"), 3)
    assert all(json.loads(r.value) == {"n": 7} and headers_of(r)["task"] == "noop" for r in records)
    assert len({headers_of(r)["task-id"] for r in records}) == 3


async def test_cli_submit_one_prints_its_id(
    kafka_settings: KafkaSettings, applied: Topology, topics_env: dict[str, str]
) -> None:
    payload = '{"to": "a@b.c", "subject": "hi"}'
    result = run_cli(
        "submit", "send_email", "--json", payload, "--app", "handlers.app:app", "--key", "k1", **topics_env
    )
    assert result.returncode == 0, result.stderr
    [record] = await read_records(kafka_settings, applied.intake_topic("normal"), 1)
    assert result.stdout.strip() == headers_of(record)["task-id"]
    assert record.key == b"k1"
    assert json.loads(record.value) == {"to": "a@b.c", "subject": "hi", "body": ""}


async def test_cli_submit_with_app_refuses_an_invalid_payload(
    kafka_settings: KafkaSettings, applied: Topology, topics_env: dict[str, str]
) -> None:
    payload = '{"document_id": "d1", "pages": 0}'
    result = run_cli("submit", "process_document", "--json", payload, "--app", "handlers.app:app", **topics_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pages" in lines[0] and "process_document" in lines[0]
    assert await total_records(kafka_settings, applied) == 0


async def test_cli_submit_usage_errors(topics_env: dict[str, str]) -> None:
    not_json = run_cli("submit", "noop", "--json", "{oops", **topics_env)
    assert not_json.returncode == 2
    assert "not valid JSON" in not_json.stderr
    unknown = run_cli("submit", "nope", "--app", "handlers.app:app", **topics_env)
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and "'nope' is not registered" in unknown.stderr
    priority = run_cli("submit", "noop", "--priority", "urgent", **topics_env)
    assert priority.returncode == 1
    assert "unknown priority 'urgent'" in priority.stderr
