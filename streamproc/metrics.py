"""The Prometheus metrics of SPEC §7 for one worker process, in a registry of its own.

Task counters and histograms are recorded by task hooks on the event loop. Each metric's
labelled children are looked up once and kept (`.labels()` takes a lock and builds a key on
every call), so a task costs a few dict lookups and increments. A task name no handler is
registered under is labelled `unregistered`, so garbage on a topic cannot grow the label set.
Tasks in flight and open circuits are read from the workers when Prometheus scrapes; consumer
lag is refreshed every few seconds by `refresh_lag`.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamproc.envelope import Envelope
from streamproc.execution import Outcome, Result
from streamproc.routing import Disposition, Routed
from streamproc.worker import Worker

UNREGISTERED = "unregistered"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class _Children:
    """A labelled metric's children, created on first use and kept."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """Task hooks that record the SPEC §7 metrics; `watch` adds the workers' own state."""

    def __init__(self, task_names: Collection[str], group: str) -> None:
        self.registry = CollectorRegistry()
        self.group = group
        self._names = frozenset(task_names)
        r = self.registry
        self._started = _Children(
            Counter("streamproc_tasks_started", "Attempts started.", ["task", "priority"], registry=r)
        )
        self._succeeded = _Children(Counter("streamproc_tasks_succeeded", "Attempts succeeded.", ["task"], registry=r))
        self._failed = _Children(
            Counter("streamproc_tasks_failed", "Attempts that ended in an error.", ["task", "error_type"], registry=r)
        )
        self._retried = _Children(
            Counter("streamproc_tasks_retried", "Failed attempts sent to a retry tier.", ["task", "tier"], registry=r)
        )
        self._dead_lettered = _Children(
            Counter("streamproc_tasks_dead_lettered", "Tasks sent to the DLQ.", ["task", "reason"], registry=r)
        )
        self._duration = _Children(
            Histogram(
                "streamproc_task_duration_seconds",
                "Attempt run time.",
                ["task", "outcome"],
                buckets=DURATION_BUCKETS,
                registry=r,
            )
        )
        self._wait = _Children(
            Histogram(
                "streamproc_task_wait_seconds",
                "Time from enqueued (a retry: from due) to started.",
                ["task", "priority"],
                buckets=WAIT_BUCKETS,
                registry=r,
            )
        )
        self._in_flight = Gauge("streamproc_tasks_in_flight", "Tasks running now.", registry=r)
        self._lag = Gauge(
            "streamproc_consumer_lag",
            "End offset minus committed offset of each partition this process owns.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self._lag_labels: set[tuple[str, str, str]] = set()

    def _task(self, envelope: Envelope) -> str:
        task = envelope.task
        return task if task is not None and task in self._names else UNREGISTERED

    # task hooks

    def task_started(self, envelope: Envelope) -> None:
        task = self._task(envelope)
        self._started(task, envelope.priority).inc()
        since_ms = envelope.retry_at_ms or envelope.enqueued_at_ms  # a retry waits from when it was due
        self._wait(task, envelope.priority).observe(max(0.0, time.time() - since_ms / 1000))

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        task = self._task(envelope)
        result = outcome.result
        if result is Result.SUCCEEDED:
            self._succeeded(task).inc()
        elif result is not Result.DEFERRED:  # a deferred task never ran
            self._failed(task, outcome.error_type or "").inc()
        if result is not Result.DEFERRED:
            self._duration(task, result.value).observe(outcome.duration_s)
        if routed.disposition is Disposition.RETRIED:
            self._retried(task, routed.tier or "").inc()
        elif routed.disposition is Disposition.DEAD_LETTERED:
            self._dead_lettered(task, routed.reason or "").inc()

    # worker state

    def watch(self, workers: Sequence[Worker]) -> None:
        """Export, at each scrape, the tasks in flight and the circuits of `workers`."""
        self._in_flight.set_function(lambda: sum(worker.in_flight for worker in workers))
        self.registry.register(_Circuits(workers))

    async def refresh_lag(self, workers: Sequence[Worker]) -> None:
        """Set the lag gauge from the workers' partitions now; partitions they gave up disappear."""
        current: dict[tuple[str, str, str], int] = {}
        for worker in workers:
            for tp, lag in (await worker.lag()).items():
                current[(self.group, tp.topic, str(tp.partition))] = lag
        for labels in self._lag_labels - current.keys():
            self._lag.remove(*labels)
        for labels, lag in current.items():
            self._lag.labels(*labels).set(lag)
        self._lag_labels = set(current)


class _Circuits(Collector):
    """`streamproc_circuit_open{task}`: 1 while the task's circuit is open or half-open in any worker."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "streamproc_circuit_open", "1 while the task's circuit breaker is open.", labels=["task"]
        )
        states: dict[str, bool] = {}
        for worker in self._workers:
            for task, is_open in worker.circuits().items():
                states[task] = states.get(task, False) or is_open
        for task, is_open in sorted(states.items()):
            family.add_metric([task], 1.0 if is_open else 0.0)
        yield family
