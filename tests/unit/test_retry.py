"""Tier choice: attempt n → tier min(n, tiers) while n ≤ max_retries, then the DLQ."""

from __future__ import annotations

import pytest

from streamproc.retry import RetryPolicy
from streamproc.topology import Topology

POLICY = RetryPolicy(Topology.model_validate({"tiers": {"delays": ["5s", "1m", "10m"]}}))


@pytest.mark.parametrize(
    ("attempt", "max_retries", "tier"),
    [
        (1, None, "5s"),
        (2, None, "1m"),
        (3, None, "10m"),
        (4, None, None),
        (4, 5, "10m"),
        (5, 5, "10m"),
        (6, 5, None),
        (1, 1, "5s"),
        (2, 1, None),
        (1, 0, None),
    ],
)
def test_tier_after_failure(attempt: int, max_retries: int | None, tier: str | None) -> None:
    chosen = POLICY.after_failure(attempt, max_retries)
    assert (chosen.name if chosen else None) == tier


def test_tiers_know_their_topics_and_delays() -> None:
    assert [(t.topic, t.delay_ms) for t in POLICY.tiers] == [
        ("tasks.retry.5s", 5000),
        ("tasks.retry.1m", 60_000),
        ("tasks.retry.10m", 600_000),
    ]
    assert POLICY.first.name == "5s"
