"""Headers of retry, DLQ and replayed records (SPEC §3)."""

from __future__ import annotations

import traceback

from streamproc.envelope import (
    MAX_TRACEBACK_BYTES,
    TRACEBACK_CUT,
    Envelope,
    failure_headers,
    own_headers,
    replay_headers,
)


def envelope(headers: dict[str, str], topic: str = "tasks.normal", offset: int = 7) -> Envelope:
    return Envelope(topic, 2, offset, b"k", b"{}", headers, "send_email", "id-1", 1000, 1, "normal")


def test_a_plain_record_gets_every_spec_header_written_out() -> None:
    headers = dict(
        failure_headers(
            envelope({"task": "send_email", "custom": "kept"}),
            attempt=2,
            error_type="ValueError",
            error_message="boom",
            failed_at_ms=5000,
            retry_at_ms=10_000,
        )
    )
    assert headers == {
        "task": b"send_email",
        "custom": b"kept",
        "task-id": b"id-1",
        "enqueued-at": b"1000",
        "attempt": b"2",
        "priority": b"normal",
        "original-topic": b"tasks.normal",
        "original-partition": b"2",
        "original-offset": b"7",
        "error-type": b"ValueError",
        "error-message": b"boom",
        "failed-at": b"5000",
        "retry-at": b"10000",
    }


def test_a_later_tier_keeps_the_intake_coordinates_and_replaces_the_failure() -> None:
    from_tier = envelope(
        {
            "original-topic": "tasks.high",
            "original-partition": "0",
            "original-offset": "3",
            "retry-at": "1",
            "error-message": "old",
        },
        topic="tasks.retry.5s",
    )
    headers = dict(
        failure_headers(
            from_tier, attempt=3, error_type="E", error_message="new", failed_at_ms=9, dlq_reason="retries_exhausted"
        )
    )
    assert (headers["original-topic"], headers["original-partition"], headers["original-offset"]) == (
        b"tasks.high",
        b"0",
        b"3",
    )
    assert headers["error-message"] == b"new"
    assert headers["dlq-reason"] == b"retries_exhausted"
    assert "retry-at" not in headers


def test_error_message_is_capped_at_one_kib_on_a_character_boundary() -> None:
    headers = dict(failure_headers(envelope({}), attempt=1, error_type="E", error_message="é" * 1000, failed_at_ms=0))
    message = headers["error-message"]
    assert len(message) <= 1024
    assert message.decode() == "é" * 512


def test_replay_is_a_first_attempt_pointing_at_the_dead_letter() -> None:
    dead = {
        "task": "send_email",
        "task-id": "id-1",
        "attempt": "4",
        "priority": "high",
        "traceparent": "00-abc-def-01",
        "original-topic": "tasks.high",
        "original-partition": "0",
        "original-offset": "3",
        "error-type": "E",
        "error-message": "m",
        "failed-at": "1",
        "dlq-reason": "retries_exhausted",
    }
    assert dict(replay_headers(dead, "tasks.dlq-0-12")) == {
        "task": b"send_email",
        "task-id": b"id-1",
        "attempt": b"1",
        "priority": b"high",
        "traceparent": b"00-abc-def-01",
        "replayed-from": b"tasks.dlq-0-12",
    }


def raise_deep(depth: int) -> None:
    if depth:
        raise_deep(depth - 1)
    raise ValueError("the innermost message")


def formatted_traceback(depth: int) -> str:
    try:
        raise_deep(depth)
    except ValueError as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError("raise_deep did not raise")


def test_a_traceback_header_is_written_whole_when_small() -> None:
    trace = formatted_traceback(2)
    headers = dict(
        failure_headers(
            envelope({}), attempt=1, error_type="ValueError", error_message="m", failed_at_ms=0, error_traceback=trace
        )
    )
    assert headers["error-traceback"].decode() == trace
    assert "raise_deep" in trace and trace.startswith("Traceback (most recent call last):")


def test_a_long_traceback_keeps_its_last_8_kib_on_a_character_boundary() -> None:
    trace = "é" * 9000 + formatted_traceback(2)  # 18,000 bytes of 2-byte characters, then the frames
    assert len(trace.encode()) > 2 * MAX_TRACEBACK_BYTES
    headers = dict(
        failure_headers(
            envelope({}), attempt=1, error_type="E", error_message="m", failed_at_ms=0, error_traceback=trace
        )
    )
    kept = headers["error-traceback"]
    assert len(kept) <= MAX_TRACEBACK_BYTES == 8192
    text = kept.decode()  # whole characters only
    assert text.startswith(TRACEBACK_CUT)
    assert trace.endswith(text.removeprefix(TRACEBACK_CUT))
    assert text.endswith("ValueError: the innermost message\n")
    assert len(kept) > MAX_TRACEBACK_BYTES - 4  # nothing cut beyond a partial character
    # The cut on a multi-byte character: a lone surrogate is escaped, not written raw.
    odd = dict(
        failure_headers(
            envelope({}), attempt=1, error_type="E", error_message="m", failed_at_ms=0, error_traceback="x\udcff" * 5000
        )
    )["error-traceback"].decode()
    assert odd.startswith(TRACEBACK_CUT) and odd.endswith("x\\udcff")


def test_a_later_failure_replaces_the_traceback_or_drops_it_when_it_has_none() -> None:
    earlier = envelope({"error-traceback": "Traceback: the first attempt", "error-message": "first"})
    later = dict(
        failure_headers(
            earlier, attempt=2, error_type="E", error_message="second", failed_at_ms=1, error_traceback="Traceback: new"
        )
    )
    assert later["error-traceback"] == b"Traceback: new"
    poisoned = dict(
        failure_headers(earlier, attempt=2, error_type="E", error_message="x", failed_at_ms=1, dlq_reason="undecodable")
    )
    assert "error-traceback" not in poisoned


def test_replay_drops_the_traceback() -> None:
    dead = {
        "task": "t",
        "task-id": "i",
        "attempt": "3",
        "error-traceback": "Traceback: …",
        "dlq-reason": "permanent_error",
    }
    assert "error-traceback" not in dict(replay_headers(dead, "tasks.dlq-0-1"))


def test_the_own_headers_fallback_keeps_the_end_of_the_traceback() -> None:
    trace = "x" * 2000 + formatted_traceback(2)
    headers = failure_headers(
        envelope({}), attempt=1, error_type="E", error_message="m", failed_at_ms=0, error_traceback=trace
    )
    kept = dict(own_headers(headers))["error-traceback"].decode()
    assert len(kept.encode()) <= 1024
    assert kept.startswith(TRACEBACK_CUT) and kept.endswith("ValueError: the innermost message\n")
