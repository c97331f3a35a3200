"""Task hooks → SPEC §7 metric samples, without a broker."""

from __future__ import annotations

import time

from streamproc.envelope import Envelope
from streamproc.execution import Outcome, Result
from streamproc.metrics import Metrics
from streamproc.routing import Disposition, Routed


def envelope(task: str | None, attempt: int = 1, headers: dict[str, str] | None = None) -> Envelope:
    now_ms = int(time.time() * 1000)
    return Envelope("tasks.normal", 0, 1, None, b"{}", headers or {}, task, "id", now_ms - 2000, attempt, "normal")


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_disposition_lands_in_its_counter() -> None:
    metrics = Metrics({"send"}, "g")
    failed = Outcome(Result.FAILED, 0.01, RuntimeError("x"))
    metrics.task_finished(envelope("send"), Outcome(Result.SUCCEEDED, 0.02), Routed(Disposition.SUCCEEDED))
    metrics.task_finished(envelope("send"), failed, Routed(Disposition.RETRIED, tier="5s"))
    metrics.task_finished(envelope("send", 4), failed, Routed(Disposition.DEAD_LETTERED, reason="retries_exhausted"))
    deferred = Outcome(Result.DEFERRED, 0.0, Exception("open"))
    metrics.task_finished(envelope("send"), deferred, Routed(Disposition.DEFERRED, tier="5s"))
    assert sample(metrics, "streamproc_tasks_succeeded_total", task="send") == 1
    assert sample(metrics, "streamproc_tasks_failed_total", task="send", error_type="RuntimeError") == 2
    assert sample(metrics, "streamproc_tasks_retried_total", task="send", tier="5s") == 1
    assert sample(metrics, "streamproc_tasks_dead_lettered_total", task="send", reason="retries_exhausted") == 1
    assert sample(metrics, "streamproc_task_duration_seconds_count", task="send", outcome="failed") == 2
    assert sample(metrics, "streamproc_task_duration_seconds_count", task="send", outcome="deferred") is None


def test_wait_runs_from_enqueued_or_for_a_retry_from_when_it_was_due() -> None:
    metrics = Metrics({"send"}, "g")
    metrics.task_started(envelope("send"))  # enqueued 2 s ago
    due_ms = int(time.time() * 1000) - 100
    metrics.task_started(envelope("send", 2, {"retry-at": str(due_ms)}))
    total = sample(metrics, "streamproc_task_wait_seconds_sum", task="send", priority="normal")
    assert total is not None and 2.0 <= total < 2.0 + 0.1 + 1.0
    assert sample(metrics, "streamproc_tasks_started_total", task="send", priority="normal") == 2


def test_task_names_without_a_handler_share_one_label() -> None:
    metrics = Metrics({"send"}, "g")
    for name in ("garbage-1", "garbage-2", None):
        metrics.task_started(envelope(name))
    assert sample(metrics, "streamproc_tasks_started_total", task="unregistered", priority="normal") == 3
