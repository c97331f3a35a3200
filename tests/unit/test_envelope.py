"""Headers of retry, DLQ and replayed records (SPEC §3)."""

from __future__ import annotations

from streamproc.envelope import Envelope, failure_headers, replay_headers


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
