"""Which event loop a worker process runs on: asyncio's own (the default) or uvloop's (`--loop uvloop`).

uvloop is an option, not the default, though a no-op worker runs a few percent faster on it
(`streamproc bench`, benchmarks/README.md): aiokafka 0.14 catches only `OSError` when it writes to a
connection the broker has closed, while uvloop's transports raise `RuntimeError` there (aiokafka
issue #1038), which would turn a broker restart into a failed worker (SPEC §11 allows neither).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum

from streamproc.errors import StreamprocError


class EventLoop(StrEnum):
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"

    def factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """The loop factory for `asyncio.Runner`; a clear error when uvloop is asked for but missing."""
        if self is EventLoop.ASYNCIO:
            return None
        try:
            import uvloop
        except ImportError:
            raise StreamprocError("--loop uvloop needs uvloop: pip install 'streamproc[uvloop]'") from None
        return uvloop.new_event_loop
