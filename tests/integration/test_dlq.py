"""`streamproc dlq list|show|replay` against the real broker: dead letters are written straight to the
DLQ with the worker's failure headers, and replays are checked on the records that reach intake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc import admin, dlq, provisioning
from streamproc.dead_letters import Selection
from streamproc.dlq import replay
from streamproc.envelope import Envelope, failure_headers
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import read_records, run_cli


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    """The test topology with a two-partition DLQ (so a bare offset can be ambiguous), on the cluster."""
    topology = topology.model_copy(update={"dlq": topology.dlq.model_copy(update={"partitions": 2})})
    await provisioning.apply(kafka_settings, topology)
    return topology


@pytest.fixture
def topics_file(applied: Topology, tmp_path: Path, bootstrap: str) -> str:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(applied.model_dump()))
    return str(path)


@pytest.fixture
async def dlq_producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**kafka_settings.client_kwargs(), acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def dead_letter(
    producer: AIOKafkaProducer,
    topology: Topology,
    task: str | None,
    reason: str = "permanent_error",
    *,
    partition: int = 0,
    priority: str = "normal",
    key: bytes | None = None,
    value: bytes | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    """Write a DLQ record as the worker would for a task that failed on `<prefix>.<priority>`; its id."""
    intake = topology.intake_topic(priority)
    envelope = Envelope(
        topic=intake,
        partition=1,
        offset=7,
        key=key,
        value=value if value is not None else json.dumps({"task": task}).encode(),
        headers={"tenant": "acme"},
        task=task,
        task_id=f"id-{task}-{reason}-{partition}",
        enqueued_at_ms=1_700_000_000_000,
        attempt=1,
        priority=priority,
    )
    headers = failure_headers(
        envelope,
        attempt=3,
        error_type="ValueError",
        error_message=f"{task} went wrong " + "x" * 100,
        failed_at_ms=1_700_000_001_000,
        dlq_reason=reason,
    )
    headers = [(name, raw) for name, raw in headers if name not in drop]
    sent = await producer.send_and_wait(
        topology.dlq_topic, envelope.value, key=key, headers=headers, partition=partition
    )
    return f"{sent.partition}:{sent.offset}"


def headers_of(record: Any) -> dict[str, str]:
    return {name: raw.decode() for name, raw in record.headers}


async def intake_count(settings: KafkaSettings, topology: Topology) -> int:
    """Records ever written to the intake topics (the sum of their end offsets)."""
    intake = [topology.intake_topic(p) for p in topology.priorities]
    return sum((await admin.end_offsets(settings, intake)).values())


async def ledger_of(settings: KafkaSettings, group: str, topic: str) -> tuple[int, str]:
    """The replay group's commit on DLQ partition 0: (offset, metadata)."""
    committed = (await admin.committed_with_metadata(settings, group))[TopicPartition(topic, 0)]
    return committed.offset, committed.metadata


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


