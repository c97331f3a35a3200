"""`STREAMPROC_*` settings: each bad value is one line naming the variable; `.env` fills the rest."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from streamproc.errors import StreamprocError
from streamproc.localbroker import LocalBroker
from streamproc.logs import configure_logging
from streamproc.settings import KafkaSettings, Settings, load_env_file


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No `STREAMPROC_*` variable from the caller's environment, and a current directory without `.env`."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMPROC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# (variable, bad value, what the line says is allowed)
BAD_VALUES = [
    ("STREAMPROC_BOOTSTRAP_SERVERS", "localhost:kafka", "use HOST:PORT, several separated by commas"),
    ("STREAMPROC_BOOTSTRAP_SERVERS", "a:9092,,b:9092", "use HOST:PORT, several separated by commas"),
    ("STREAMPROC_SECURITY_PROTOCOL", "TLS", "use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ("STREAMPROC_SASL_MECHANISM", "GSSAPI", "use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ("STREAMPROC_GROUP", "   ", "use a non-empty name"),
    ("STREAMPROC_CONCURRENCY", "abc", "use a whole number, at least 1"),
    ("STREAMPROC_CONCURRENCY", "0", "use a whole number, at least 1"),
    ("STREAMPROC_CONCURRENCY", "2.5", "use a whole number, at least 1"),
    ("STREAMPROC_SYNC_THREADS", "-1", "use a whole number, at least 1"),
    ("STREAMPROC_METRICS_PORT", "70000", "use a port number from 0 to 65535"),
    ("STREAMPROC_METRICS_PORT", "http", "use a port number from 0 to 65535"),
    ("STREAMPROC_LOG_FORMAT", "pretty", "use one of json, console"),
    ("STREAMPROC_LOG_LEVEL", "loud", "use one of debug, info, warning, error, critical"),
    ("STREAMPROC_BROKER_PORT", "0", "use a port number from 1 to 65534"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(StreamprocError) as caught:
        Settings.read()
    assert str(caught.value).startswith(f"{name}={value} is not valid: {allowed}")
    assert "\n" not in str(caught.value)


def test_two_bad_values_are_still_one_line_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_CONCURRENCY", "many")
    monkeypatch.setenv("STREAMPROC_LOG_FORMAT", "pretty")
    with pytest.raises(StreamprocError) as caught:
        Settings.read()
    message = str(caught.value)
    assert "\n" not in message
    assert "STREAMPROC_CONCURRENCY=many" in message and "STREAMPROC_LOG_FORMAT=pretty" in message


def test_defaults_without_any_variable() -> None:
    settings = Settings.read()
    assert (settings.bootstrap_servers, settings.security_protocol, settings.group) == (
        "localhost:9092",
        "PLAINTEXT",
        "streamproc",
    )
    assert (settings.concurrency, settings.sync_threads, settings.metrics_port) == (64, 16, 9400)
    assert (settings.log_format, settings.log_level, settings.broker_port) == ("json", "info", 9092)
    assert settings.sasl_mechanism is None and settings.topics_file is None


def test_values_are_normalised_and_an_empty_value_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("STREAMPROC_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("STREAMPROC_LOG_FORMAT", "Console")
    monkeypatch.setenv("STREAMPROC_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("STREAMPROC_CONCURRENCY", " 8 ")
    monkeypatch.setenv("STREAMPROC_GROUP", "")
    settings = Settings.read()
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (settings.log_format, settings.log_level, settings.concurrency) == ("console", "warning", 8)
    assert settings.group == "streamproc"


def test_dot_env_in_the_current_directory_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "STREAMPROC_BOOTSTRAP_SERVERS=kafka-1:9092,kafka-2:9092\nSTREAMPROC_GROUP=from-file\nSTREAMPROC_CONCURRENCY=7\n"
        "DATABASE_URL=postgres://x\n"
    )
    monkeypatch.setenv("STREAMPROC_GROUP", "from-env")
    settings = Settings.read()
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.concurrency == 7
    assert settings.group == "from-env"
    assert KafkaSettings.from_env().bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_a_bad_value_in_dot_env_is_named_like_one_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STREAMPROC_SECURITY_PROTOCOL=TLS\n")
    with pytest.raises(StreamprocError, match=r"^STREAMPROC_SECURITY_PROTOCOL=TLS is not valid: use one of PLAINTEXT"):
        KafkaSettings.from_env()


def test_load_env_file_copies_only_unset_streamproc_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "STREAMPROC_TOPICS_FILE=mine.yaml\nSTREAMPROC_GROUP=from-file\nDATABASE_URL=postgres://x\n"
    )
    monkeypatch.setenv("STREAMPROC_GROUP", "from-env")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    load_env_file()
    try:
        assert os.environ["STREAMPROC_TOPICS_FILE"] == "mine.yaml"
        assert os.environ["STREAMPROC_GROUP"] == "from-env"
        assert "DATABASE_URL" not in os.environ
    finally:
        os.environ.pop("STREAMPROC_TOPICS_FILE", None)


def test_load_env_file_without_a_file_changes_nothing() -> None:
    before = dict(os.environ)
    load_env_file()
    assert dict(os.environ) == before


def test_kafka_settings_keep_their_checks_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_BOOTSTRAP_SERVERS", "env-host:9092")
    assert KafkaSettings.from_env("flag-host:9092").bootstrap_servers == "flag-host:9092"
    assert KafkaSettings.from_env().bootstrap_servers == "env-host:9092"
    monkeypatch.setenv("STREAMPROC_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMPROC_SASL_MECHANISM", "PLAIN")
    with pytest.raises(StreamprocError) as caught:
        KafkaSettings.from_env()
    assert str(caught.value) == (
        "STREAMPROC_SECURITY_PROTOCOL=SASL_SSL needs STREAMPROC_SASL_USERNAME and STREAMPROC_SASL_PASSWORD, "
        "which are not set"
    )


def test_local_broker_reads_its_port_and_home_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMPROC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STREAMPROC_BROKER_PORT", "19092")
    broker = LocalBroker.from_env()
    assert (broker.home, broker.port, broker.controller_port) == (tmp_path / "home", 19092, 19093)
    monkeypatch.setenv("STREAMPROC_BROKER_PORT", "ninety")
    with pytest.raises(StreamprocError, match=r"^STREAMPROC_BROKER_PORT=ninety is not valid"):
        LocalBroker.from_env()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("STREAMPROC_LOG_FORMAT", "pretty", "use one of json, console"),
        ("STREAMPROC_LOG_LEVEL", "verbose", "use one of debug, info, warning, error, critical"),
    ],
)
def test_configure_logging_refuses_a_bad_format_or_level(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, name: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(StreamprocError) as caught:
        configure_logging(stream=io.StringIO())
    assert str(caught.value) == f"{name}={value} is not valid: {allowed}"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "coloured"), [(io.StringIO(), False), (_Terminal(), True)])
def test_console_format_has_colours_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, stream: io.StringIO, coloured: bool
) -> None:
    monkeypatch.setenv("STREAMPROC_LOG_FORMAT", "console")
    configure_logging(stream=stream)
    structlog.get_logger("test").warning("disk almost full", free_mb=12)
    logging.getLogger("some.library").error("broker went away")
    text = stream.getvalue()
    assert "disk almost full" in text and "free_mb" in text and "broker went away" in text
    assert ("\x1b[" in text) is coloured
