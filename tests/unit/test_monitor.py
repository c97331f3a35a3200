"""The live monitor's pure parts: worker states, windowed waits, queue rates, percentiles, reports."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.lag import PartitionLag
from streamproc.metrics import WAIT_BUCKETS
from streamproc.monitor import board
from streamproc.monitor.board import Board, WorkerState
from streamproc.monitor.queues import Queues, quantile
from streamproc.monitor.report import WorkerReport
from streamproc.topology import Topology

T0 = 1_800_000_000_000  # ms


def report(worker: str = "h:1:0", at: int = T0, **fields: Any) -> WorkerReport:
    base: dict[str, Any] = {
        "worker": worker,
        "host": "h",
        "pid": 1,
        "version": "0",
        "group": "g",
        "started_at": T0 - 3_600_000,
        "at": at,
        "interval_s": 1.0,
        "concurrency": 8,
    }
    return WorkerReport(**(base | fields))


def state_at(b: Board, now_ms: int) -> WorkerState:
    (row,) = b.workers(now_ms)
    return row.state


def test_a_worker_is_alive_until_three_intervals_and_the_slack_pass_without_a_report() -> None:
    b = Board()
    b.apply(report())
    limit_ms = int((3 * 1.0 + board.GONE_SLACK_S) * 1000)
    assert state_at(b, T0 + limit_ms) is WorkerState.ALIVE
    assert state_at(b, T0 + limit_ms + 1) is WorkerState.GONE
    b.apply(report(at=T0 + limit_ms + 500))  # it speaks again: alive
    assert state_at(b, T0 + limit_ms + 600) is WorkerState.ALIVE


def test_a_last_report_marked_stopped_shows_stopped_not_gone() -> None:
    b = Board()
    b.apply(report(stopped=True))
    assert state_at(b, T0 + 60_000) is WorkerState.STOPPED


def test_an_older_report_read_late_does_not_replace_a_newer_one() -> None:
    b = Board()
    b.apply(report(at=T0 + 1000, in_flight=5))
    b.apply(report(at=T0, in_flight=1))
    (row,) = b.workers(T0 + 1000)
    assert row.report.in_flight == 5


def test_silent_workers_are_forgotten_and_at_most_max_workers_are_held(monkeypatch: pytest.MonkeyPatch) -> None:
    b = Board()
    b.apply(report())
    assert b.workers(T0 + int(board.FORGET_AFTER_S * 1000) + 1) == []
    monkeypatch.setattr(board, "MAX_WORKERS", 3)
    for i in range(5):
        b.apply(report(worker=f"h:{i}:0", at=T0 + i))
    held = [row.report.worker for row in b.workers(T0 + 10)]
    assert sorted(held) == ["h:2:0", "h:3:0", "h:4:0"]  # the longest silent went first


def test_the_rate_is_attempts_finished_between_the_window_s_first_and_last_report() -> None:
    b = Board()
    b.apply(report(at=T0, finished=100))
    b.apply(report(at=T0 + 2000, finished=300))
    (row,) = b.workers(T0 + 2000)
    assert row.rate_per_s == pytest.approx(100.0)


def test_waits_count_only_the_window_for_an_old_process_and_everything_for_a_new_one() -> None:
    b = Board()
    bucket_count = len(WAIT_BUCKETS) + 1
    old_before = [5] + [0] * (bucket_count - 1)
    old_now = [7, 3] + [0] * (bucket_count - 2)
    b.apply(report(worker="old", at=T0, waits={"t.normal": old_before}))
    b.apply(report(worker="old", at=T0 + 1000, waits={"t.normal": old_now}))
    b.apply(report(worker="new", at=T0 + 1000, started_at=T0, waits={"t.normal": [1] + [0] * (bucket_count - 1)}))
    assert b.waits(T0 + 1000)["t.normal"][:2] == [2 + 1, 3]


def test_reports_older_than_the_window_are_dropped() -> None:
    b = Board()
    for i in range(200):
        b.apply(report(at=T0 + i * 1000, finished=i))
    (row,) = b.workers(T0 + 199_000)
    assert row.rate_per_s == pytest.approx(1.0)
    assert len(b._reports["h:1:0"]) <= board.WINDOW_S + 1


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=len(WAIT_BUCKETS) + 1, max_size=len(WAIT_BUCKETS) + 1))
def test_quantile_lies_within_the_bucket_holding_that_rank(counts: list[int]) -> None:
    value = quantile(0.95, counts)
    if sum(counts) == 0:
        assert value is None
        return
    assert value is not None
    rank, below = 0.95 * sum(counts), 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            low = WAIT_BUCKETS[i - 1] if 0 < i <= len(WAIT_BUCKETS) else 0.0
            high = WAIT_BUCKETS[min(i, len(WAIT_BUCKETS) - 1)]
            assert min(low, high) <= value <= high
            return
        below += count


def test_quantile_interpolates_within_a_bucket_as_histogram_quantile_does() -> None:
    counts = [0] * (len(WAIT_BUCKETS) + 1)
    counts[1] = 10  # ten waits in (0.005, 0.01]
    assert quantile(0.5, counts) == pytest.approx(0.0075)


def lag_row(topic: str, partition: int, end: int, committed: int | None, ahead: int = 0) -> PartitionLag:
    return PartitionLag(topic, partition, 0, end, committed, ahead)


def test_queue_rows_give_pending_rates_and_keda_replicas_per_topic() -> None:
    topology = Topology.model_validate({"prefix": "t", "priorities": ["high"], "tiers": {"delays": ["1s"]}})
    queues = Queues(topology, "g", lag_threshold=10)
    queues.add(0.0, [lag_row("t.high", 0, 100, 50), lag_row("t.high", 1, 0, None), lag_row("t.retry.1s", 0, 5, 5)])
    queues.add(
        2.0, [lag_row("t.high", 0, 140, 60, ahead=4), lag_row("t.high", 1, 10, None), lag_row("t.retry.1s", 0, 5, 5)]
    )
    rows = {row.topic: row for row in queues.rows({"t.high": [0, 10] + [0] * (len(WAIT_BUCKETS) - 1)})}
    high, tier = rows["t.high"], rows["t.retry.1s"]
    assert high.pending == (140 - 60 - 4) + 10
    assert high.in_per_s == pytest.approx((40 + 10) / 2)
    assert high.out_per_s == pytest.approx(14 / 2)  # committed +10 and 4 finished above it
    assert high.wait_p95_s == pytest.approx(0.005 + 0.005 * 0.95)
    assert high.keda_replicas == 2  # KEDA's 80 + 10 lag over threshold 10 is capped at its 2 partitions
    assert (tier.role, tier.delay_s, tier.keda_replicas, tier.pending) == ("tier", 1.0, None, 0)


def test_a_recreated_topic_s_offsets_going_back_count_no_negative_rate() -> None:
    topology = Topology.model_validate({"prefix": "t", "priorities": ["high"]})
    queues = Queues(topology, "g", lag_threshold=10)
    queues.add(0.0, [lag_row("t.high", 0, 100, 100)])
    queues.add(1.0, [lag_row("t.high", 0, 3, None)])
    (row,) = [r for r in queues.rows({}) if r.topic == "t.high"]
    assert (row.in_per_s, row.out_per_s) == (0.0, 0.0)


@pytest.mark.parametrize("junk", [None, b"", b"not json", b"{}", b'{"worker": 1}', b"[1, 2]"])
def test_junk_on_the_monitor_topic_is_no_report(junk: bytes | None) -> None:
    assert WorkerReport.from_json(junk) is None


def test_a_report_round_trips_and_ignores_fields_it_does_not_know() -> None:
    original = report(partitions={"t.high": [0, 2]}, circuits={"send": True})
    assert WorkerReport.from_json(original.to_json()) == original
    extended = original.to_json()[:-1] + b', "from_a_newer_version": 1}'
    assert WorkerReport.from_json(extended) == original