async def test_list_filters_and_prints_json(
    dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    a1 = await dead_letter(dlq_producer, applied, "a")
    await dead_letter(dlq_producer, applied, "b", "retries_exhausted")
    a2 = await dead_letter(dlq_producer, applied, "a", key=b"k1")
    binary = await dead_letter(dlq_producer, applied, "c", "undecodable", value=b"\xff\xfe")

    table = ok(run_cli("dlq", "list", "--file", topics_file))
    assert "4 dead letters" in table
    for letter_id in (a1, a2, binary):
        assert letter_id in table
    assert "2023-11-14T22:13:21.000Z" in table  # failed-at in UTC
    assert "ValueError: a went wrong" in table and "x" * 100 not in table  # the message is cut

    listed = json.loads(ok(run_cli("dlq", "list", "--task", "a", "--json", "--file", topics_file)))
    assert [(e["partition"], e["offset"]) for e in listed] == [(0, 0), (0, 2)]
    assert listed[1]["key"] == "k1"
    assert listed[0]["headers"]["task"] == "a" and listed[0]["headers"]["dlq-reason"] == "permanent_error"
    assert json.loads(listed[0]["value"]) == {"task": "a"}
    assert isinstance(listed[0]["timestamp"], int)

    [undecodable] = json.loads(ok(run_cli("dlq", "list", "--reason", "undecodable", "--json", "--file", topics_file)))
    assert undecodable["value_base64"] == "//4=" and "value" not in undecodable

    [newest] = json.loads(ok(run_cli("dlq", "list", "--limit", "1", "--json", "--file", topics_file)))
    assert newest["offset"] == 3
    assert "the most recent 2 of 4 dead letters" in ok(run_cli("dlq", "list", "-n", "2", "--file", topics_file))

    refused = run_cli("dlq", "list", "--reason", "bad_luck", "--file", topics_file)
    assert refused.returncode == 2 and "retries_exhausted" in refused.stderr


async def test_show_by_id_by_bare_offset_and_ambiguous(
    dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    await dead_letter(dlq_producer, applied, "a", partition=0)
    await dead_letter(dlq_producer, applied, "b", "unknown_task", partition=0)
    await dead_letter(dlq_producer, applied, "c", "invalid_payload", partition=1)

    shown = ok(run_cli("dlq", "show", "0:1", "--file", topics_file))
    for line in ("task-id", "id-b-unknown_task-0", "dlq-reason", "unknown_task", "original-topic", "tenant"):
        assert line in shown
    assert '"task": "b"' in shown  # the value, pretty-printed JSON

    assert "id-b-unknown_task-0" in ok(run_cli("dlq", "show", "1", "--file", topics_file))  # only partition 0 has 1
    assert "invalid_payload" in ok(run_cli("dlq", "show", "1:0", "--file", topics_file))

    ambiguous = run_cli("dlq", "show", "0", "--file", topics_file)
    assert ambiguous.returncode == 1
    assert "0:0, 1:0" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    missing = run_cli("dlq", "show", "0:9", "--file", topics_file)
    assert missing.returncode == 1 and "no dead letter at 0:9" in missing.stderr


async def test_show_by_task_id_shows_the_newest_and_names_the_others(
    dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    first = await dead_letter(dlq_producer, applied, "a", value=b'{"run": "first"}')
    await dead_letter(dlq_producer, applied, "b", partition=1)
    second = await dead_letter(dlq_producer, applied, "a", value=b'{"run": "second"}')  # the same task id again

    shown = ok(run_cli("dlq", "show", "id-a-permanent_error-0", "--file", topics_file))
    assert f"{applied.dlq_topic} {second}" in shown
    assert '"run": "second"' in shown and '"run": "first"' not in shown
    assert f"task id id-a-permanent_error-0 has 2 dead letters; this is the newest, the older: {first}" in shown

    only = ok(run_cli("dlq", "show", "id-b-permanent_error-1", "--file", topics_file))
    assert f"{applied.dlq_topic} 1:0" in only and "has 2 dead letters" not in only

    missing = run_cli("dlq", "show", "no-such-id", "--file", topics_file)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: no dead letter of task id 'no-such-id' in {applied.dlq_topic}"
    )
    negative = run_cli("dlq", "show", "0:-1", "--file", topics_file)  # a malformed id, not a task id
    assert negative.returncode == 2 and "not negative" in negative.stderr


async def test_replayed_dead_letters_are_marked_in_list_and_show(
    dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    ids = [await dead_letter(dlq_producer, applied, task) for task in ("a", "b", "a")]
    ids.append(await dead_letter(dlq_producer, applied, "c", partition=1))

    listed = json.loads(ok(run_cli("dlq", "list", "--json", "--file", topics_file)))
    assert [e["replayed"] for e in listed] == [False] * 4
    assert "replayed 2 dead letters" in ok(run_cli("dlq", "replay", "--task", "a", "--file", topics_file))

    listed = json.loads(ok(run_cli("dlq", "list", "--json", "--file", topics_file)))
    assert {f"{e['partition']}:{e['offset']}": e["replayed"] for e in listed} == dict(
        zip(ids, [True, False, True, False], strict=True)
    )
    table = ok(run_cli("dlq", "list", "--file", topics_file))
    rows = {line.split()[1]: line for line in table.splitlines() if line.split()[1:2] and line.split()[1] in ids}
    assert {i for i, row in rows.items() if "✓" in row} == {ids[0], ids[2]}
    assert f"4 dead letters in {applied.dlq_topic}, 2 of them replayed (replay group {applied.dlq_topic}-replay)" in (
        table
    )
    other = json.loads(ok(run_cli("dlq", "list", "--json", "--group", "another-group", "--file", topics_file)))
    assert [e["replayed"] for e in other] == [False] * 4

    assert f"yes (replay group {applied.dlq_topic}-replay)" in ok(run_cli("dlq", "show", ids[0], "--file", topics_file))
    assert f"no (replay group {applied.dlq_topic}-replay)" in ok(run_cli("dlq", "show", ids[1], "--file", topics_file))
    by_id = ok(run_cli("dlq", "show", "id-a-permanent_error-0", "--file", topics_file))  # 0:2 shown, 0:0 named
    assert "yes (replay group" in by_id and f"the older: {ids[0]} (replayed)" in by_id


async def test_replay_sends_to_the_intake_of_each_priority_once(
    kafka_settings: KafkaSettings, dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    high = await dead_letter(dlq_producer, applied, "a", priority="high", key=b"user-1")
    normal = await dead_letter(dlq_producer, applied, "b", "retries_exhausted", partition=1)
    no_priority = await dead_letter(dlq_producer, applied, "c", drop=("priority",))

    out = ok(run_cli("dlq", "replay", "--file", topics_file))
    assert "replayed 3 dead letters" in out and "skipped 0 already replayed" in out

    [to_high] = await read_records(kafka_settings, applied.intake_topic("high"), 1)
    to_normal = await read_records(kafka_settings, applied.intake_topic("normal"), 2)
    by_origin = {headers_of(r)["replayed-from"]: r for r in [to_high, *to_normal]}
    dlq = applied.dlq_topic
    assert set(by_origin) == {f"{dlq}-{letter_id.replace(':', '-')}" for letter_id in (high, normal, no_priority)}

    record = by_origin[f"{dlq}-{high.replace(':', '-')}"]
    assert record.key == b"user-1"
    assert json.loads(record.value) == {"task": "a"}
    headers = headers_of(record)
    assert headers["attempt"] == "1"
    assert headers["task"] == "a" and headers["task-id"] == "id-a-permanent_error-0" and headers["tenant"] == "acme"
    assert headers["priority"] == "high"
    failure = {"error-type", "error-message", "failed-at", "dlq-reason", "original-topic", "original-offset"}
    assert not failure & set(headers)
    assert headers_of(by_origin[f"{dlq}-{no_priority.replace(':', '-')}"])["priority"] == "normal"

    again = ok(run_cli("dlq", "replay", "--file", topics_file))
    assert "replayed 0 dead letters" in again and "3 older dead letters were replayed before" in again
    assert await intake_count(kafka_settings, applied) == 3  # the CLI waits for acks: nothing more was sent


async def test_task_replay_then_unfiltered_replay_sends_each_record_once(
    kafka_settings: KafkaSettings, dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    ids = [await dead_letter(dlq_producer, applied, task) for task in ("a", "b", "a", "b", "a", "b")]

    assert "replayed 3 dead letters" in ok(run_cli("dlq", "replay", "--task", "a", "--file", topics_file))
    first = await read_records(kafka_settings, applied.intake_topic("normal"), 3)
    assert {headers_of(r)["task"] for r in first} == {"a"}
    group = f"{applied.dlq_topic}-replay"
    assert await ledger_of(kafka_settings, group, applied.dlq_topic) == (1, "2,4")  # 1 (b) is not replayed

    out = ok(run_cli("dlq", "replay", "--file", topics_file))
    assert "replayed 3 dead letters" in out and "skipped 2 already replayed" in out  # 2 and 4; 0 is not read
    records = await read_records(kafka_settings, applied.intake_topic("normal"), 6)
    origins = sorted(headers_of(r)["replayed-from"] for r in records)
    assert origins == sorted(f"{applied.dlq_topic}-{i.replace(':', '-')}" for i in ids)
    assert await ledger_of(kafka_settings, group, applied.dlq_topic) == (6, "")
    assert await intake_count(kafka_settings, applied) == 6


async def test_replay_of_given_offsets(
    kafka_settings: KafkaSettings, dlq_producer: AIOKafkaProducer, applied: Topology, topics_file: str
) -> None:
    for task in ("a", "b", "c", "d"):
        await dead_letter(dlq_producer, applied, task)
    await dead_letter(dlq_producer, applied, "e", partition=1)

    out = ok(run_cli("dlq", "replay", "--offsets", "0:1,0:3", "-o", "1:0", "--file", topics_file))
    assert "replayed 3 dead letters" in out
    records = await read_records(kafka_settings, applied.intake_topic("normal"), 3)
    assert sorted(headers_of(r)["task"] for r in records) == ["b", "d", "e"]

    again = ok(run_cli("dlq", "replay", "--offsets", "0:1", "--file", topics_file))
    assert "replayed 0 dead letters" in again and "skipped 1 already replayed" in again
    refused = run_cli("dlq", "replay", "--offsets", "0", "--file", topics_file)  # in both partitions
    assert refused.returncode == 1 and "0:0, 1:0" in refused.stderr

    assert "replayed 2 dead letters" in ok(run_cli("dlq", "replay", "--file", topics_file))
    records = await read_records(kafka_settings, applied.intake_topic("normal"), 5)
    assert sorted(headers_of(r)["task"] for r in records) == ["a", "b", "c", "d", "e"]


async def test_replay_stops_before_its_ledger_outgrows_the_metadata_limit(
    kafka_settings: KafkaSettings, dlq_producer: AIOKafkaProducer, applied: Topology
) -> None:
    for task in ("a", "b") * 5:
        await dead_letter(dlq_producer, applied, task)

    # offsets 0, 2, 4 of task a fit in 3 bytes of metadata ("2,4"); 6 would make it "2,4,6"
    summary = await replay(kafka_settings, applied, Selection(task="a"), max_metadata_bytes=3)
    assert summary.sent == 3 and summary.stopped_at is not None and summary.stopped_at.id == "0:6"
    assert await intake_count(kafka_settings, applied) == 3
    assert await ledger_of(kafka_settings, summary.group, applied.dlq_topic) == (1, "2,4")

    rest = await replay(kafka_settings, applied, max_metadata_bytes=3)  # fills the gaps: the ledger shrinks
    assert (rest.sent, rest.already_replayed, rest.not_read, rest.stopped_at) == (7, 2, 1, None)
    assert await intake_count(kafka_settings, applied) == 10


async def test_long_replay_commits_as_it_goes(
    kafka_settings: KafkaSettings, dlq_producer: AIOKafkaProducer, applied: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dlq, "REPLAY_CHUNK", 2)
    for task in "abcde":
        await dead_letter(dlq_producer, applied, task)
    seen: list[dlq.ReplayProgress] = []

    summary = await replay(kafka_settings, applied, progress=seen.append)
    assert summary.sent == 5 and summary.by_task == {t: 1 for t in "abcde"}
    assert seen[-1] == dlq.ReplayProgress(scanned=5, total=5, sent=5)
    assert await ledger_of(kafka_settings, summary.group, applied.dlq_topic) == (5, "")
    records = await read_records(kafka_settings, applied.intake_topic("normal"), 5)
    assert sorted(headers_of(r)["task"] for r in records) == list("abcde")
