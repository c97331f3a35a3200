"""`streamproc broker start|stop|status` on its own port, beside the session's broker."""

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

from streamproc.admin import broker_answers
from streamproc.localbroker import LocalBroker
from streamproc.settings import KafkaSettings
from tests.helpers import run_cli


def free_port_pair() -> int:
    """A port p with p and p + 1 free (the broker's and its controller's listeners)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair")


def cli(*args: str, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, STREAMPROC_BROKER_PORT=str(port), **env)


def broker_processes(config: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(config).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_start_twice_stop_and_warm_start_without_maven(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    port = free_port_pair()
    broker = LocalBroker(home=LocalBroker.from_env().home, port=port, controller_port=port + 1)
    try:
        first = cli("broker", "start", port=port)
        assert first.returncode == 0, first.stderr
        assert f"broker started (pid {broker.running_pid()}) on 127.0.0.1:{port}" in first.stdout

        second = cli("broker", "start", port=port)
        assert second.returncode == 0 and "broker already runs" in second.stdout
        assert cli("broker", "status", port=port).returncode == 0

        stopped = cli("broker", "stop", port=port)
        assert stopped.returncode == 0 and "broker stopped" in stopped.stdout
        assert broker_processes(broker.run_dir / "server.properties") == []
        assert cli("broker", "status", port=port).returncode == 1

        # The jars are cached: a start with no Maven on PATH works.
        java_only = tmp_path / "bin"
        java_only.mkdir()
        java = shutil.which("java")
        assert java is not None
        (java_only / "java").symlink_to(os.path.realpath(java))
        warm = cli("broker", "start", port=port, PATH=str(java_only))
        assert warm.returncode == 0, warm.stderr
        assert "broker started" in warm.stdout
    finally:
        cli("broker", "stop", port=port)
    assert broker_processes(broker.run_dir / "server.properties") == []
    # Stopping that broker left the session's broker alone.
    assert asyncio.run(broker_answers(kafka_settings))


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    result = cli("broker", "start", port=free_port_pair(), PATH=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: `java` is not on PATH: install a JDK 17 or newer (e.g. `apt-get install openjdk-17-jdk-headless`)"
    ]


def test_jars_are_resolved_once_into_the_cache(tmp_path: Path) -> None:
    broker = LocalBroker(home=tmp_path)
    assert broker.ensure_jars() is True
    assert any(p.name.startswith("kafka_2.13-") for p in broker.jars_dir.iterdir())
    assert broker.ensure_jars() is False
