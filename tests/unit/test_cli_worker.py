"""`streamproc worker` passes its options to the WorkerConfig it runs (no broker: the Worker is replaced)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import streamproc.cli.worker as cli_worker
from streamproc.cli import app
from streamproc.errors import StreamprocError
from streamproc.worker_config import WorkerConfig

TOPICS_FILE = str(Path(__file__).parents[2] / "topics" / "topics.yaml")


class _Built(Exception):
    """Raised by the stand-in Worker once it has its config, so the command stops before any I/O."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config


def _stand_in_worker(app: Any, settings: Any, topology: Any, config: WorkerConfig, **kwargs: Any) -> None:
    raise _Built(config)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cli_worker, "Worker", _stand_in_worker)
    monkeypatch.setattr(cli_worker, "configure_logging", lambda **kwargs: None)
    monkeypatch.delenv("STREAMPROC_SYNC_THREADS", raising=False)
    aiokafka_logger = logging.getLogger("aiokafka")
    level = aiokafka_logger.level
    yield
    aiokafka_logger.setLevel(level)  # the command sets it


def _config(*args: str, env: dict[str, str] | None = None) -> WorkerConfig:
    command = ["worker", "--app", "tests.worker_app:app", "--file", TOPICS_FILE, *args]
    result = CliRunner().invoke(app, command, env=env)
    assert isinstance(result.exception, _Built), result.output
    return result.exception.config


def test_sync_threads_default_is_the_worker_config_default() -> None:
    assert _config().sync_threads == WorkerConfig().sync_threads == 16


def test_sync_threads_from_the_flag() -> None:
    assert _config("--sync-threads", "3").sync_threads == 3


def test_sync_threads_from_the_environment() -> None:
    assert _config(env={"STREAMPROC_SYNC_THREADS": "5"}).sync_threads == 5


def test_the_flag_wins_over_the_environment() -> None:
    assert _config("--sync-threads", "2", env={"STREAMPROC_SYNC_THREADS": "5"}).sync_threads == 2


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_sync_threads_below_one_or_not_a_number_is_a_usage_error(value: str) -> None:
    command = ["worker", "--app", "tests.worker_app:app", "--file", TOPICS_FILE, "--sync-threads", value]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "--sync-threads" in result.output
    assert not isinstance(result.exception, _Built)


def test_a_bad_environment_value_names_the_variable() -> None:
    """Not a usage error (exit 2) but a bad setting: `main()` prints it as one line, exit 1
    (tests/integration/test_cli_errors.py runs the command)."""
    command = ["worker", "--app", "tests.worker_app:app", "--file", TOPICS_FILE]
    result = CliRunner().invoke(app, command, env={"STREAMPROC_SYNC_THREADS": "0"})
    assert isinstance(result.exception, StreamprocError), result.output
    assert str(result.exception) == "STREAMPROC_SYNC_THREADS=0 is not valid: use a whole number, at least 1"
