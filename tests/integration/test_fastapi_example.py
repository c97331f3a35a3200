"""`examples/fastapi` against the real broker: its endpoints submit, report, await and cancel tasks
that an in-process worker running the example's App executes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from examples.fastapi import tasks
from examples.fastapi.main import create_app
from streamproc import Producer, provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests.helpers import running

REPORT = {"report_id": "q3-sales", "pages": 12}


@pytest.fixture
async def applied(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    await provisioning.apply(kafka_settings, topology)
    return topology


@pytest.fixture
async def web(kafka_settings: KafkaSettings, applied: Topology) -> AsyncIterator[FastAPI]:
    """The example app with its lifespan entered (ASGITransport does not run it), on the test's topics."""
    started = create_app(lambda: Producer(kafka_settings, applied))
    async with started.router.lifespan_context(started):
        yield started


@pytest.fixture
async def client(web: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://reports") as client:
        yield client


def worker(settings: KafkaSettings, topology: Topology) -> Worker:
    return Worker(tasks.app, settings, topology, WorkerConfig(group=f"{topology.prefix}-g", commit_interval=0.1))


async def test_a_report_is_submitted_reported_on_and_its_result_awaited(
    client: httpx.AsyncClient, kafka_settings: KafkaSettings, applied: Topology
) -> None:
    submitted = await client.post("/reports", json=REPORT)
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    assert submitted.json() == {
        "task_id": task_id,
        "status_url": f"/reports/{task_id}",
        "result_url": f"/reports/{task_id}/result",
    }
    pending = await client.get(f"/reports/{task_id}")
    assert pending.status_code == 200 and pending.json()["state"] == "pending"
    assert pending.json()["task"] == "render_report"

    # No worker runs yet: the wait ends with 202 and the state, not an error.
    unfinished = await client.get(f"/reports/{task_id}/result", params={"timeout": 0.2})
    assert unfinished.status_code == 202 and unfinished.json() == {"task_id": task_id, "state": "pending"}

    async with running(worker(kafka_settings, applied)):
        result = await client.get(f"/reports/{task_id}/result", params={"timeout": 30})
    assert result.status_code == 200, result.text
    assert result.json() == {"url": "/files/reports/q3-sales.pdf", "pages": 12}
    succeeded = (await client.get(f"/reports/{task_id}")).json()
    assert succeeded["state"] == "succeeded" and succeeded["result"] == result.json()
    refused = await client.delete(f"/reports/{task_id}")
    assert refused.status_code == 409 and refused.json()["state"] == "succeeded"


async def test_a_cancelled_report_answers_409_and_is_reported_cancelled(client: httpx.AsyncClient) -> None:
    task_id = (await client.post("/reports", json=REPORT)).json()["task_id"]
    cancelled = await client.delete(f"/reports/{task_id}")
    assert cancelled.status_code == 202 and cancelled.json() == {"task_id": task_id, "state": "cancelled"}

    result = await client.get(f"/reports/{task_id}/result", params={"timeout": 30})
    assert result.status_code == 409 and result.json()["state"] == "cancelled"
    assert (await client.get(f"/reports/{task_id}")).json()["state"] == "cancelled"
    again = await client.delete(f"/reports/{task_id}")
    assert again.status_code == 409 and again.json()["detail"] == "the task had already finished"


async def test_a_dead_task_answers_409_with_the_reason(
    web: FastAPI, client: httpx.AsyncClient, kafka_settings: KafkaSettings, applied: Topology
) -> None:
    # Submitted by name, so nothing validates it before the worker: a producer on an older schema.
    producer: Producer = web.state.producer
    stale = await producer.submit("render_report", {"report_id": "q3-sales", "pages": "all of them"})
    async with running(worker(kafka_settings, applied)):
        result = await client.get(f"/reports/{stale.id}/result", params={"timeout": 30})
    assert result.status_code == 409, result.text
    assert result.json()["state"] == "dead" and result.json()["detail"].startswith("invalid_payload")


async def test_the_same_idempotency_key_returns_the_same_task(client: httpx.AsyncClient) -> None:
    first = await client.post("/reports", json=REPORT, headers={"Idempotency-Key": "report-42"})
    second = await client.post("/reports", json=REPORT, headers={"Idempotency-Key": "report-42"})
    other = await client.post("/reports", json=REPORT, headers={"Idempotency-Key": "report-43"})
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"] != other.json()["task_id"]


async def test_bad_requests_are_refused_before_anything_is_sent(client: httpx.AsyncClient) -> None:
    assert (await client.post("/reports", json={"report_id": "q3", "pages": 0})).status_code == 422
    assert (await client.get("/reports/some-id/result", params={"timeout": 31})).status_code == 422
    assert (await client.get("/reports/no-such-task")).status_code == 404
    assert (await client.get("/reports/no-such-task/result", params={"timeout": 0})).status_code == 404
