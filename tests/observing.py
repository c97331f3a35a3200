"""Reading a worker's HTTP endpoints in tests: an observed in-process worker, GET, and a parsed scrape."""

import asyncio
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from streamproc.metrics import Metrics
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker
from streamproc.worker_config import WorkerConfig
from tests.worker_app import app


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`, by name and sorted labels."""
    status, text = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def observed_worker(settings: KafkaSettings, topology: Topology, **options: object) -> tuple[Worker, Metrics]:
    config = WorkerConfig(group=f"{topology.prefix}-g", commit_interval=0.1, **options)  # type: ignore[arg-type]
    metrics = Metrics(app.tasks, config.group)
    return Worker(app, settings, topology, config, hooks=[metrics]), metrics
