"""The declared topics (`topics/topics.yaml`): priorities, retry tiers, the DLQ and routes.

This is the one model every part reads: the worker for what to consume and in which priority
order, the retry router for the tiers, `topics apply` for what the cluster must hold, the Helm
chart for KEDA's topics. A file that does not fit is refused with the field that is wrong.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from streamproc.errors import StreamprocError

DEFAULT_TOPICS_FILE = "topics/topics.yaml"
TOPICS_FILE_ENV = "STREAMPROC_TOPICS_FILE"
_TEMPLATE = "default_topics.yaml"  # in the package: what `topics init` writes and the built-in defaults

TOPIC_NAME = r"^[A-Za-z0-9._-]{1,249}$"
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

Role = Literal["intake", "route", "tier", "dlq", "status", "control", "monitor", "schedules"]
CONSUMED_ROLES: frozenset[Role] = frozenset(("intake", "route", "tier"))  # what the workers' group reads


def parse_duration_ms(text: str) -> int:
    """`500ms`, `5s`, `1m`, `10m`, `1h`, `7d` → milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 5s, 1m, 2h or 7d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _configs_as_strings(value: object) -> object:
    """Kafka configs are strings; YAML users write `retention.ms: 604800000`, so accept scalars."""
    if not isinstance(value, dict):
        return value
    return {key: str(v).lower() if isinstance(v, bool) else str(v) for key, v in value.items()}


Configs = Annotated[dict[str, str], BeforeValidator(_configs_as_strings)]


def _a_duration(text: str) -> str:
    parse_duration_ms(text)  # raises ValueError, which pydantic reports with the field
    return text


Duration = Annotated[str, AfterValidator(_a_duration)]


class TopicGroup(_Strict):
    """Partitions, replication factor and configs shared by a family of topics."""

    partitions: Annotated[int, Field(ge=1)]
    replication_factor: Annotated[int, Field(ge=1)] = 1
    configs: Configs = {}


class Tiers(TopicGroup):
    partitions: Annotated[int, Field(ge=1)] = 6
    delays: list[str] = ["5s", "1m", "10m"]

    @field_validator("delays")
    @classmethod
    def _valid_delays(cls, delays: list[str]) -> list[str]:
        values = [parse_duration_ms(d) for d in delays]
        if not values:
            raise ValueError(
                "at least one tier: failures retry through tiers (use max_retries=0 to dead-letter at once)"
            )
        if any(v <= 0 for v in values):
            raise ValueError("delays must be positive")
        if values != sorted(set(values)):
            raise ValueError("delays must grow strictly from the first tier to the last")
        return delays


class StatusTopic(TopicGroup):
    """`<prefix>.status` (SPEC §12): compacted by task id, and deleted after `ttl`, which is how long
    a status, a result and an idempotency key live. Its partitions follow the intake partitions'
    numbers (`lifecycle.status.status_partition`), so give it as many as the intake topics."""

    partitions: Annotated[int, Field(ge=1)] = 12
    ttl: Duration = "24h"


class ControlTopic(TopicGroup):
    """`<prefix>.control` (SPEC §12): cancel records keyed by task id, compacted, kept `retention`
    (a cancel holds for that long); every worker reads all of its partitions."""

    partitions: Annotated[int, Field(ge=1)] = 1
    retention: Duration = "7d"


class SchedulesTopic(TopicGroup):
    """`<prefix>.schedules` (SPEC §13): delayed tasks keyed by task id until they fall due (then a
    tombstone), and each periodic task's last fired slot under `periodic:<name>`; compacted."""

    partitions: Annotated[int, Field(ge=1)] = 6


class MonitorTopic(TopicGroup):
    """`<prefix>.monitor` (SPEC §14): each worker process's report, every second, for `streamproc web`
    and `streamproc top`; kept `retention` (a report is stale seconds after it is written)."""

    partitions: Annotated[int, Field(ge=1)] = 1
    retention: Duration = "1h"


