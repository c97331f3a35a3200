"""The runner protocol of `streamproc.bench.runner`, for peer scripts: stdlib only, no streamproc.

A peer script runs in a virtualenv of its own (`streamproc/bench/peers.py`) with its argument the
runner Spec's JSON. It prints `{"event": "progress", "t": monotonic, "done": N, "sampled": 0}`
every PROGRESS_S from a thread of its own while the peer consumes, and `{"event": "result", …}`
once the peer has stopped on SIGTERM.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

PROGRESS_S = 0.1


class Counter:
    """Records the peer finished. `done += 1` from the peer's thread; read by the progress thread."""

    def __init__(self) -> None:
        self.done = 0


_lock = threading.Lock()
_stdout = sys.stdout  # as it was: a peer may redirect sys.stdout to its logs (Celery does)


def emit(event: str, **fields: Any) -> None:
    with _lock:
        _stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
        _stdout.flush()


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sys.argv[-1])
    return loaded


def report_progress(counter: Counter) -> threading.Event:
    """Starts the progress thread; set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(PROGRESS_S):
            emit("progress", done=counter.done, sampled=0)

    emit("progress", done=0, sampled=0)
    threading.Thread(target=loop, daemon=True).start()
    return stop


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def finish(counter: Counter, progress: threading.Event) -> None:
    progress.set()
    emit("result", done=counter.done, rss_kib=peak_rss_kib(), ping_waits_ms=[], retry_errors_ms=[])
