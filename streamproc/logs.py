"""structlog set-up: JSON lines by default, a console format for humans.

`STREAMPROC_LOG_FORMAT=console` switches the format; `STREAMPROC_LOG_LEVEL` (default `info`)
sets the level. Standard-library logging (aiokafka's) goes through the same renderer.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog


def configure_logging(fmt: str | None = None, level: str | None = None, stream: TextIO = sys.stderr) -> None:
    fmt = fmt or os.environ.get("STREAMPROC_LOG_FORMAT", "json")
    level_no = logging.getLevelNamesMapping()[(level or os.environ.get("STREAMPROC_LOG_LEVEL", "info")).upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level_no, logging.WARNING))
