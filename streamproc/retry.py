"""Where a failed attempt goes next: a delay tier, or the DLQ once its retries are spent (SPEC §5).

Attempt n fails → tier min(n, number of tiers) while n ≤ `max_retries` (default: the number of
tiers), so with tiers 5s/1m/10m and `max_retries=5` a task waits 5s, 1m, 10m, 10m, 10m and its
sixth failure is dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamproc.topology import Topology, parse_duration_ms


@dataclass(frozen=True, slots=True)
class Tier:
    name: str  # its delay as declared, e.g. "5s"
    topic: str
    delay_ms: int


class RetryPolicy:
    def __init__(self, topology: Topology) -> None:
        self.tiers = [Tier(d, topology.tier_topic(d), parse_duration_ms(d)) for d in topology.tiers.delays]

    @property
    def first(self) -> Tier:
        """Where tasks of an open circuit wait (SPEC §5 "Circuit breaker")."""
        return self.tiers[0]

    def after_failure(self, attempt: int, max_retries: int | None) -> Tier | None:
        """The tier for the failure of `attempt` (1-based); None when its retries are spent."""
        limit = len(self.tiers) if max_retries is None else max_retries
        if attempt > limit:
            return None
        return self.tiers[min(attempt, len(self.tiers)) - 1]
