"""The alerts and the dashboard query only series a real worker exports (SPEC section 7).

A renamed metric would otherwise leave an alert that can never fire and a panel that stays empty,
with nothing failing. So: run a worker against the real broker through success, retry and
dead letter, scrape its /metrics, and compare with the names the chart's PromQL uses.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from streamproc import Producer, provisioning
from streamproc.health import observed
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests import worker_app
from tests.chart.rendering import render, streamproc_metric_names
from tests.helpers import running, until
from tests.observing import observed_worker, scrape

pytestmark = pytest.mark.kafka


async def test_every_metric_the_alerts_and_dashboard_query_is_exported_by_a_worker(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    used = streamproc_metric_names(render())
    assert len(used) >= 8, used  # the parse found the queries

    worker_app.calls.clear()
    await provisioning.apply(kafka_settings, topology)
    worker, metrics = observed_worker(kafka_settings, topology)
    async with Producer(kafka_settings, topology) as producer:
        await producer.submit("flaky", {"label": "ok"})
        await producer.submit("flaky", {"label": "retried", "fail_times": 1})  # through the 1s tier
        await producer.submit("flaky", {"label": "dead", "permanent": True})
    async with observed([worker], metrics, 0, host="127.0.0.1") as port, running(worker):
        await until(lambda: len(worker_app.calls) == 1 + 2 + 1, what="every attempt")
        await until(lambda: worker.in_flight == 0, what="the last outcome routed")
        deadline = time.monotonic() + 20
        while True:  # the lag gauge appears at the first refresh after the group was joined
            exported = {name for name, _ in await scrape(port)}
            if "streamproc_consumer_lag" in exported:
                break
            assert time.monotonic() < deadline, f"no streamproc_consumer_lag series in {sorted(exported)}"
            await asyncio.sleep(0.5)

    assert used <= exported, f"queried but not exported: {sorted(used - exported)}"
    # The workload reached every outcome, so every family the chart relies on had a series to show.
    for name in ("streamproc_tasks_retried_total", "streamproc_tasks_dead_lettered_total"):
        assert name in exported
