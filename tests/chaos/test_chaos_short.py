"""A short chaos run inside `make test`: each scenario (SPEC §11's, and two freezes) with 1,000
keyed and 1,000 unkeyed tasks.

The full runs (20,000 tasks each) are `make chaos`. The broker is the harness's own, on ports the
OS picks, so killing it never disturbs the session broker other tests use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.cluster import ChaosBroker
from tests.chaos.scenarios import SCENARIOS, Options, Result, run_scenario

TASKS = 1_000
DURATION_S = 8.0  # of submission and faults, per run


@pytest.fixture(scope="module")
def chaos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosBroker]:
    broker = ChaosBroker.create(tmp_path_factory.mktemp("chaos-broker"), port=None)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_nothing_lost_and_reruns_bounded(chaos_broker: ChaosBroker, scenario: str, keyed: bool, tmp_path: Path) -> None:
    options = Options(TASKS, keyed, DURATION_S, drain_s=120.0)
    result = run_scenario(chaos_broker, SCENARIOS[scenario], options, tmp_path)
    report = "\n".join([Result.HEADER, result.row(), *result.notes])
    print(f"\n{report}")
    assert result.faults > 0, report
    assert result.submitted == TASKS, report
    assert result.lost == 0, report
    assert result.lag == 0, report
    assert result.duplicates <= result.bound, report
    assert not [note for note in result.notes if note.startswith("worker: ")], report  # none died or hung
