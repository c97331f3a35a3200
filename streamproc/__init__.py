"""streamproc: a Kafka-backed streaming task processor.

The public names are imported on first use (PEP 562), so `import streamproc`, which every entry
point runs first, stays cheap: `streamproc worker` catches SIGTERM before the heavy imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamproc.app import App, Batch, Task
    from streamproc.context import TaskContext
    from streamproc.errors import BatchFailed, PermanentError, TaskCancelled, TaskFailed
    from streamproc.lifecycle.handle import TaskHandle
    from streamproc.lifecycle.status import TaskState, TaskStatus
    from streamproc.producer import Producer
    from streamproc.sync_producer import SyncProducer
    from streamproc.workflows.canvas import Signature, chain, chord, group
    from streamproc.workflows.handle import WorkflowHandle

__version__ = "0.1.0"

_HOMES = {
    "App": "streamproc.app",
    "Task": "streamproc.app",
    "Batch": "streamproc.app",
    "BatchFailed": "streamproc.errors",
    "TaskContext": "streamproc.context",
    "PermanentError": "streamproc.errors",
    "TaskCancelled": "streamproc.errors",
    "TaskFailed": "streamproc.errors",
    "TaskHandle": "streamproc.lifecycle.handle",
    "TaskState": "streamproc.lifecycle.status",
    "TaskStatus": "streamproc.lifecycle.status",
    "Producer": "streamproc.producer",
    "SyncProducer": "streamproc.sync_producer",
    "Signature": "streamproc.workflows.canvas",
    "chain": "streamproc.workflows.canvas",
    "chord": "streamproc.workflows.canvas",
    "group": "streamproc.workflows.canvas",
    "WorkflowHandle": "streamproc.workflows.handle",
}
__all__ = [
    "App",
    "Batch",
    "BatchFailed",
    "PermanentError",
    "Producer",
    "Signature",
    "SyncProducer",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskHandle",
    "TaskState",
    "TaskStatus",
    "WorkflowHandle",
    "__version__",
    "chain",
    "chord",
    "group",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(home), name)
