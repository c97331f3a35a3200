"""Delayed tasks: the scheduler that fires them when due (placeholder, being written)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from streamproc.settings import KafkaSettings
from streamproc.topology import Topology


@contextlib.asynccontextmanager
async def delayed_scheduling(settings: KafkaSettings, topology: Topology, group: str) -> AsyncIterator[None]:
    yield
