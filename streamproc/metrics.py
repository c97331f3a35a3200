"""The Prometheus metrics of SPEC §7 for one worker process, in a registry of its own.

The task path must stay cheap: prometheus-client's metric objects take a lock for every
increment and walk the buckets in Python for every observation, which cost about 30% of a
no-op worker's throughput. So task hooks keep plain counts on the event loop (a dict update, a
`bisect` into the buckets) and a collector turns them into metric families when Prometheus
scrapes, from the HTTP thread. Copying a dict's items is atomic under the GIL, so a scrape sees
each series whole (a histogram's sum may be one observation ahead of its buckets).

A task name no handler is registered under is labelled `unregistered`, so garbage on a topic
cannot grow the label set. Consumer lag is refreshed every few seconds by `refresh_lag`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Collection, Iterator, Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streamproc.envelope import RETRY_AT, Envelope
from streamproc.execution import Outcome, Result
from streamproc.routing import Disposition, Routed
from streamproc.worker import Worker

UNREGISTERED = "unregistered"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

Labels = tuple[str, ...]


class _Counts:
    """A counter's value per label values."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.values: dict[Labels, int] = {}

    def inc(self, labels: Labels) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        return family


class _Histograms:
    """A histogram per label values: the count in each bucket (the last one +Inf), then the sum."""

    __slots__ = ("bounds", "doc", "labels", "name", "series")

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, list(labels), tuple(bounds)
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        series[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is ≥ value
        series[-1] += value

    def counts(self) -> dict[Labels, float]:
        """Observations per label values."""
        return {labels: sum(series[:-1]) for labels, series in list(self.series.items())}

    def summed(self, labels: Sequence[str]) -> _Histograms:
        """The histograms per values of `labels` only (some of this one's), summed over the others."""
        rolled = _Histograms(self.name, self.doc, labels, self.bounds)
        kept = [self.labels.index(label) for label in labels]
        for values, series in list(self.series.items()):
            key = tuple(values[i] for i in kept)
            into = rolled.series.setdefault(key, [0] * (len(self.bounds) + 1) + [0.0])
            for i, count in enumerate(series):
                into[i] += count
        return rolled

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, series in list(self.series.items()):
            counts, total = series[:-1], series[-1]
            cumulative, buckets = 0.0, []
            for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(labels, buckets, sum_value=total)
        return family


# Outcomes that are no attempt to count: deferred by an open circuit, skipped as already succeeded,
# cancelled (before it started, or while it ran: not a failure of the task).
_NOT_AN_ATTEMPT = frozenset((Result.DEFERRED, Result.SKIPPED, Result.CANCELLED))


class Metrics:
    """Task hooks that record the SPEC §7 metrics; `watch` adds the workers' own state."""

    def __init__(self, task_names: Collection[str], group: str) -> None:
        self.registry = CollectorRegistry()
        self.group = group
        self._names = frozenset(task_names)
        self._failed = _Counts("streamproc_tasks_failed", "Attempts that ended in an error.", ["task", "error_type"])
        self._retried = _Counts("streamproc_tasks_retried", "Failed attempts sent to a retry tier.", ["task", "tier"])
        self._dead_lettered = _Counts("streamproc_tasks_dead_lettered", "Tasks sent to the DLQ.", ["task", "reason"])
        self._duration = _Histograms(
            "streamproc_task_duration_seconds", "Attempt run time.", ["task", "outcome"], DURATION_BUCKETS
        )
        # Kept per topic too for the live monitor's reports (`waits_by_topic`); exported without it.
        self._wait = _Histograms(
            "streamproc_task_wait_seconds",
            "Time from enqueued (a retry: from due) to started.",
            ["task", "priority", "topic"],
            WAIT_BUCKETS,
        )
        self._lag = Gauge(
            "streamproc_consumer_lag",
            "End offset minus committed offset of each partition this process owns.",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self._lag_labels: set[Labels] = set()
        self._workers: Sequence[Worker] = ()
        self.registry.register(_Exporter(self))

    def _task(self, envelope: Envelope) -> str:
        task = envelope.task
        return task if task is not None and task in self._names else UNREGISTERED

    # task hooks: started and succeeded are counted by the wait and duration histograms

    def task_started(self, envelope: Envelope) -> None:
        since_ms = envelope.enqueued_at_ms
        if RETRY_AT in envelope.headers:  # a retry waits from when it was due
            since_ms = envelope.retry_at_ms or since_ms
        wait_s = max(0.0, time.time() - since_ms / 1000)
        self._wait.observe((self._task(envelope), envelope.priority, envelope.topic), wait_s)

    def task_finished(self, envelope: Envelope, outcome: Outcome, routed: Routed) -> None:
        result = outcome.result
        if result in _NOT_AN_ATTEMPT:
            return
        task = self._task(envelope)
        self._duration.observe((task, result.value), outcome.duration_s)
        if result is Result.SUCCEEDED:
            return
        self._failed.inc((task, outcome.error_type or ""))
        if routed.disposition is Disposition.RETRIED:
            self._retried.inc((task, routed.tier or ""))
        elif routed.disposition is Disposition.DEAD_LETTERED:
            self._dead_lettered.inc((task, routed.reason or ""))

    # export

    def watch(self, workers: Sequence[Worker]) -> None:
        """Export the state of `workers` too: tasks in flight, open circuits."""
        self._workers = workers

    def waits_by_topic(self) -> dict[str, list[int]]:
        """Tasks started so far per topic they came from, per wait bucket (`WAIT_BUCKETS`, then +Inf)."""
        return {
            topic: [int(n) for n in series[:-1]] for (topic,), series in self._wait.summed(["topic"]).series.items()
        }

    def attempts(self) -> tuple[int, int]:
        """Attempts finished so far, and how many of them failed (retried or dead)."""
        finished = failed = 0
        for (_task, outcome), count in self._duration.counts().items():
            finished += int(count)
            failed += int(count) if outcome != Result.SUCCEEDED.value else 0
        return finished, failed

    def families(self) -> Iterator[Metric]:
        """Every metric but the lag, as it is now."""
        wait = self._wait.summed(["task", "priority"])
        started = CounterMetricFamily("streamproc_tasks_started", "Attempts started.", labels=["task", "priority"])
        for labels, count in wait.counts().items():
            started.add_metric(labels, count)
        succeeded = CounterMetricFamily("streamproc_tasks_succeeded", "Attempts succeeded.", labels=["task"])
        for (task, outcome), count in self._duration.counts().items():
            if outcome == Result.SUCCEEDED.value:
                succeeded.add_metric([task], count)
        yield started
        yield succeeded
        for metric in (self._failed, self._retried, self._dead_lettered):
            yield metric.family()
        yield self._duration.family()
        yield wait.family()
        workers = self._workers
        yield GaugeMetricFamily(
            "streamproc_tasks_in_flight", "Tasks running now.", value=sum(w.in_flight for w in workers)
        )
        circuits = GaugeMetricFamily("streamproc_circuit_open", "1 while the task's circuit is open.", labels=["task"])
        states: dict[str, bool] = {}
        for worker in workers:
            for task, is_open in worker.circuits().items():
                states[task] = states.get(task, False) or is_open
        for task, is_open in sorted(states.items()):
            circuits.add_metric([task], 1.0 if is_open else 0.0)
        yield circuits

    async def refresh_lag(self, workers: Sequence[Worker]) -> None:
        """Set the lag gauge from the workers' partitions now; partitions they gave up disappear."""
        current: dict[Labels, int] = {}
        for worker in workers:
            for tp, lag in (await worker.lag()).items():
                current[(self.group, tp.topic, str(tp.partition))] = lag
        for labels in self._lag_labels - current.keys():
            self._lag.remove(*labels)
        for labels, lag in current.items():
            self._lag.labels(*labels).set(lag)
        self._lag_labels = set(current)


class _Exporter(Collector):
    """Hands the registry the families `Metrics` builds at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()
