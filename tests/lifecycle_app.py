"""An App for the task lifecycle tests (SPEC §12), run in-process: it counts runs and holds gates."""

from __future__ import annotations

import asyncio
from collections import Counter

from pydantic import BaseModel

from streamproc import App, PermanentError, TaskContext

app = App()
runs: Counter[str] = Counter()  # label → handler calls
gates: dict[str, asyncio.Event] = {}
cancelled: list[str] = []  # labels whose handler saw its cancellation


class Order(BaseModel):
    label: str
    cents: int = 100
    fail: bool = False  # raise a retryable error
    permanent: bool = False
    gate: str | None = None  # wait for gates[gate]


class Receipt(BaseModel):
    label: str
    total_cents: int


@app.task("charge", max_retries=1)
async def charge(payload: Order, ctx: TaskContext) -> Receipt:
    runs[payload.label] += 1
    if payload.gate is not None:
        try:
            await gates.setdefault(payload.gate, asyncio.Event()).wait()
        except asyncio.CancelledError:
            cancelled.append(payload.label)
            raise
    if payload.permanent:
        raise PermanentError(f"card of {payload.label} declined")
    if payload.fail:
        raise RuntimeError(f"{payload.label}: the bank is down")
    return Receipt(label=payload.label, total_cents=payload.cents * 2)


@app.task("quote", cache_ttl=600)
async def quote(payload: dict[str, object]) -> dict[str, object]:
    runs[str(payload.get("label"))] += 1
    return {"quoted": payload}


@app.task("tracked", track_started=True, store_result=False)
async def tracked(payload: Order) -> Receipt:
    """Writes `started` before it runs; its result is not stored."""
    runs[payload.label] += 1
    if payload.gate is not None:
        await gates.setdefault(payload.gate, asyncio.Event()).wait()
    return Receipt(label=payload.label, total_cents=payload.cents)
