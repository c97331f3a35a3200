"""Whatever a record carries, it ends as a task outcome or a dead letter (SPEC §11).

Property tests over header keys and values, record keys and values: fetched through aiokafka's
fetcher with `lenient_decoding` installed, read as an envelope, run by an `Executor`, routed by an
`OutcomeRouter` whose producer builds every record it is given with aiokafka's own batch builder
and parses it back with aiokafka's strict parser. `make fuzz` runs them with far more examples.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aiokafka.consumer.fetcher as fetcher
from aiokafka import TopicPartition
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import CorruptRecordException, MessageSizeTooLargeError
from aiokafka.record.default_records import (
    DefaultRecordBatch,
    DefaultRecordBatchBuilder,
    _DefaultRecordBatchBuilderPy,
    _DefaultRecordBatchPy,
)
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from pydantic import BaseModel

from streamproc import App, PermanentError, TaskContext
from streamproc.acked import AckedWriter
from streamproc.dead_letters import DeadLetter
from streamproc.envelope import DLQ_REASONS, NUMERIC_RANGES, VALUE_DROPPED, read_envelope
from streamproc.execution import Executor, Result
from streamproc.lenient_decoding import install, read_batch
from streamproc.metrics import Metrics
from streamproc.routing import Disposition, OutcomeRouter
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

app = App()


class Order(BaseModel):
    label: str
    amount: int = 0


@app.task("ok")
async def ok(payload: dict[str, Any]) -> None:
    """Succeeds."""


@app.task("model")
def model(payload: Order) -> None:
    """Sync, with a model: succeeds once the payload fits."""


@app.task("refuse")
async def refuse(payload: dict[str, Any]) -> None:
    raise PermanentError(" ".join(v for v in payload.values() if isinstance(v, str)) or "refused")


@app.task("boom")
async def boom(payload: dict[str, Any], ctx: TaskContext) -> None:
    """Fails with an error echoing the key as text, lone surrogates and all, and the payload."""
    key = (ctx.key or b"").decode("utf-8", "surrogateescape")
    raise RuntimeError(f"{key} {json.dumps(payload, ensure_ascii=False)[:5000]}")


TOPOLOGY = Topology.model_validate({"routes": [{"topic": "orders.created", "task": "ok", "priority": "normal"}]})
RANKS = {name: rank for rank, name in enumerate(TOPOLOGY.priorities)}
TOPICS = {  # topic → (its priority, its route's task), as the worker reads them from the topology
    "tasks.normal": ("normal", None),
    "orders.created": ("normal", "ok"),
    "tasks.retry.5s": ("", None),
}
LIMIT = 1_000_000  # bytes of the largest record the stand-in producer accepts, as a topic's max.message.bytes

NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.integers(0, 6000).map(lambda n: "9" * n),
    st.sampled_from(["", "-1", "0", " 7 ", "1e30", "1_000", "٣", "nan", str(2**63), "1" + "0" * 4300]),
).map(str.encode)
NAMES = st.one_of(
    st.sampled_from(
        [
            "task",
            "task-id",
            "enqueued-at",
            "attempt",
            "priority",
            "retry-at",
            "failed-at",
            "original-topic",
            "original-partition",
            "original-offset",
            "dlq-reason",
            VALUE_DROPPED,
            "error-message",
            "traceparent",
        ]
    ).map(str.encode),
    st.binary(max_size=12),  # not UTF-8 more often than not
    st.text(max_size=8).map(str.encode),
)
HEADER_VALUES = st.one_of(
    NUMBERS,
    st.sampled_from([*app.tasks, *RANKS, "urgent", "", "unregistered"]).map(str.encode),
    st.binary(max_size=40),
    st.none(),
    st.just(b"h" * 1_100_000),  # too large for the DLQ even without the value
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(st.sampled_from(["label", "amount", "x"]) | st.text(max_size=6), JSON, max_size=4)
VALUES = st.one_of(
    st.none(),
    st.binary(max_size=64),
    OBJECTS.map(lambda obj: json.dumps(obj, ensure_ascii=False).encode()),
    JSON.map(lambda value: json.dumps(value).encode()),  # mostly not an object
    st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000]),  # deep
    st.just(json.dumps({"label": "x" * 1_500_000}).encode()),  # too large to copy anywhere
)
KEYS = st.none() | st.binary(max_size=32)
TASK_HEADER = st.lists(st.sampled_from([*app.tasks, "nobody"]).map(lambda name: (b"task", name.encode())), max_size=1)
HEADERS = st.builds(list.__add__, TASK_HEADER, st.lists(st.tuples(NAMES, HEADER_VALUES), max_size=8))
RECORDS = st.tuples(KEYS, VALUES, HEADERS)
Wire = tuple[bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]


class WireKey(str):
    """A header key that aiokafka's Python batch builder writes as the given bytes, UTF-8 or not."""

    raw: bytes

    def __new__(cls, raw: bytes) -> WireKey:
        key = super().__new__(cls, raw.decode("utf-8", "replace"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def batch_bytes(records: list[Wire], base_offset: int, codec: int = 0) -> bytes:
    """A v2 batch as a producer would send it (base offset set as the broker does), header keys as given."""
    builder = _DefaultRecordBatchBuilderPy(2, codec, 0, -1, -1, -1, 2**31 - 1)
    for delta, (key, value, headers) in enumerate(records):
        builder.append(delta, 1_700_000_000_000, key, value, [(WireKey(name), v) for name, v in headers])
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base_offset)  # outside the CRC, like the broker's offset assignment
    return bytes(raw)


def fetch(batches: list[list[Wire]], topic: str = "tasks.normal") -> list[Any]:
    """The consumer records aiokafka's fetcher yields for one fetched response holding `batches`."""
    install()
    buffer, offset = b"", 0
    for records in batches:
        buffer += batch_bytes(records, offset)
        offset += len(records)
    tp = TopicPartition(topic, 0)
    return list(fetcher.PartitionRecords(tp, fetcher.MemoryRecords(buffer), [], 0, None, None, True, 0))


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


class WireCheckingProducer:
    """Stands in for aiokafka's producer: refuses what it refuses (neither key nor value), builds each
    record with aiokafka's batch builder (str header keys that encode as UTF-8, bytes values), refuses
    one over `LIMIT` bytes as the broker does, and reads it back with aiokafka's strict parser."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Any = None, partition: Any = None
    ) -> asyncio.Future[None]:
        assert not (value is None and key is None), "Need at least one: key or value"
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 2**31 - 1)
        builder.append(0, None, key, value, headers)
        raw = bytes(builder.build())
        if len(raw) > LIMIT:
            raise MessageSizeTooLargeError(f"{len(raw)} bytes")
        [record] = list(DefaultRecordBatch(raw))
        self.sent.append((topic, record))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


class CheckedWriter(AckedWriter):
    def _new_producer(self) -> Any:
        self.producer = WireCheckingProducer()
        return self.producer


def checked_router() -> tuple[OutcomeRouter, CheckedWriter]:
    writer = CheckedWriter(KafkaSettings(bootstrap_servers="unused:9092"))
    return OutcomeRouter(writer, TOPOLOGY, app.tasks), writer


async def run_through_worker_path(fetched: list[Any], topic: str) -> tuple[list[tuple[Any, Any]], Metrics, Any]:
    """Each record's (outcome, routed), the metrics they recorded and the records the router wrote."""
    priority, route_task = TOPICS[topic]
    router, writer = checked_router()
    executor = Executor(app, threads=1)
    metrics = Metrics(app.tasks, "fuzz")
    results = []
    await writer.start()
    try:
        for record in fetched:
            envelope = read_envelope(record, route_task, priority, RANKS)
            named = dict(record.headers).get("priority")
            declared = named.decode("utf-8", "replace") if named is not None else ""
            assert envelope.priority == (declared if declared in RANKS else priority or TOPOLOGY.priorities[-1])
            low, high = NUMERIC_RANGES["attempt"]
            assert low <= envelope.attempt <= high
            for ms in (envelope.enqueued_at_ms, envelope.retry_at_ms or 0):
                datetime.fromtimestamp(ms / 1000, UTC)  # any header-derived time is a date
            metrics.task_started(envelope)
            outcome = await executor.run(envelope)
            routed = await router.route(envelope, outcome)
            metrics.task_finished(envelope, outcome, routed)
            results.append((outcome, routed))
    finally:
        executor.close()
        await writer.stop()
    return results, metrics, writer.producer


@given(
    batches=st.lists(st.lists(RECORDS, min_size=1, max_size=4), min_size=1, max_size=3),
    topic=st.sampled_from(list(TOPICS)),
)
def test_any_record_becomes_a_task_outcome_or_a_dead_letter_any_consumer_can_read(
    batches: list[list[Wire]], topic: str
) -> None:
    wire = [record for records in batches for record in records]
    fetched = fetch(batches, topic)
    assert [(r.offset, r.key, r.value) for r in fetched] == [(i, k, v) for i, (k, v, _) in enumerate(wire)]
    assert [[(n.encode("utf-8", "surrogateescape"), v) for n, v in r.headers] for r in fetched] == [h for *_, h in wire]

    results, metrics, producer = asyncio.run(run_through_worker_path(fetched, topic))

    dead = iter([record for to, record in producer.sent if to == TOPOLOGY.dlq_topic])
    for (key, value, headers), (outcome, routed) in zip(wire, results, strict=True):
        assert outcome.result in (Result.SUCCEEDED, Result.FAILED, Result.DEAD)
        if outcome.result is Result.DEAD:
            assert outcome.reason in DLQ_REASONS
        if not all(is_utf8(name) for name, _ in headers):
            assert (outcome.result, outcome.reason) == (Result.DEAD, "undecodable")
            assert "is not UTF-8" in str(outcome.error)
        if routed.disposition is not Disposition.DEAD_LETTERED:
            continue
        assert routed.reason in DLQ_REASONS
        letter = next(dead)
        sent = {name: raw for name, raw in letter.headers}
        assert sent["dlq-reason"].decode() == routed.reason
        if VALUE_DROPPED in sent:
            assert letter.value == b"" and sent[VALUE_DROPPED] == str(len(value or b"")).encode()
        else:
            assert (letter.key, letter.value) == (key, value if value is not None or key is not None else b"")
        shown = DeadLetter.from_record(SimpleNamespace(topic="tasks.dlq", partition=0, **fields_of(letter)))
        datetime.fromtimestamp(shown.failed_at_ms / 1000, UTC)
        assert shown.reason == routed.reason and shown.attempt >= 1
    assert next(dead, None) is None
    exposition = generate_latest(metrics.registry).decode()
    assert set(re.findall(r'priority="([^"]*)"', exposition)) <= set(RANKS)


def fields_of(record: Any) -> dict[str, Any]:
    names = ("offset", "timestamp", "key", "value", "headers")
    return {name: getattr(record, name) for name in names}


CODECS = [
    codec
    for codec, present in ((0, True), (1, has_gzip()), (2, has_snappy()), (3, has_lz4()), (4, has_zstd()))
    if present
]
VALID_RECORDS = st.tuples(
    st.none() | st.integers(0, 2**62),
    KEYS,
    st.none() | st.binary(max_size=64),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=16)), max_size=4),
)


