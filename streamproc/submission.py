"""What a submit sends: the priority resolved, the payload validated and encoded, and the task record
(id, key, headers) prepared and measured. `Producer`, the workflows' submit and the CLI share it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

from streamproc.app import Task
from streamproc.envelope import RUN_AT, Headers, task_headers
from streamproc.errors import StreamprocError
from streamproc.lifecycle.identity import idempotent_task_id, payload_key
from streamproc.topology import Topology

DEFAULT_MAX_REQUEST_SIZE = 1_048_576  # aiokafka's default, and about the broker's default message.max.bytes
DEFAULT_PRIORITY = "normal"

Payload = BaseModel | Mapping[str, Any]


def resolve_priority(topology: Topology, priority: str | None) -> str:
    """The priority to submit at: the given one if declared; by default `normal`, else the lowest."""
    if priority is None:
        return DEFAULT_PRIORITY if DEFAULT_PRIORITY in topology.priorities else topology.priorities[-1]
    if priority not in topology.priorities:
        raise StreamprocError(f"unknown priority {priority!r}: the priorities are {', '.join(topology.priorities)}")
    return priority


def encode_payload(task: str | Task[Any, Any], payload: Payload) -> bytes:
    """The record value: validated by the handler's model for a `Task`, plain JSON for a task name."""
    name = task.name if isinstance(task, Task) else task
    if not isinstance(payload, BaseModel | Mapping):
        raise StreamprocError(
            f"payload for task {name!r} must be a mapping or a pydantic model, not {type(payload).__name__}"
        )
    try:
        if isinstance(task, Task):
            return task.encode(payload)
        if isinstance(payload, BaseModel):
            return payload.model_dump_json().encode()
        return to_json(dict(payload))
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        raise StreamprocError(f"payload for task {name!r} is not JSON-serialisable: {exc}") from None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task ready to send: validated, encoded and measured."""

    task_id: str
    task: str
    value: bytes
    key: bytes | None
    headers: Headers
    returns: type[BaseModel] | None
    cache_ttl: float | None = None  # a cached task's (its id comes from its payload)
    idempotent: bool = False  # its id comes from an idempotency key or its payload


def prepare_record(
    task: str | Task[Any, Any],
    payload: Payload,
    priority: str,
    key: str | bytes | None,
    traceparent: str | None,
    idempotency_key: str | None = None,
    fresh_id: bool = False,
    due_ms: int | None = None,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
) -> TaskRecord:
    """One task validated, encoded, given its id, key and headers, and measured against `max_request_size`."""
    name = task.name if isinstance(task, Task) else task
    if not isinstance(name, str) or not name:
        raise StreamprocError(f"a task name is a non-empty string, got {name!r}")
    value = encode_payload(task, payload)
    cache_ttl = task.cache_ttl if isinstance(task, Task) and not fresh_id else None
    if idempotency_key is None and cache_ttl is not None:
        idempotency_key = payload_key(value)
    if idempotency_key is not None:
        task_id = idempotent_task_id(name, idempotency_key)
        key = idempotency_key if key is None else key  # duplicates share a partition, in key order
    else:
        task_id = str(uuid.uuid4())
    if due_ms is not None and key is None:
        key = task_id  # a second fire lands in the first's key lane (see `submit`)
    key_bytes = key.encode() if isinstance(key, str) else key
    headers = task_headers(name, task_id, time.time_ns() // 1_000_000, priority, traceparent=traceparent)
    if due_ms is not None:
        headers.append((RUN_AT, str(due_ms).encode()))
    returns = task.returns if isinstance(task, Task) else None
    record = TaskRecord(task_id, name, value, key_bytes, headers, returns, cache_ttl, idempotency_key is not None)
    check_size(record, max_request_size)
    return record


def check_size(record: TaskRecord, max_request_size: int) -> None:
    """A record the broker would refuse as too large is one clear error before anything is sent."""
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
    if size > max_request_size:
        raise StreamprocError(
            f"task {record.task!r} is too large: {size} bytes as a record, the limit is {max_request_size} "
            "(max_request_size); store large data elsewhere and submit a reference to it"
        )
