"""SIGTERM while a worker starts ends it cleanly (exit 0, no traceback), at any moment after its handler is in.

The test waits until the child catches SIGTERM (its SigCgt mask in /proc), so nothing races: from
then on, whenever SIGTERM comes, during the imports, while the app loads, or with the event loop
running, the worker must exit 0. The delays after that point only spread the moments over start-up;
`tests.held_app` holds the worker in its app import, a moment the old late handler never covered
(it was installed after the app loaded, so that case waited for a SIGTERM handler in vain).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from streamproc import provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
LAUNCHERS = {
    "python -m streamproc": [sys.executable, "-m", "streamproc"],
    "the streamproc script": [sys.executable, "-c", "from streamproc.__main__ import main; main()"],
}


def _catches_sigterm(proc: subprocess.Popen[bytes], command: list[str]) -> bool:
    """Whether `proc` runs `command` (so it has exec'd) and has a SIGTERM handler installed."""
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return cmdline[: len(command)] == [arg.encode() for arg in command] and bool(mask & SIGTERM_BIT)


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("moment", ["app loading", "+0 s", "+0.1 s", "+0.3 s", "+0.6 s", "+1.2 s"])
def test_sigterm_during_start_up_exits_0(
    kafka_settings: KafkaSettings, topology: Topology, tmp_path: Path, launcher: str, moment: str
) -> None:
    asyncio.run(provisioning.apply(kafka_settings, topology))
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    command = LAUNCHERS[launcher]
    held = moment == "app loading"
    release = tmp_path / "release"
    app = "tests.held_app:app" if held else "tests.worker_app:app"
    args = ["worker", "--app", app, "--group", f"{topology.prefix}-g", "--file", str(topics_file)]
    env = os.environ | {
        "STREAMPROC_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "STREAMPROC_TEST_RELEASE": str(release),
    }
    proc = subprocess.Popen([*command, *args, "--metrics-port", "0"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc, command):
            assert proc.poll() is None, f"the worker exited with {proc.returncode} before catching SIGTERM"
            assert time.monotonic() < deadline, "the worker never caught SIGTERM"
            time.sleep(0.002)
        if not held:
            time.sleep(float(moment.strip("+ s")))  # picks the moment; the handler is already in
        proc.send_signal(signal.SIGTERM)
        release.touch()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