def fields(record: Any) -> tuple[Any, ...]:
    return (record.offset, record.timestamp, record.timestamp_type, record.key, record.value, list(record.headers))


@given(
    records=st.lists(VALID_RECORDS, min_size=1, max_size=8),
    codec=st.sampled_from(CODECS),
    base_offset=st.integers(0, 2**40),
    log_append_time=st.booleans(),
)
def test_the_lenient_parser_reads_valid_batches_exactly_as_aiokafka_does(
    records: list[tuple[int | None, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    codec: int,
    base_offset: int,
    log_append_time: bool,
) -> None:
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 2**31 - 1)  # the producer's builder
    for delta, (timestamp, key, value, headers) in enumerate(records):
        builder.append(delta, timestamp, key, value, headers)
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base_offset)
    if log_append_time:  # set by a broker with message.timestamp.type=LogAppendTime
        raw[22] |= 0x08
    expected = [fields(r) for r in DefaultRecordBatch(bytes(raw))]
    assert [fields(r) for r in _DefaultRecordBatchPy(bytes(raw))] == expected
    assert [fields(r) for r in read_batch(bytes(raw))] == expected


@given(data=st.data(), records=st.lists(RECORDS, min_size=1, max_size=3))
def test_the_lenient_parser_raises_only_corrupt_record_on_any_bytes(data: st.DataObject, records: list[Wire]) -> None:
    raw = bytearray(batch_bytes(records, 0, data.draw(st.sampled_from([0, 1]))))
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    try:
        parsed = read_batch(bytes(raw) if data.draw(st.booleans()) else data.draw(st.binary(max_size=200)))
    except CorruptRecordException:
        return
    assert all(isinstance(record.offset, int) for record in parsed)


