"""structlog set-up: JSON lines by default, a console format for humans.

`STREAMPROC_LOG_FORMAT=console` switches the format (`json` or `console`, anything else is an
error naming the variable); `STREAMPROC_LOG_LEVEL` (default `info`) sets the level. The console
format has colours only when the stream is a terminal, so a redirected file holds no escape codes.
Standard-library logging (aiokafka's) goes through the same renderer.

A long-running process passes `repeat_interval_s`: then each distinct warning or error (its
logger, level and message template, not its arguments) is written at most once per interval, and
the next one written carries `suppressed`, the count held back since. During a broker outage
aiokafka logs every failed connection, metadata refresh, fetch and coordinator lookup, and the
worker its failed commits: without the limit that was megabytes a minute saying one thing. Task
events (those with a `task_id`) are never held back: each is about a different task.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import TextIO

import structlog

from streamproc.errors import StreamprocError
from streamproc.settings import LOG_FORMATS, LOG_LEVELS, Settings

MAX_KEYS = 1024  # distinct templates remembered; more (a bug logging ever-new text) restart the count


class RepeatLimiter:
    """Admits each key at most once per `interval_s` and counts the ones it held back (thread-safe:
    sync handlers log from their threads)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}  # key → (when last admitted, held back since)
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """None to drop this occurrence; else how many of `key` were dropped since it was last admitted."""
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self._interval_s:
                self._seen[key] = (last[0], last[1] + 1)
                return None
            if last is None and len(self._seen) >= MAX_KEYS:
                self._seen.clear()
            self._seen[key] = (now, 0)
            return 0 if last is None else last[1]


class _RepeatFilter(logging.Filter):
    """Standard-library records (aiokafka's) at WARNING and above, through a `RepeatLimiter`."""

    def __init__(self, limiter: RepeatLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        suppressed = self._limiter.admit((record.name, record.levelno, str(record.msg)))
        if suppressed is None:
            return False
        if suppressed:
            record.suppressed = suppressed
        return True


def _limit_repeats(limiter: RepeatLimiter) -> structlog.typing.Processor:
    """The same for streamproc's own structlog warnings and errors, task events excepted."""

    def processor(
        logger: structlog.typing.WrappedLogger, method_name: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        level = event_dict.get("level", method_name)
        if level not in ("warning", "error", "critical") or "task_id" in event_dict:
            return event_dict
        suppressed = limiter.admit((level, str(event_dict.get("event"))))
        if suppressed is None:
            raise structlog.DropEvent
        if suppressed:
            event_dict["suppressed"] = suppressed
        return event_dict

    return processor


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def configure_logging(
    fmt: str | None = None,
    level: str | None = None,
    stream: TextIO = sys.stderr,
    repeat_interval_s: float | None = None,
) -> None:
    """Format and level from the arguments, else `STREAMPROC_LOG_FORMAT` and `STREAMPROC_LOG_LEVEL`
    (`StreamprocError` naming the variable when one is not valid)."""
    if fmt is None or level is None:
        env = Settings.read()
        fmt, level = fmt or env.log_format, level or env.log_level
    if fmt not in LOG_FORMATS:
        raise StreamprocError(f"log format {fmt!r} is not valid: use one of {', '.join(LOG_FORMATS)}")
    if level.lower() not in LOG_LEVELS:
        raise StreamprocError(f"log level {level!r} is not valid: use one of {', '.join(LOG_LEVELS)}")
    level_no = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    limiter = RepeatLimiter(repeat_interval_s) if repeat_interval_s else None
    own_limit = [_limit_repeats(limiter)] if limiter else []
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=_is_terminal(stream))
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, *own_limit, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=("suppressed",))],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    if limiter:
        handler.addFilter(_RepeatFilter(limiter))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level_no, logging.WARNING))
