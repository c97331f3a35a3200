"""The example App: a few realistic, tiny handlers (`streamproc worker --app handlers.app:app`).

Run `python -m handlers.app` to submit one task of each kind with the Python API.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from streamproc import App, PermanentError, Producer, TaskContext

app = App()

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]


class SendEmail(BaseModel):
    to: Email
    subject: Annotated[str, Field(min_length=1, max_length=200)]
    body: str = ""


class GenerateReport(BaseModel):
    report_id: str
    kind: Literal["daily", "weekly"]
    rows: Annotated[int, Field(ge=1, le=100_000)] = 1_000


class ProcessDocument(BaseModel):
    document_id: str
    pages: Annotated[int, Field(ge=1, le=10_000)]


class ProcessOrder(BaseModel):
    """An `orders.created` event, produced by the shop with no streamproc headers (a route)."""

    order_id: str
    amount: float


@app.task("send_email", timeout=30, max_retries=3, rate_limit="200/s")
async def send_email(payload: SendEmail, ctx: TaskContext) -> None:
    """Stands in for a call to a mail API: a few ms of I/O, rate-limited to spare the provider."""
    await asyncio.sleep(0.005)
    ctx.log.info("email sent", to=payload.to, subject=payload.subject)


@app.task("generate_report", timeout=60)
def generate_report(payload: GenerateReport) -> str:
    """CPU-bound and synchronous, so the worker runs it in its thread pool, off the event loop."""
    digest = hashlib.sha256(f"{payload.report_id}:{payload.kind}".encode())
    for row in range(payload.rows):
        digest.update(row.to_bytes(4, "big"))
    return digest.hexdigest()


@app.task("process_document")
async def process_document(payload: ProcessDocument, ctx: TaskContext) -> None:
    """About a millisecond of I/O per page."""
    await asyncio.sleep(payload.pages / 1000)
    ctx.log.info("document processed", document_id=payload.document_id, pages=payload.pages, attempt=ctx.attempt)


@app.task("process_order", max_retries=5)
async def process_order(payload: ProcessOrder, ctx: TaskContext) -> None:
    """Routed from `orders.created`. A non-positive amount is a bad order: retrying cannot fix it."""
    if payload.amount <= 0:
        raise PermanentError(f"order {payload.order_id} has a non-positive amount {payload.amount}")
    await asyncio.sleep(0.002)
    ctx.log.info("order processed", order_id=payload.order_id, amount=payload.amount)


class SyncInventory(BaseModel):
    sku: str
    quantity: Annotated[int, Field(ge=0)]


@app.task("sync_inventory", timeout=10, max_retries=1, failure_threshold=20)
async def sync_inventory(payload: SyncInventory, ctx: TaskContext) -> None:
    """Stands in for a flaky warehouse API: about 30% of calls fail. A failed call is retried once,
    after the first tier's delay; a second failure lands in the DLQ as `retries_exhausted`."""
    await asyncio.sleep(0.002)
    if random.Random(f"{ctx.task_id}:{ctx.attempt}").random() < 0.3:  # the same answer on a redelivery
        raise ConnectionError(f"warehouse API did not answer for {payload.sku}")
    ctx.log.info("inventory synced", sku=payload.sku, quantity=payload.quantity)


@app.task("noop")
async def noop(payload: dict[str, Any]) -> None:
    """Does nothing: benchmarks and the demo measure the framework, not the handler."""


async def main() -> None:
    """Submit one task of each kind; handlers passed as tasks are validated before sending."""
    async with Producer.from_env() as producer:
        await producer.submit(send_email, {"to": "ada@example.com", "subject": "welcome"}, priority="high", key="ada")
        await producer.submit(generate_report, {"report_id": "r-1", "kind": "daily", "rows": 5000})
        await producer.submit(process_document, {"document_id": "d-1", "pages": 12}, priority="low")
        await producer.submit(noop, {})


if __name__ == "__main__":
    asyncio.run(main())
