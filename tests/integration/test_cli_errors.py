"""What a user sees when a setting, their app or the broker is wrong: one line on stderr, exit 1.

Each test runs `streamproc` as a child process, as a user would; none needs a broker (the
unreachable one is a port nothing listens on).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests.helpers import run_cli

ROOT = Path(__file__).parents[2]
TOPICS_FILE = str(ROOT / "topics" / "topics.yaml")


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child gets no `STREAMPROC_*` variable of the caller's (a CI broker address, say)."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMPROC_"):
            monkeypatch.delenv(name)


def worker(*extra: str, cwd: Path, **env: str) -> tuple[int, list[str]]:
    """`streamproc worker` on the example app from `cwd`; its exit code and stderr lines."""
    result = run_cli(
        "worker",
        "--app",
        "handlers.app:app",
        "--file",
        TOPICS_FILE,
        "--metrics-port",
        "0",
        *extra,
        cwd=str(cwd),
        PYTHONPATH=str(ROOT),
        **env,
    )
    return result.returncode, result.stderr.splitlines()


def is_log_event(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("STREAMPROC_CONCURRENCY", "abc", "use a whole number, at least 1"),
        ("STREAMPROC_SYNC_THREADS", "0", "use a whole number, at least 1"),
        ("STREAMPROC_METRICS_PORT", "-3", "use a port number from 0 to 65535"),
        ("STREAMPROC_GROUP", " ", "use a non-empty name"),
        ("STREAMPROC_LOG_FORMAT", "pretty", "use one of json, console"),
        ("STREAMPROC_LOG_LEVEL", "loud", "use one of debug, info, warning, error, critical"),
        ("STREAMPROC_SECURITY_PROTOCOL", "FOO", "use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ("STREAMPROC_SASL_MECHANISM", "NTLM", "use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (
            "STREAMPROC_BOOTSTRAP_SERVERS",
            "localhost:kafka",
            "use HOST:PORT, several separated by commas (e.g. localhost:9092)",
        ),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_it(
    clean_env: None, tmp_path: Path, name: str, value: str, allowed: str
) -> None:
    code, stderr = worker(cwd=tmp_path, **{name: value})
    assert code == 1, stderr
    assert stderr == [f"error: {name}={value} is not valid: {allowed}"]


def test_every_command_checks_the_settings(clean_env: None, tmp_path: Path) -> None:
    result = run_cli("lag", "--file", TOPICS_FILE, cwd=str(tmp_path), STREAMPROC_LOG_LEVEL="chatty")
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "error: STREAMPROC_LOG_LEVEL=chatty is not valid: use one of debug, info, warning, error, critical"
    ]


def test_dot_env_is_read_for_flags_with_a_variable(clean_env: None, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STREAMPROC_CONCURRENCY=lots\n")
    code, stderr = worker(cwd=tmp_path)
    assert code == 1
    assert stderr == ["error: STREAMPROC_CONCURRENCY=lots is not valid: use a whole number, at least 1"]


def test_dot_env_names_the_broker_and_the_environment_wins(clean_env: None, tmp_path: Path, closed_port: int) -> None:
    (tmp_path / ".env").write_text(f"STREAMPROC_BOOTSTRAP_SERVERS=127.0.0.1:{closed_port}\nSTREAMPROC_GROUP=x\n")
    code, stderr = worker(cwd=tmp_path)
    assert code == 1
    assert [line for line in stderr if line.startswith("error:")] == [
        f"error: cannot reach Kafka at 127.0.0.1:{closed_port} (Connect call failed ('127.0.0.1', {closed_port})): "
        "run `streamproc broker start` or set STREAMPROC_BOOTSTRAP_SERVERS"
    ]
    code, stderr = worker(cwd=tmp_path, STREAMPROC_CONCURRENCY="many")  # the environment, over a valid file
    assert code == 1 and stderr == ["error: STREAMPROC_CONCURRENCY=many is not valid: use a whole number, at least 1"]


def test_an_unreachable_broker_at_start_is_one_error_line_and_nothing_unclosed(
    clean_env: None, tmp_path: Path, closed_port: int
) -> None:
    code, stderr = worker(cwd=tmp_path, STREAMPROC_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port}")
    assert code == 1, stderr
    assert not [line for line in stderr if "Unclosed" in line or "Traceback" in line], stderr
    # Everything else on stderr is the worker's JSON log (an "Unclosed AIOKafka…" would be an error event).
    assert [line for line in stderr if not is_log_event(line)] == [
        f"error: cannot reach Kafka at 127.0.0.1:{closed_port} (Connect call failed ('127.0.0.1', {closed_port})): "
        "run `streamproc broker start` or set STREAMPROC_BOOTSTRAP_SERVERS"
    ], stderr


def test_console_log_format_has_no_colour_codes_in_a_redirected_file(
    clean_env: None, tmp_path: Path, closed_port: int
) -> None:
    code, stderr = worker(
        cwd=tmp_path, STREAMPROC_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port}", STREAMPROC_LOG_FORMAT="console"
    )
    assert code == 1
    assert any("serving /metrics, /healthz and /readyz" in line for line in stderr), stderr
    assert not any(is_log_event(line) for line in stderr), stderr  # console lines, not JSON
    assert not any("\x1b" in line for line in stderr), stderr


def write_app(directory: Path, source: str) -> None:
    package = directory / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(source)


@pytest.mark.parametrize(
    ("source", "failure"),
    [
        ("from streamproc import App\n\napp = App(\n\ndef f(:\n", "at myapp/tasks.py:5: SyntaxError: invalid syntax"),
        (
            "from streamproc import App\nimport no_such_dependency\napp = App()\n",
            "at myapp/tasks.py:2: ModuleNotFoundError: No module named 'no_such_dependency'",
        ),
        (
            "from streamproc import App\nfrom streamproc import no_such_name\n",
            "at myapp/tasks.py:2: ImportError: cannot import name 'no_such_name' from 'streamproc'",
        ),
        (
            'import json\n\nCONFIG = json.loads("{oops")\n',
            "at myapp/tasks.py:3: JSONDecodeError: Expecting property name enclosed in double quotes",
        ),
        (
            'import os\n\nTOKEN = os.environ["MYAPP_TOKEN_UNSET"]\n',
            "at myapp/tasks.py:3: KeyError: 'MYAPP_TOKEN_UNSET'",
        ),
    ],
)
def test_an_app_failing_on_import_is_one_line_with_file_and_line(
    clean_env: None, tmp_path: Path, source: str, failure: str
) -> None:
    write_app(tmp_path, source)
    result = run_cli("worker", "--app", "myapp.tasks:app", "--file", TOPICS_FILE, cwd=str(tmp_path))
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --app 'myapp.tasks:app': importing 'myapp.tasks' failed {failure}"), line
    debug = run_cli("--debug", "worker", "--app", "myapp.tasks:app", "--file", TOPICS_FILE, cwd=str(tmp_path))
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "myapp/tasks.py" in debug.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("myapp.nosuch:app", "error: --app 'myapp.nosuch:app': no module named 'myapp.nosuch'"),
        ("myapp.tasks:nosuch", "error: --app 'myapp.tasks:nosuch': module 'myapp.tasks' has no attribute 'nosuch'"),
    ],
)
def test_a_missing_module_or_attribute_is_one_line(clean_env: None, tmp_path: Path, spec: str, message: str) -> None:
    write_app(tmp_path, "from streamproc import App\n\napp = App()\n")
    result = run_cli("worker", "--app", spec, "--file", TOPICS_FILE, cwd=str(tmp_path))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(message), line
