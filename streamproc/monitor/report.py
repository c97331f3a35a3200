"""A worker process's report to `<prefix>.monitor` (SPEC §14): one JSON record a second, keyed by `worker`.

Counters in a report are totals since the process started, not per interval: a reader that misses
reports, or starts late, still gets exact rates and wait percentiles from any two reports of the
same process. A record the model does not accept is no report (`from_json` returns None), so junk
on the topic never stops a reader.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class WorkerReport(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    worker: str = Field(description="host:pid:start time (ms): one process run")
    host: str
    pid: int
    version: str
    group: str
    started_at: int = Field(description="ms since epoch")
    at: int = Field(description="when the report was written, ms since epoch")
    interval_s: float = Field(description="the next report is due this long after `at`")
    stopped: bool = Field(False, description="the process's last report: it shut down gracefully")
    concurrency: int
    partitions: dict[str, list[int]] = Field(default_factory=dict, description="owned partitions per topic")
    in_flight: int = Field(0, description="handlers running")
    waiting: int = Field(0, description="fetched tasks waiting for a slot or their key")
    delayed: int = Field(0, description="fetched retry-tier records waiting for their retry-at")
    finished: int = Field(0, description="attempts finished since start")
    failed: int = Field(0, description="attempts since start that failed (retried or dead)")
    circuits: dict[str, bool] = Field(default_factory=dict, description="per task with a breaker: open")
    waits: dict[str, list[int]] = Field(
        default_factory=dict,
        description="tasks started since start per source topic, per wait bucket (metrics.WAIT_BUCKETS, then +Inf)",
    )

    @classmethod
    def from_json(cls, value: bytes | None) -> WorkerReport | None:
        if value is None:
            return None
        try:
            return cls.model_validate_json(value)
        except ValidationError:
            return None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
