"""Rate limits per task name (SPEC §5): `rate_limit="50/s"` paces a task's starts in each process.

Each start reserves the next free instant (a generic cell rate algorithm with no burst), so the
caller learns at once how long a task must wait and can park it without holding a concurrency
slot, instead of polling for a token. In any window of t seconds at most 1 + rate * t tasks of
the name start in one worker process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamproc.errors import StreamprocError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER_SECOND = {"s": 1.0, "m": 1 / 60, "h": 1 / 3600}


@dataclass(frozen=True)
class RateLimit:
    """At most `per_second` task starts a second, e.g. `RateLimit.parse("50/s")`."""

    per_second: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.match(text)
        if not match or float(match.group(1)) <= 0:
            raise StreamprocError(f"rate_limit {text!r} is not like '50/s', '100/m' or '10/h'")
        return cls(float(match.group(1)) * _PER_SECOND[match.group(2)])


class RateLimiter:
    """Hands out start times `1 / per_second` apart."""

    __slots__ = ("_interval", "_next_free")

    def __init__(self, limit: RateLimit) -> None:
        self._interval = 1.0 / limit.per_second
        self._next_free = float("-inf")

    def reserve(self, now: float) -> float:
        """Reserve the next start; how long to wait for it (0.0: start now)."""
        start = max(now, self._next_free)
        self._next_free = start + self._interval
        return start - now