class Route(_Strict):
    """An event topic of another application, processed as tasks of one name and priority.

    With `partitions` set, `topics apply` manages the topic like its own; without, the topic
    belongs to its producer and is only expected to exist.
    """

    topic: Annotated[str, Field(pattern=TOPIC_NAME)]
    task: Annotated[str, Field(min_length=1)]
    priority: str
    partitions: Annotated[int, Field(ge=1)] | None = None
    replication_factor: Annotated[int, Field(ge=1)] = 1
    configs: Configs = {}


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the file declares it."""

    name: str
    role: Role
    partitions: int
    replication_factor: int
    configs: Configs
    priority: str | None = None
    delay_ms: int | None = None
    task: str | None = None  # a route's task name


class Topology(_Strict):
    """The whole file."""

    prefix: Annotated[str, Field(pattern=TOPIC_NAME)] = "tasks"
    priorities: Annotated[list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")]], Field(min_length=1)] = [
        "high",
        "normal",
        "low",
    ]
    intake: TopicGroup = TopicGroup(partitions=12)
    tiers: Tiers = Tiers()
    dlq: TopicGroup = TopicGroup(partitions=3, configs={"retention.ms": str(30 * 86_400_000)})
    routes: list[Route] = []
    status: StatusTopic = StatusTopic()
    control: ControlTopic = ControlTopic()
    monitor: MonitorTopic = MonitorTopic()
    schedules: SchedulesTopic = SchedulesTopic()

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        if len(set(self.priorities)) != len(self.priorities):
            raise ValueError(f"priorities: each name once, got {self.priorities}")
        for i, route in enumerate(self.routes):
            if route.priority not in self.priorities:
                raise ValueError(
                    f"routes.{i}.priority: {route.priority!r} is not one of the priorities {self.priorities}"
                )
        names = [spec.name for spec in self.topics()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"routes: topic declared twice: {', '.join(duplicates)}")
        return self

    def priority_ranks(self) -> dict[str, int]:
        """Each declared priority's rank, 0 the highest: what the scheduler orders by."""
        return {name: rank for rank, name in enumerate(self.priorities)}

    def intake_topic(self, priority: str) -> str:
        return f"{self.prefix}.{priority}"

    def tier_topic(self, delay: str) -> str:
        return f"{self.prefix}.retry.{delay}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}.status"

    @property
    def control_topic(self) -> str:
        return f"{self.prefix}.control"

    @property
    def schedules_topic(self) -> str:
        return f"{self.prefix}.schedules"

    @property
    def monitor_topic(self) -> str:
        return f"{self.prefix}.monitor"

    @property
    def status_ttl_ms(self) -> int:
        return parse_duration_ms(self.status.ttl)

    def topics(self) -> list[TopicSpec]:
        """Every declared topic, intake first in priority order, then routes, tiers, the DLQ, status, control,
        monitor and schedules."""
        specs = [
            TopicSpec(
                self.intake_topic(p),
                "intake",
                self.intake.partitions,
                self.intake.replication_factor,
                self.intake.configs,
                priority=p,
            )
            for p in self.priorities
        ]
        specs += [
            TopicSpec(
                r.topic, "route", r.partitions or 0, r.replication_factor, r.configs, priority=r.priority, task=r.task
            )
            for r in self.routes
        ]
        specs += [
            TopicSpec(
                self.tier_topic(d),
                "tier",
                self.tiers.partitions,
                self.tiers.replication_factor,
                self.tiers.configs,
                delay_ms=parse_duration_ms(d),
            )
            for d in self.tiers.delays
        ]
        specs.append(
            TopicSpec(self.dlq_topic, "dlq", self.dlq.partitions, self.dlq.replication_factor, self.dlq.configs)
        )
        specs += [
            TopicSpec(
                self.status_topic,
                "status",
                self.status.partitions,
                self.status.replication_factor,
                _compacted(self.status_ttl_ms) | self.status.configs,
            ),
            TopicSpec(
                self.control_topic,
                "control",
                self.control.partitions,
                self.control.replication_factor,
                _compacted(parse_duration_ms(self.control.retention)) | self.control.configs,
            ),
            TopicSpec(
                self.monitor_topic,
                "monitor",
                self.monitor.partitions,
                self.monitor.replication_factor,
                {"retention.ms": str(parse_duration_ms(self.monitor.retention))} | self.monitor.configs,
            ),
            TopicSpec(
                self.schedules_topic,
                "schedules",
                self.schedules.partitions,
                self.schedules.replication_factor,
                {"cleanup.policy": "compact"} | self.schedules.configs,
            ),
        ]
        return specs

    def consumed_topics(self) -> list[str]:
        """What the workers' group consumes: intake topics, routes and retry tiers, in `topics()` order."""
        return [spec.name for spec in self.topics() if spec.role in CONSUMED_ROLES]

    def managed_topics(self) -> list[TopicSpec]:
        """The topics `topics apply` creates and keeps in shape (routes without partitions are not ours)."""
        return [spec for spec in self.topics() if spec.partitions > 0]


def _compacted(retention_ms: int) -> dict[str, str]:
    """Configs of a topic compacted by key whose records also go after `retention_ms`. Deletion drops
    whole closed segments, so a segment closes within a quarter of the retention (at most a day)."""
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(retention_ms),
        "segment.ms": str(max(60_000, min(retention_ms // 4, 86_400_000))),
    }


def _describe(error: ErrorDetails) -> str:
    """`field.path: message`; a cross-field check already names its field in the message."""
    message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    path = ".".join(str(part) for part in error["loc"])
    return f"{path}: {message}" if path else message


def named_topics_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The topics file named explicitly: the `--file` flag, else `STREAMPROC_TOPICS_FILE`; None if neither."""
    named = path or os.environ.get(TOPICS_FILE_ENV)
    return Path(named) if named else None


def topics_file_target(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the topics file is read from or written to: the named file, else `topics/topics.yaml`."""
    return named_topics_file(path) or Path(DEFAULT_TOPICS_FILE)


def default_topics_text() -> str:
    """The packaged default topics file, comments included (what `streamproc topics init` writes)."""
    return resources.files("streamproc").joinpath(_TEMPLATE).read_text(encoding="utf-8")


@cache
def default_topology() -> Topology:
    """The topology every command uses when no topics file is named and `topics/topics.yaml` is absent."""
    return _parse(Path(f"<streamproc>/{_TEMPLATE}"), default_topics_text())


def load_topology(path: str | os.PathLike[str] | None = None) -> Topology:
    """The topology of every command and of `Producer.from_env`, from the first of: the file named
    by `path` (the `--file` flag) or `STREAMPROC_TOPICS_FILE`; `topics/topics.yaml` if it exists;
    the built-in defaults (`default_topology()`). A file that is named but missing is an error, so
    a typo is not silently replaced by the defaults."""
    file = named_topics_file(path)
    if file is None:
        if not Path(DEFAULT_TOPICS_FILE).is_file():
            return default_topology()
        file = Path(DEFAULT_TOPICS_FILE)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise StreamprocError(f"{file}: no such topics file (`streamproc topics init` writes one)") from None
    return _parse(file, text)


def _parse(file: Path, text: str) -> Topology:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise StreamprocError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise StreamprocError(f"{file}: expected a mapping at the top level")
    try:
        return Topology.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise StreamprocError(f"{file}: {problems}") from None
