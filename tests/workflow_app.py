"""An App for the workflow tests (SPEC §13): typed steps for chains and chords, run in-process, and
fast untyped ones for the crash test, run by `streamproc worker` subprocesses
(`tests.workflow_app:app`), which append a line per run of a chain's last step or a chord's
callback to the file named by `STREAMPROC_TEST_JOURNAL`."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from pydantic import BaseModel

from streamproc import App, PermanentError, TaskContext

app = App()
runs: Counter[str] = Counter()  # "task:label" → handler calls
gates: dict[str, asyncio.Event] = {}


class Order(BaseModel):
    label: str
    cents: int = 100
    gate: str | None = None  # wait for gates[gate]
    die: bool = False


class Priced(BaseModel):
    label: str
    cents: int
    tax: int


class ChargeIn(BaseModel):
    label: str
    cents: int
    tax: int
    gate: str | None = None


class Charged(BaseModel):
    label: str
    total: int


class Notice(BaseModel):
    label: str
    total: int
    channel: str


class Totals(BaseModel):
    label: str
    results: list[Priced]


async def _hold(gate: str | None) -> None:
    if gate is not None:
        await gates.setdefault(gate, asyncio.Event()).wait()


@app.task("price")
async def price(payload: Order) -> Priced:
    runs[f"price:{payload.label}"] += 1
    await _hold(payload.gate)
    if payload.die:
        raise PermanentError(f"no price for {payload.label}")
    return Priced(label=payload.label, cents=payload.cents, tax=payload.cents // 10)


@app.task("charge", max_retries=0)
async def charge(payload: ChargeIn) -> Charged:
    runs[f"charge:{payload.label}"] += 1
    await _hold(payload.gate)
    if payload.label.startswith("declined"):
        raise RuntimeError(f"card of {payload.label} declined")
    return Charged(label=payload.label, total=payload.cents + payload.tax)


@app.task("notify")
async def notify(payload: Notice) -> dict[str, Any]:
    runs[f"notify:{payload.label}"] += 1
    return {"sent": f"{payload.label}: {payload.total} by {payload.channel}"}


@app.task("total")
async def total(payload: Totals) -> int:
    runs[f"total:{payload.label}"] += 1
    return sum(priced.cents + priced.tax for priced in payload.results)


@app.task("count")
def count(payload: dict[str, Any]) -> int:
    return len(payload)


# The crash test's steps: untyped and fast; the last ones journal their run.


def _journal(line: str) -> None:
    path = os.environ.get("STREAMPROC_TEST_JOURNAL")
    if path:
        with open(path, "a") as file:
            file.write(line + "\n")


@app.task("hop")
def hop(payload: dict[str, Any]) -> dict[str, Any]:
    return {"hops": int(payload.get("hops", 0)) + 1}


@app.task("land")
def land(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    _journal(f"chain {ctx.headers['root-id']} {os.getpid()} {payload.get('hops')}")
    return {"landed": payload.get("hops")}


@app.task("member")
def member(payload: dict[str, Any]) -> dict[str, Any]:
    return {"index": payload["index"]}


@app.task("join")
def join(payload: dict[str, Any], ctx: TaskContext) -> int:
    indexes = [result["index"] for result in payload["results"]]
    _journal(f"chord {ctx.headers['root-id']} {os.getpid()} {','.join(map(str, indexes))}")
    return len(indexes)
