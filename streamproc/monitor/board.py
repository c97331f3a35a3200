"""The workers as their reports show them: alive, stopped or gone, with their recent figures.

Pure logic, fed by `live` and read by the views. A worker is `gone` when its next report is
overdue by `GONE_AFTER_INTERVALS` intervals plus `GONE_SLACK_S` (5 s at the default 1 s interval):
a SIGKILLed process says nothing, so silence is the only sign. Windowed figures (a worker's rate,
the wait percentiles) are differences between two reports of one process, so lost reports do not
skew them. Memory stays bounded: reports older than `WINDOW_S` are dropped, workers silent for
`FORGET_AFTER_S` are forgotten, and at most `MAX_WORKERS` are held (the longest silent go first).
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from streamproc.monitor.report import WorkerReport

GONE_AFTER_INTERVALS = 3
GONE_SLACK_S = 2.0
WINDOW_S = 60.0
FORGET_AFTER_S = 600.0
MAX_WORKERS = 1_000


class WorkerState(StrEnum):
    ALIVE = "alive"
    STOPPED = "stopped"  # its last report said so: a graceful shutdown
    GONE = "gone"  # no report for too long: killed, hung or cut off


class WorkerRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    report: WorkerReport = Field(description="its latest report")
    state: WorkerState
    silent_s: float = Field(description="seconds since its latest report was written")
    rate_per_s: float = Field(description="attempts finished per second in the last minute")


class Board:
    """The latest reports of each worker process, and its reports of the last `WINDOW_S`."""

    def __init__(self) -> None:
        self._reports: dict[str, deque[WorkerReport]] = {}

    def apply(self, report: WorkerReport) -> None:
        history = self._reports.get(report.worker)
        if history is None:
            history = self._reports[report.worker] = deque()
        elif report.at < history[-1].at:
            return  # an older report read late says nothing new
        history.append(report)
        while history[0].at < report.at - WINDOW_S * 1000:
            history.popleft()
        if len(self._reports) > MAX_WORKERS:
            del self._reports[min(self._reports, key=lambda worker: self._reports[worker][-1].at)]

    def workers(self, now_ms: int) -> list[WorkerRow]:
        """Every worker not yet forgotten, the alive ones first, then by host and pid."""
        rows = []
        for worker in list(self._reports):
            history = self._reports[worker]
            latest = history[-1]
            silent_s = max(0.0, (now_ms - latest.at) / 1000)
            if silent_s > FORGET_AFTER_S:
                del self._reports[worker]
                continue
            if latest.stopped:
                state = WorkerState.STOPPED
            elif silent_s > latest.interval_s * GONE_AFTER_INTERVALS + GONE_SLACK_S:
                state = WorkerState.GONE
            else:
                state = WorkerState.ALIVE
            first = history[0]
            span_s = (latest.at - first.at) / 1000
            rate = (latest.finished - first.finished) / span_s if span_s > 0 else 0.0
            rows.append(WorkerRow(report=latest, state=state, silent_s=silent_s, rate_per_s=rate))
        rows.sort(key=lambda row: (row.state is not WorkerState.ALIVE, row.report.host, row.report.pid))
        return rows

    def waits(self, now_ms: int) -> dict[str, list[int]]:
        """Tasks started in the last `WINDOW_S` per source topic and wait bucket, over every worker."""
        since = now_ms - WINDOW_S * 1000
        summed: dict[str, list[int]] = {}
        for history in list(self._reports.values()):
            latest = history[-1]
            if latest.at < since:
                continue
            # The counts before the window: the oldest report in it, or none for a process started since.
            base = {} if latest.started_at >= since else history[0].waits
            for topic, counts in latest.waits.items():
                before = base.get(topic, [])
                into = summed.setdefault(topic, [0] * len(counts))
                for i, count in enumerate(counts[: len(into)]):
                    into[i] += max(0, count - (before[i] if i < len(before) else 0))
        return summed
