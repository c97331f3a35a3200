"""The example app (handlers/app.py), tested as a user would test theirs: with `streamproc.testing`."""

from __future__ import annotations

import hashlib
import random

import pytest
import structlog.testing

from handlers.app import GenerateReport, SendEmail, app, generate_report, process_order, send_email
from streamproc.testing import Result, make_context, run_task


async def test_send_email_succeeds() -> None:
    run = await run_task(app, send_email, {"to": "ada@example.com", "subject": "welcome"}, key="ada", priority="high")
    assert run.succeeded and run.value is None


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"to": "not-an-address", "subject": "hi"}, "is not an email address"),
        ({"to": "ada@example.com", "subject": ""}, "subject:"),
        ({"subject": "hi"}, "to: Field required"),
    ],
)
async def test_send_email_dead_letters_an_invalid_payload(payload: dict[str, str], fragment: str) -> None:
    run = await run_task(app, "send_email", payload)
    assert (run.outcome, run.reason) == (Result.DEAD, "invalid_payload")
    assert fragment in str(run.error)


async def test_generate_report_returns_its_digest() -> None:
    run = await run_task(app, generate_report, {"report_id": "r-1", "kind": "daily", "rows": 3})
    expected = hashlib.sha256(b"r-1:daily")
    for row in range(3):
        expected.update(row.to_bytes(4, "big"))
    assert run.succeeded and run.value == expected.hexdigest()


async def test_generate_report_rejects_an_unknown_kind_and_too_many_rows() -> None:
    for payload in ({"report_id": "r", "kind": "hourly"}, {"report_id": "r", "kind": "daily", "rows": 100_001}):
        run = await run_task(app, generate_report, payload)
        assert (run.outcome, run.reason) == (Result.DEAD, "invalid_payload"), payload


def test_generate_report_can_be_called_directly_too() -> None:
    """A plain unit test of the function, skipping the runner: the payload is a model instance."""
    assert generate_report.fn(GenerateReport(report_id="r-1", kind="weekly", rows=1)) == generate_report(
        GenerateReport(report_id="r-1", kind="weekly", rows=1)
    )


async def test_process_document_succeeds() -> None:
    run = await run_task(app, "process_document", {"document_id": "d-1", "pages": 1}, attempt=2)
    assert run.succeeded


async def test_process_order_refuses_a_non_positive_amount_for_good() -> None:
    ok = await run_task(app, process_order, {"order_id": "o-1", "amount": 12.5})
    refused = await run_task(app, process_order, {"order_id": "o-2", "amount": 0})
    assert ok.succeeded
    assert (refused.outcome, refused.reason) == (Result.DEAD, "permanent_error")
    assert "o-2" in str(refused.error)


def _task_id(fails: bool, attempt: int) -> str:
    """A task id on which `sync_inventory`'s simulated warehouse API fails (or answers) at `attempt`."""
    for n in range(1000):
        task_id = f"inv-{n}"
        if (random.Random(f"{task_id}:{attempt}").random() < 0.3) == fails:
            return task_id
    raise AssertionError("no such task id")


async def test_sync_inventory_fails_retryably_when_the_warehouse_does_not_answer() -> None:
    payload = {"sku": "sku-1", "quantity": 4}
    failed = await run_task(app, "sync_inventory", payload, task_id=_task_id(fails=True, attempt=1))
    synced = await run_task(app, "sync_inventory", payload, task_id=_task_id(fails=False, attempt=1))
    assert failed.outcome is Result.FAILED and isinstance(failed.error, ConnectionError)
    assert synced.succeeded


async def test_noop_accepts_any_object_but_not_other_json() -> None:
    assert (await run_task(app, "noop", {"anything": [1, 2]})).succeeded
    assert (await run_task(app, "noop", b'"text"')).reason == "invalid_payload"


async def test_a_handler_with_a_context_can_be_called_directly_with_make_context() -> None:
    with structlog.testing.capture_logs() as logs:
        ctx = make_context("send_email", task_id="t-1")
        await send_email(SendEmail(to="ada@example.com", subject="hi"), ctx)
    assert [(e["event"], e["to"], e["task_id"]) for e in logs] == [("email sent", "ada@example.com", "t-1")]
