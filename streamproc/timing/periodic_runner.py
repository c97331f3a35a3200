"""Periodic tasks: the runner that fires each slot (placeholder, being written)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamproc.app import App
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from streamproc.worker import Worker


@contextlib.asynccontextmanager
async def periodic_firing(settings: KafkaSettings, topology: Topology, app: App, worker: Worker) -> AsyncIterator[None]:
    yield
