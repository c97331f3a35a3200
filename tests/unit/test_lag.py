"""Lag of a partition, and KEDA's replica formula computed by hand."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from streamproc.cli.lag import By, render
from streamproc.lag import PartitionLag, keda_replicas, summarize


def lags(*values: int) -> list[PartitionLag]:
    return [PartitionLag("t", i, 0, 1000 + value, 1000) for i, value in enumerate(values)]


def test_lag_counts_from_the_commit_or_else_from_the_log_start() -> None:
    assert PartitionLag("t", 0, 10, 50, 40).lag == 10
    never = PartitionLag("t", 0, 10, 50, None)
    assert never.lag == 40  # a new group starts at the log start
    assert never.keda_lag == 40  # KEDA 2.21 (offsetResetPolicy earliest) counts from the log start too
    assert PartitionLag("t", 0, 60, 50, None).keda_lag == 0  # retention moved the start past a stale end


@pytest.mark.parametrize(
    ("partition_lags", "threshold", "replicas"),
    [
        ((0, 0, 0), 10, 0),
        ((5, 0, 0), 10, 1),
        ((10, 10, 5), 10, 3),  # ceil(25 / 10)
        ((100, 100, 100), 10, 3),  # 300 // 10 = 30 > 3 partitions: capped at 3 * 10, so 3
        ((20, 10, 5), 10, 4),  # 35 // 10 = 3 is not > 3: no cap, ceil(35 / 10) = 4 (KEDA's integer division)
        ((50, 0, 0), 30, 2),
    ],
)
def test_keda_replicas(partition_lags: tuple[int, ...], threshold: int, replicas: int) -> None:
    assert keda_replicas(lags(*partition_lags), threshold) == replicas


def report_rows() -> list[PartitionLag]:
    return [
        PartitionLag("tasks.normal", 0, 0, 120, 100, finished_ahead=5),  # lag 15, KEDA 20
        PartitionLag("tasks.normal", 1, 0, 40, None),  # never committed: lag 40, KEDA 40
        PartitionLag("tasks.retry.1s", 0, 0, 30, 0),  # a tier: no trigger
    ]


def test_the_report_sums_each_topic_and_takes_the_largest_trigger() -> None:
    report = summarize(report_rows(), {"tasks.normal"}, "g", 25)
    assert [(t.topic, t.partitions, t.lag, t.keda_lag, t.keda_replicas) for t in report.topics] == [
        ("tasks.normal", 2, 55, 60, 3),  # ceil(60 / 25)
        ("tasks.retry.1s", 1, 30, 30, None),
    ]
    assert (report.lag, report.keda_replicas, report.never_committed) == (85, 3, False)
    assert summarize(report_rows()[1:2], {"tasks.normal"}, "g", 25).never_committed


def test_the_json_document_has_totals_the_decision_and_every_partition() -> None:
    document = json.loads(json.dumps(summarize(report_rows(), {"tasks.normal"}, "g", 25).as_json()))
    assert (document["group"], document["lag_threshold"], document["lag"], document["keda_replicas"]) == (
        "g",
        25,
        85,
        3,
    )
    assert document["topics"][1] == {
        "topic": "tasks.retry.1s",
        "partitions": 1,
        "lag": 30,
        "keda_lag": 30,
        "keda_trigger": False,
        "keda_replicas": None,
    }
    assert document["partitions"][:2] == [
        {
            "topic": "tasks.normal",
            "partition": 0,
            "start": 0,
            "end": 120,
            "committed": 100,
            "finished_ahead": 5,
            "lag": 15,
        },
        {
            "topic": "tasks.normal",
            "partition": 1,
            "start": 0,
            "end": 40,
            "committed": None,
            "finished_ahead": 0,
            "lag": 40,
        },
    ]


def rendered(by: By) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render(summarize(report_rows(), {"tasks.normal"}, "g", 25), by))
    return console.export_text()


def test_the_totals_and_the_keda_line_come_first_and_partitions_only_when_asked() -> None:
    by_topic, by_partition = rendered(By.TOPIC), rendered(By.PARTITION)
    assert "KEDA would run 3 replica(s)" in by_topic
    assert "finished ahead" not in by_topic and by_topic.rstrip().endswith("before min/max replicas.")
    assert by_partition.startswith(by_topic)  # the same totals first, then the partition table
    rows = [line for line in by_partition[len(by_topic) :].splitlines() if line.count("│") == 7]
    cells = [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]
    assert cells == [
        ["tasks.normal", "0", "120", "100", "5", "15"],
        ["tasks.normal", "1", "40", "-", "0", "40"],
        ["tasks.retry.1s", "0", "30", "0", "0", "30"],
    ]
