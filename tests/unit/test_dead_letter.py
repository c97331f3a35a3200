"""`DeadLetter`: a DLQ record's failure headers as properties, whatever bytes they hold."""

from __future__ import annotations

from types import SimpleNamespace

from streamproc.dead_letters import DeadLetter, Selection
from streamproc.envelope import Envelope, failure_headers


def record(headers: list[tuple[str, bytes]], offset: int = 42) -> SimpleNamespace:
    return SimpleNamespace(
        topic="tasks.dlq",
        partition=2,
        offset=offset,
        timestamp=1_700_000_009_000,
        key=b"k",
        value=b"{}",
        headers=headers,
    )


def test_a_worker_dead_letter_reads_back_its_failure() -> None:
    envelope = Envelope("tasks.high", 5, 17, b"k", b"{}", {}, "send_email", "id-1", 1_700_000_000_000, 1, "high")
    headers = failure_headers(
        envelope,
        attempt=4,
        error_type="TimeoutError",
        error_message="too slow",
        failed_at_ms=1_700_000_005_000,
        dlq_reason="retries_exhausted",
    )
    letter = DeadLetter.from_record(record(headers))
    assert (letter.id, letter.position) == ("2:42", "tasks.dlq-2-42")
    assert (letter.task, letter.task_id, letter.priority, letter.attempt) == ("send_email", "id-1", "high", 4)
    assert (letter.reason, letter.error_type, letter.error_message) == ("retries_exhausted", "TimeoutError", "too slow")
    assert letter.failed_at_ms == 1_700_000_005_000
    assert letter.original_position == "tasks.high-5-17"
    assert Selection(task="send_email", reason="retries_exhausted").matches(letter)
    assert not Selection(task="send_email", reason="permanent_error").matches(letter)
    assert not Selection(task="charge").matches(letter)


def test_missing_or_broken_headers_fall_back() -> None:
    letter = DeadLetter.from_record(record([("task", b"\xffx"), ("attempt", b"two")]))
    assert letter.task == "\ufffdx"  # replaced, not fatal
    assert (letter.attempt, letter.failed_at_ms) == (1, 1_700_000_009_000)
    assert letter.reason is letter.task_id is letter.priority is letter.original_position is None
    assert (letter.error_type, letter.error_message) == ("", "")
    assert Selection().matches(letter) and not Selection(reason="undecodable").matches(letter)
