"""Task ids that say "the same task": from an idempotency key, or from the payload (SPEC §12).

`submit(..., idempotency_key=k)` gives the task the id uuid5(task name, k), so every submit with
that key names the same task; a task with `cache_ttl` takes a hash of its payload as the key. The
Kafka key defaults to the idempotency key too, so duplicates share a partition and, in key
ordering, run one after the other: the second finds the first's `succeeded` and is skipped.
"""

from __future__ import annotations

import hashlib
import uuid

from pydantic_core import from_json, to_json

_NAMESPACE = uuid.UUID("5d0c1f1e-8f4e-4c1b-9a57-2f3b6c1d7e21")  # streamproc's; never change it


def idempotent_task_id(task: str, idempotency_key: str) -> str:
    """The task id of every submit of `task` with `idempotency_key`."""
    return str(uuid.uuid5(_NAMESPACE, f"{task}\n{idempotency_key}"))


def payload_key(value: bytes) -> str:
    """The idempotency key of a cached task: a hash of its JSON payload, whatever the order of its keys."""
    canonical = to_json(_sorted(from_json(value)))
    return "payload:" + hashlib.sha256(canonical).hexdigest()[:32]


def _sorted(data: object) -> object:
    if isinstance(data, dict):
        return {key: _sorted(data[key]) for key in sorted(data)}
    if isinstance(data, list):
        return [_sorted(item) for item in data]
    return data
