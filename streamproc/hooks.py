"""`TaskHooks`: observers of the worker's task path (metrics, the demo's statistics, the bench's meter)."""

from __future__ import annotations

from typing import Protocol

from streamproc.envelope import Envelope
from streamproc.execution import Outcome
from streamproc.routing import Routed


class TaskHooks(Protocol):
    """Called on the worker's event loop, so they must be quick."""

    def task_started(self, envelope: Envelope) -> None:
        """The handler is about to be called."""

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        """The attempt's outcome and status are durable (a deferred, skipped or cancelled task may
        never have started)."""
