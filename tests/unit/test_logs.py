"""The repeat limit of the worker's log: each warning template at most once per interval, task events always."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from streamproc.logs import RepeatLimiter, configure_logging


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_admitted_once_per_interval_and_the_next_admission_counts_the_dropped() -> None:
    clock = Clock()
    limiter = RepeatLimiter(10.0, clock)
    assert limiter.admit("refused") == 0
    assert limiter.admit("other") == 0  # keys are limited separately
    clock.now = 9.9
    assert [limiter.admit("refused") for _ in range(3)] == [None, None, None]
    clock.now = 10.0
    assert limiter.admit("refused") == 3
    assert limiter.admit("refused") is None
    clock.now = 25.0
    assert limiter.admit("refused") == 1


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    """The worker's logging set-up writing to a buffer; the defaults are back afterwards."""
    root, aiokafka = logging.getLogger(), logging.getLogger("aiokafka")
    handlers, level, aiokafka_level = root.handlers[:], root.level, aiokafka.level
    stream = io.StringIO()
    configure_logging(stream=stream, repeat_interval_s=10.0)
    aiokafka.setLevel(logging.WARNING)  # as the worker sets it (a CLI test may have left it at CRITICAL)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        aiokafka.setLevel(aiokafka_level)
        structlog.reset_defaults()


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_aiokafka_repeats_are_held_back_whatever_their_arguments(worker_log: io.StringIO) -> None:
    aiokafka = logging.getLogger("aiokafka.client")
    for attempt in range(1000):
        aiokafka.error("Unable connect to node with id %s: %s", 1, f"refused ({attempt})")
    aiokafka.error("Unable to update metadata from %s", [1])
    aiokafka.info("not a warning: the level decides")  # below the root's WARNING anyway
    assert [event["event"] for event in _events(worker_log)] == [
        "Unable connect to node with id 1: refused (0)",
        "Unable to update metadata from [1]",
    ]


def test_own_warnings_are_held_back_but_task_events_never(worker_log: io.StringIO) -> None:
    log = structlog.get_logger("streamproc.test")
    for _ in range(50):
        log.warning("commit failed", error="NodeNotReadyError")
        log.info("partitions assigned", partitions=3)
    for number in range(5):
        log.warning("task retried", task_id=f"id-{number}", tier="5s")
    events = [event["event"] for event in _events(worker_log)]
    assert events.count("commit failed") == 1
    assert events.count("partitions assigned") == 50  # info is not limited
    assert events.count("task retried") == 5  # each is about another task
