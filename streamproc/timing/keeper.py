"""`timekeeping`: what a worker process runs beside its worker for SPEC §13's time: the scheduler of
delayed tasks and the runner of periodic ones."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamproc.app import App
from streamproc.settings import KafkaSettings
from streamproc.timing.periodic_runner import periodic_firing
from streamproc.timing.scheduler import delayed_scheduling
from streamproc.topology import Topology
from streamproc.worker import Worker


@contextlib.asynccontextmanager
async def timekeeping(settings: KafkaSettings, topology: Topology, app: App, worker: Worker) -> AsyncIterator[None]:
    async with (
        delayed_scheduling(settings, topology, worker.config.group),
        periodic_firing(settings, topology, app, worker),
    ):
        yield
