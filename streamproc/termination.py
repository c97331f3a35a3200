"""SIGTERM that arrives while the worker starts, before its event loop handles the signal.

Starting takes about a second (typer, aiokafka, pydantic, the user's app) and the loop's handler
is the last thing set up, so a SIGTERM meanwhile (a rollout, a scale-down) used to kill the
worker with -15. The entry point installs `record` before importing any of that; the worker then
asks `received()` once its loop handles SIGTERM itself, and stops before it starts anything.
This module imports nothing heavy, so the entry point can use it first.
"""

from __future__ import annotations

import signal
from types import FrameType

_received = False


def _record(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True


def record() -> None:
    """From now on SIGTERM only sets a flag: nothing is running yet that needs to be stopped."""
    signal.signal(signal.SIGTERM, _record)


def received() -> bool:
    """Whether SIGTERM came since `record()`."""
    return _received
