"""streamproc: a Kafka-backed streaming task processor."""

from streamproc.app import App, Task
from streamproc.context import TaskContext
from streamproc.errors import PermanentError
from streamproc.producer import Producer

__version__ = "0.1.0"

__all__ = ["App", "PermanentError", "Producer", "Task", "TaskContext", "__version__"]
