"""The circuit breakers of the tasks that have one (SPEC §5), one per task name.

Closed, it lets every call through and counts consecutive failures; at `failure_threshold` it
opens: for `reset_timeout` seconds no call is allowed (the worker defers those tasks to the
first tier without spending an attempt). Then it lets exactly one probe through: a success
closes it, a failure opens it again. While it is open only the probe's result counts, so calls
that began before it opened cannot close it.

A failure is a retryable one (an exception or a timeout: the dependency is unwell); a success
or a dead task (a `PermanentError` or a bad payload: the handler answered) counts as a success.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import Enum
from typing import Any

from streamproc.app import Task
from streamproc.envelope import Envelope
from streamproc.execution import Outcome, Result


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


Admission = tuple[CircuitBreaker, Permit]  # a task's breaker and what it allowed


class Circuits:
    """The breakers of `tasks` with a `failure_threshold`, around the calls of their handlers.

    `admit` before a call, then `settle` with its outcome (or `abandon` when it was cancelled): two
    plain calls rather than a wrapper around the call, which cost a coroutine and a closure per task.
    """

    def __init__(self, tasks: Mapping[str, Task[Any, Any]]) -> None:
        self._breakers = {
            name: CircuitBreaker(task.failure_threshold, task.reset_timeout)
            for name, task in tasks.items()
            if task.failure_threshold is not None
        }

    def states(self) -> dict[str, bool]:
        """Each task with a circuit breaker: whether its circuit is open (or half-open)."""
        return {task: breaker.is_open for task, breaker in self._breakers.items()}

    def admit(self, envelope: Envelope) -> Admission | None:
        """What the task's breaker allows (`Permit.DENY`: defer it, see `deferred`); None when it has
        none. An unreadable record is dead on arrival, never deferred by its task's circuit."""
        breaker = self._breakers.get(envelope.task or "") if envelope.undecodable is None else None
        return None if breaker is None else (breaker, breaker.allow(time.monotonic()))

    @staticmethod
    def settle(admission: Admission, outcome: Outcome) -> None:
        """The outcome of a call `admit` allowed; a cancel says nothing about the task's health."""
        breaker, permit = admission
        if outcome.result is Result.CANCELLED:
            breaker.abandon(permit)
        else:
            breaker.record(permit, outcome.result is not Result.FAILED, time.monotonic())

    @staticmethod
    def abandon(admission: Admission) -> None:
        """A call `admit` allowed ended without an outcome (cancelled at revocation)."""
        admission[0].abandon(admission[1])


def deferred(envelope: Envelope) -> Outcome:
    """The outcome of a task whose circuit is open: not run."""
    return Outcome(Result.DEFERRED, 0.0, CircuitOpen(f"the circuit of task {envelope.task!r} is open"))
