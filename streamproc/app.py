"""`App` and `@app.task`: handlers registered by name, with their payload model and limits.

The payload type comes from the handler's first parameter annotation (a pydantic model or
`dict`); a second parameter receives a `TaskContext`. The decorator returns a `Task`, which is
still callable like the function and can be passed to `Producer.submit` for client-side
validation.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from streamproc.errors import PoisonRecord, StreamprocError
from streamproc.ratelimit import RateLimit

if TYPE_CHECKING:  # imported when a schedule is declared: croniter costs an import only then
    from streamproc.timing.periodic import Periodic
    from streamproc.workflows.canvas import Signature

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Batch:
    """`@app.task(..., batch=Batch(...))` (SPEC §15): the handler gets up to `max_size` items at once,
    as soon as that many are fetched or `max_wait` seconds after the first of them."""

    max_size: int = 500
    max_wait: float = 0.05

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_wait < 0:
            raise StreamprocError(f"Batch needs max_size >= 1 and max_wait >= 0, got {self}")


def _validation_summary(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in error.errors())


class Task(Generic[P, R]):
    """A registered handler and everything the worker needs to run it."""

    def __init__(
        self,
        name: str,
        fn: Callable[P, R],
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int | None = None,
        rate_limit: str | None = None,
        failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_S,
        store_result: bool = True,
        track_started: bool = False,
        cache_ttl: float | None = None,
        batch: Batch | None = None,
    ) -> None:
        if batch is not None and (rate_limit or track_started):
            raise StreamprocError(f"task {name!r}: a batch task takes neither rate_limit nor track_started")
        if cache_ttl is not None and cache_ttl <= 0:
            raise StreamprocError(f"task {name!r}: cache_ttl must be a positive number of seconds")
        if max_retries is not None and max_retries < 0:
            raise StreamprocError(f"task {name!r}: max_retries must be 0 or more, got {max_retries}")
        if failure_threshold is not None and failure_threshold < 1:
            raise StreamprocError(f"task {name!r}: failure_threshold must be 1 or more (None turns the breaker off)")
        self.name = name
        self.fn = fn
        self.timeout = timeout
        self.max_retries = max_retries  # None: one retry per tier
        self.rate_limit = RateLimit.parse(rate_limit) if rate_limit else None
        # A batch has no circuit breaker: a failing dependency fails whole batches, through the tiers.
        self.failure_threshold = failure_threshold if batch is None else None
        self.batch = batch
        self.reset_timeout = reset_timeout
        self.store_result = store_result  # the return value goes into the `succeeded` status
        self.track_started = track_started  # a `started` status before the handler is called
        self.cache_ttl = cache_ttl  # submits of the same payload within it return the stored result
        self.is_async = inspect.iscoroutinefunction(fn)
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise StreamprocError(f"task {name!r}: a handler takes (payload) or (payload, ctx: TaskContext)")
        self.wants_context = len(params) == 2
        hints = get_type_hints(fn)
        returns = hints.get("return")
        annotation = hints.get(params[0].name, dict)
        if batch is not None:  # (items: list[Model], contexts: list[TaskContext]) -> list of results or None
            if get_origin(annotation) is not list or len(get_args(annotation)) != 1:
                raise StreamprocError(f"task {name!r}: a batch handler takes list[Model] or list[dict]")
            annotation = get_args(annotation)[0]
            returns = get_args(returns)[0] if get_origin(returns) is list and get_args(returns) else None
        # A pydantic return type: `TaskHandle.result()` validates the stored result back into it.
        self.returns = returns if isinstance(returns, type) and issubclass(returns, BaseModel) else None
        if annotation is dict or getattr(annotation, "__origin__", None) is dict:
            self.model: type[BaseModel] | None = None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            self.model = annotation
        else:
            raise StreamprocError(f"task {name!r}: the payload annotation must be a pydantic model or dict")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    def s(self, payload: BaseModel | Mapping[str, Any] | None = None) -> Signature:
        """A signature of this task with `payload`'s fields fixed, for `chain`, `group` and `chord`
        (SPEC §13); a chain step's other fields come from the previous step's result."""
        from streamproc.workflows.canvas import Signature

        return Signature.of(self, payload)

    def decode(self, value: bytes | None) -> BaseModel | dict[str, Any]:
        """The payload of a record's value; `PoisonRecord` for a value no attempt can accept."""
        if value is None:
            raise PoisonRecord("undecodable", "the record has no value")
        if self.model is not None:
            try:
                return self.model.model_validate_json(value)
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()):
                    raise PoisonRecord("undecodable", f"value is not JSON: {_validation_summary(exc)}") from None
                raise PoisonRecord("invalid_payload", _validation_summary(exc)) from None
        try:
            payload = from_json(value)  # pydantic-core parses in a tenth of json.loads' time
        except ValueError as exc:
            raise PoisonRecord("undecodable", f"value is not UTF-8 JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise PoisonRecord("invalid_payload", f"payload must be a JSON object, got {type(payload).__name__}")
        return payload

    def encode(self, payload: BaseModel | Mapping[str, Any]) -> bytes:
        """JSON bytes of a payload, validated against the handler's model before anything is sent."""
        if self.model is None:
            if isinstance(payload, BaseModel):
                return payload.model_dump_json().encode()
            return json.dumps(dict(payload), separators=(",", ":")).encode()
        try:
            model = payload if isinstance(payload, self.model) else self.model.model_validate(payload)
        except ValidationError as exc:
            raise StreamprocError(f"invalid payload for task {self.name!r}: {_validation_summary(exc)}") from None
        return model.model_dump_json().encode()


class App:
    """The registry of tasks a worker runs: `streamproc worker --app module:app`."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Periodic] = {}  # `@app.periodic`, by schedule name

    def task(
        self,
        name: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int | None = None,
        rate_limit: str | None = None,
        failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT_S,
        store_result: bool = True,
        track_started: bool = False,
        cache_ttl: float | None = None,
        batch: Batch | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register the decorated function as the handler of `name` (default: the function's name).

        `max_retries` defaults to the number of tiers; `rate_limit` ("50/s") paces starts per process;
        after `failure_threshold` consecutive failures (None: never) the task's circuit opens for
        `reset_timeout` seconds. Lifecycle (SPEC §12): the return value is stored as the task's result
        unless `store_result=False`; `track_started=True` writes a `started` status; with `cache_ttl`
        (seconds) a submit of the same payload within it returns the stored result instead of running.
        With `batch=Batch(max_size, max_wait)` the handler takes a list of payloads (and of contexts),
        in one concurrency slot (SPEC §15, `batches`).
        """

        def register(fn: Callable[P, R]) -> Task[P, R]:
            task_name = name or fn.__name__
            if task_name in self.tasks:
                raise StreamprocError(f"task {task_name!r} is registered twice")
            task = Task(
                task_name,
                fn,
                timeout=timeout,
                max_retries=max_retries,
                rate_limit=rate_limit,
                failure_threshold=failure_threshold,
                reset_timeout=reset_timeout,
                store_result=store_result,
                track_started=track_started,
                cache_ttl=cache_ttl,
                batch=batch,
            )
            self.tasks[task_name] = task
            return task

        return register

    def signature(self, name: str, payload: BaseModel | Mapping[str, Any] | None = None) -> Signature:
        """`task.s(payload)` by task name: typed (checked in chains) when `name` is registered here."""
        from streamproc.workflows.canvas import Signature

        return Signature.of(self.tasks.get(name, name), payload)

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        payload: BaseModel | Mapping[str, Any] | None = None,
        catch_up: str = "none",
        name: str | None = None,
        priority: str | None = None,
        grace: timedelta | None = None,
    ) -> Callable[[Task[P, R]], Task[P, R]]:
        """Fire a registered task on a schedule (SPEC §13): stack `@app.periodic(...)` above
        `@app.task(...)`, or call `app.periodic(...)(task)`. Returns the task unchanged.

        Exactly one of `cron` (a cron expression, evaluated in UTC) and `every` (a timedelta; slots
        are multiples of it since the epoch, so every process agrees on them). `payload` (default
        `{}`) is validated against the task's model now. Each slot fires exactly once with any number
        of worker processes (`timing.periodic_runner`). Slots missed by at most `grace` (default
        60 s: a failover) still fire; for older ones `catch_up="none"` fires none and `"last"` the
        latest one. `name` (default the task's name) identifies the schedule and its state.
        """
        from streamproc.timing.periodic import Periodic

        def register(task: Task[P, R]) -> Task[P, R]:
            if not isinstance(task, Task):
                raise StreamprocError(f"@app.periodic goes above @app.task (a registered task), got {task!r}")
            if self.tasks.get(task.name) is not task:
                raise StreamprocError(f"@app.periodic: task {task.name!r} is not registered with this app")
            schedule_name = name or task.name
            if schedule_name in self.schedules:
                raise StreamprocError(f"periodic schedule {schedule_name!r} is declared twice (give each a name=)")
            schedule = Periodic.build(
                schedule_name,
                task.name,
                b"{}",
                cron=cron,
                every=every,
                catch_up=catch_up,
                priority=priority,
                grace=grace,
            )
            try:
                value = task.encode({} if payload is None else payload)
            except (StreamprocError, TypeError, ValueError) as exc:  # invalid for the model, or not JSON
                raise StreamprocError(f"periodic schedule {schedule_name!r}: {exc}") from None
            self.schedules[schedule_name] = dataclasses.replace(schedule, payload=value)
            return task

        return register
