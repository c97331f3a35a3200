"""Rate limits: parsing `N/s|m|h` and pacing starts without a burst."""

from __future__ import annotations

import pytest

from streamproc.errors import StreamprocError
from streamproc.ratelimit import RateLimit, RateLimiter


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("50/s", 50.0), ("120/m", 2.0), ("3600/h", 1.0), (" 2.5 / s ", 2.5)],
)
def test_rate_limit_parse(text: str, per_second: float) -> None:
    assert RateLimit.parse(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "50", "50/d", "0/s", "-1/s", "fast"])
def test_rate_limit_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(StreamprocError, match="rate_limit"):
        RateLimit.parse(text)


def test_reservations_made_at_once_are_spaced_one_interval_apart() -> None:
    limiter = RateLimiter(RateLimit(10.0))
    assert [limiter.reserve(100.0) for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_an_idle_limiter_starts_at_once_and_does_not_save_up_a_burst() -> None:
    limiter = RateLimiter(RateLimit(10.0))
    assert limiter.reserve(0.0) == 0.0
    assert limiter.reserve(5.0) == 0.0  # long idle…
    assert limiter.reserve(5.0) == pytest.approx(0.1)  # …but the next start still waits an interval


def test_starts_in_any_window_stay_within_the_rate() -> None:
    limiter = RateLimiter(RateLimit(50.0))
    starts = [now + limiter.reserve(now) for now in [i * 0.003 for i in range(1000)]]
    for begin in starts:
        in_window = sum(begin <= s < begin + 1.0 for s in starts)
        assert in_window <= 1 + 50
