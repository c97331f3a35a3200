"""Cancels, on `<prefix>.control` (SPEC §12).

A cancel is one record keyed by the task id, value `{"id": "…", "action": "cancel", "at": ms}`;
the topic is compacted and kept for its retention (7 days by default), so a cancel holds that long
across restarts and rebalances. Workers follow it (`cancel_follower`). This module is the record
format, which producers write without the worker's imports.
"""

from __future__ import annotations

import time

from pydantic_core import from_json, to_json

CANCEL = "cancel"


def cancel_value(task_id: str) -> bytes:
    """The value of a cancel record for `task_id` (its key is the id)."""
    return to_json({"id": task_id, "action": CANCEL, "at": time.time_ns() // 1_000_000})


def cancelled_id(value: bytes | None) -> str | None:
    """The task id a control record cancels; None for anything else (never raises)."""
    try:
        record = from_json(value or b"")
    except ValueError:
        return None
    if isinstance(record, dict) and record.get("action") == CANCEL and isinstance(task_id := record.get("id"), str):
        return task_id
    return None
