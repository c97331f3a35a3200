"""Lag of a partition, and KEDA's replica formula computed by hand."""

from __future__ import annotations

import pytest

from streamproc.lag import PartitionLag, keda_replicas


def lags(*values: int) -> list[PartitionLag]:
    return [PartitionLag("t", i, 0, 1000 + value, 1000) for i, value in enumerate(values)]


def test_lag_counts_from_the_commit_or_else_from_the_log_start() -> None:
    assert PartitionLag("t", 0, 10, 50, 40).lag == 10
    never = PartitionLag("t", 0, 10, 50, None)
    assert never.lag == 40  # a new group starts at the log start
    assert never.keda_lag == 50  # KEDA (offsetResetPolicy earliest) counts the end offset itself


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
