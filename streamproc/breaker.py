"""The circuit breaker of one task name (SPEC §5).

Closed, it lets every call through and counts consecutive failures; at `failure_threshold` it
opens: for `reset_timeout` seconds no call is allowed (the worker defers those tasks to the
first tier without spending an attempt). Then it lets exactly one probe through: a success
closes it, a failure opens it again. While it is open only the probe's result counts, so calls
that began before it opened cannot close it.

A failure is a retryable one (an exception or a timeout: the dependency is unwell); a success
or a dead task (a `PermanentError` or a bad payload: the handler answered) counts as a success.
"""

from __future__ import annotations

from enum import Enum


class CircuitOpen(Exception):
    """The task was deferred without calling its handler: its circuit is open."""


class Permit(Enum):
    CALL = "call"
    PROBE = "probe"
    DENY = "deny"


class CircuitBreaker:
    __slots__ = ("_failures", "_opened_at", "_probing", "failure_threshold", "reset_timeout")

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 60.0) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._failures = 0
        self._opened_at: float | None = None  # None while closed
        self._probing = False

    @property
    def is_open(self) -> bool:
        """Open or half-open: calls are not let through freely."""
        return self._opened_at is not None

    def allow(self, now: float) -> Permit:
        if self._opened_at is None:
            return Permit.CALL
        if self._probing or now < self._opened_at + self.reset_timeout:
            return Permit.DENY
        self._probing = True
        return Permit.PROBE

    def record(self, permit: Permit, succeeded: bool, now: float) -> None:
        """The result of a call `allow` permitted."""
        if permit is Permit.PROBE:
            self._probing = False
            if succeeded:
                self._failures, self._opened_at = 0, None
            else:
                self._opened_at = now
        elif self._opened_at is None:
            self._failures = 0 if succeeded else self._failures + 1
            if self._failures >= self.failure_threshold:
                self._opened_at = now

    def abandon(self, permit: Permit) -> None:
        """A permitted call ended without a result (cancelled at revocation): the next call may probe."""
        if permit is Permit.PROBE:
            self._probing = False