def test_install_is_idempotent_and_keeps_good_batches_as_aiokafka_reads_them() -> None:
    install()
    wrapped = fetcher.MemoryRecords
    install()
    assert fetcher.MemoryRecords is wrapped
    [record] = fetch([[(b"k", b"{}", [(b"task", b"ok")])]])
    assert (record.key, record.value, record.headers) == (b"k", b"{}", (("task", b"ok"),))


PURE_PYTHON_FETCH = """
import aiokafka.consumer.fetcher as fetcher
from aiokafka import TopicPartition
from aiokafka.record import memory_records
from streamproc.lenient_decoding import install
from tests.unit.test_poison_fuzz import batch_bytes
install()
raw = batch_bytes([(None, b"1", []), (None, b"2", [(b"k\\xff", b"v")]), (None, b"3", [])], 0)
records = fetcher.PartitionRecords(TopicPartition("t", 0), fetcher.MemoryRecords(raw), [], 0, None, None, True, 0)
print(memory_records.MemoryRecords.__name__, [(r.offset, r.value, r.headers) for r in records])
"""


def test_the_pure_python_parser_path_is_lenient_too() -> None:
    """aiokafka without its C extensions raises CorruptRecordException rather than UnicodeDecodeError."""
    done = subprocess.run(
        [sys.executable, "-c", PURE_PYTHON_FETCH],
        env=os.environ | {"AIOKAFKA_NO_EXTENSIONS": "1"},
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == ("_MemoryRecordsPy [(0, b'1', ()), (1, b'2', (('k\\udcff', b'v'),)), (2, b'3', ())]")


def record(headers: Sequence[tuple[str, bytes | None]], topic: str = "tasks.normal") -> SimpleNamespace:
    return SimpleNamespace(
        topic=topic, partition=0, offset=9, timestamp=1_700_000_000_000, key=None, value=b"{}", headers=headers
    )


def test_numeric_headers_outside_their_range_count_as_absent() -> None:
    absurd = [b"1" + b"0" * 30, b"-1", b"9" * 5000, b"", b"0x10", b"1e3"]
    for raw in absurd:
        envelope = read_envelope(
            record([("attempt", raw), ("enqueued-at", raw), ("retry-at", raw)]), None, "normal", RANKS
        )
        assert (envelope.attempt, envelope.enqueued_at_ms, envelope.retry_at_ms) == (1, 1_700_000_000_000, None), raw
    envelope = read_envelope(
        record([("attempt", b"3"), ("enqueued-at", b"5"), ("retry-at", b"7")]), None, "normal", RANKS
    )
    assert (envelope.attempt, envelope.enqueued_at_ms, envelope.retry_at_ms) == (3, 5, 7)


def test_a_priority_header_counts_only_when_it_names_a_declared_priority() -> None:
    def priority(named: bytes | None, topic_priority: str) -> str:
        headers = [("priority", named)] if named is not None else []
        return read_envelope(record(headers), None, topic_priority, RANKS).priority

    assert priority(b"high", "normal") == "high"
    assert priority(b"urgent", "normal") == priority(None, "normal") == "normal"
    assert priority(b"urgent", "") == priority(None, "") == "low"  # a tier record: the lowest
    assert priority(b"high", "") == "high"


async def test_a_dead_letter_too_large_even_without_its_value_keeps_only_streamproc_headers() -> None:
    router, writer = checked_router()
    fetched = fetch([[(b"k" * 2_000_000, b'{"label": "x"}', [(b"task", b"refuse"), (b"mine", b"m" * 100)])]])
    envelope = read_envelope(fetched[0], None, "normal", RANKS)
    executor = Executor(app, threads=1)
    await writer.start()
    try:
        routed = await router.route(envelope, await executor.run(envelope))
    finally:
        executor.close()
        await writer.stop()
    assert routed.reason == "permanent_error"
    [(topic, letter)] = writer.producer.sent
    headers = dict(letter.headers)
    assert (topic, letter.key, letter.value) == ("tasks.dlq", None, b"")
    assert headers["value-dropped"] == b"14" and headers["dlq-reason"] == b"permanent_error"
    assert "mine" not in headers and headers["task"] == b"refuse"
