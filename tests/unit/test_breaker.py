"""The circuit breaker's states: closed → open → one probe → closed or open again."""

from __future__ import annotations

from streamproc import App
from streamproc.breaker import CircuitBreaker, Circuits, Permit, deferred
from streamproc.envelope import Envelope
from streamproc.execution import Outcome, Result


def opened(at: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10.0)
    for _ in range(3):
        breaker.record(breaker.allow(at), succeeded=False, now=at)
    return breaker


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10.0)
    for outcome in (False, False, True, False, False):
        breaker.record(breaker.allow(0.0), succeeded=outcome, now=0.0)
    assert not breaker.is_open
    breaker.record(breaker.allow(0.0), succeeded=False, now=0.0)
    assert breaker.is_open
    assert breaker.allow(9.9) is Permit.DENY


def test_after_the_reset_timeout_exactly_one_probe_goes_through() -> None:
    breaker = opened(at=0.0)
    assert breaker.allow(10.0) is Permit.PROBE
    assert breaker.allow(10.0) is Permit.DENY  # the probe is out
    breaker.record(Permit.PROBE, succeeded=True, now=10.5)
    assert not breaker.is_open
    assert breaker.allow(10.5) is Permit.CALL


def test_a_failed_probe_opens_the_circuit_for_another_reset_timeout() -> None:
    breaker = opened(at=0.0)
    breaker.record(breaker.allow(10.0), succeeded=False, now=11.0)
    assert breaker.is_open
    assert breaker.allow(20.9) is Permit.DENY
    assert breaker.allow(21.0) is Permit.PROBE


def test_calls_that_began_before_it_opened_do_not_close_it() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10.0)
    early = breaker.allow(0.0)
    breaker.record(breaker.allow(0.0), succeeded=False, now=0.0)
    breaker.record(early, succeeded=True, now=1.0)
    assert breaker.is_open


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    breaker = opened(at=0.0)
    probe = breaker.allow(10.0)
    breaker.abandon(probe)
    assert breaker.allow(10.0) is Permit.PROBE


async def test_circuits_defer_a_task_whose_circuit_opened_without_calling_its_handler() -> None:
    app = App()

    @app.task("fragile", failure_threshold=2, reset_timeout=60)
    async def fragile(payload: dict[str, int]) -> None: ...

    circuits = Circuits(app.tasks)
    task = Envelope("t", 0, 7, None, b"{}", {}, "fragile", "id-1", 0, 1, "normal")
    permits = []
    for _ in range(3):
        admission = circuits.admit(task)
        assert admission is not None
        permits.append(admission[1])
        if admission[1] is not Permit.DENY:
            circuits.settle(admission, Outcome(Result.FAILED, 0.0, RuntimeError("down")))
    assert permits == [Permit.CALL, Permit.CALL, Permit.DENY]
    assert deferred(task).result is Result.DEFERRED
    assert circuits.states() == {"fragile": True}
