"""How the bench and the demo sum up measurements: `percentile` (nearest rank, NaN when nothing was
measured, which the demo shows as "-") and the bench's median of rounds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from streamproc.bench.scenarios import median_round
from streamproc.cli.demo import _percentile
from streamproc.percentile import percentile


def test_nearest_rank_of_a_hundred_values() -> None:
    values = [float(n) for n in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_no_values_is_nan_and_the_demo_shows_a_dash() -> None:
    assert math.isnan(percentile([], 99))
    assert _percentile([], 99) == "-"
    assert _percentile([7.4], 99) == "7"


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1), st.floats(0, 100))
def test_a_percentile_is_one_of_the_values_and_grows_with_pct(values: list[float], pct: float) -> None:
    found = percentile(values, pct)
    assert found in values
    assert percentile(values, 100) >= found >= percentile(values, 0)


def test_a_bench_figure_is_its_median_round_and_keeps_every_round() -> None:
    rounds = [{"tasks_per_s": rate, "window_s": 8.0, "full_window": True} for rate in (30.0, 10.0, 20.0)]
    assert median_round(rounds) == {
        "tasks_per_s": 20.0,
        "window_s": 8.0,
        "full_window": True,
        "rounds": [30.0, 10.0, 20.0],
    }
    assert median_round(rounds[:1])["rounds"] == [30.0]
