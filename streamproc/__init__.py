"""streamproc: a Kafka-backed streaming task processor."""

__version__ = "0.1.0"
