"""What the harness starts and must stop again: a broker of its own and worker processes.

The broker is `LocalBroker` on ports of its own (never the shared 9092) with its data in a
directory of the run's, while its jars come from the usual cache under `STREAMPROC_HOME`, so
nothing is downloaded twice. Everything here ends only processes it started itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from streamproc.localbroker import LocalBroker
from streamproc.settings import KafkaSettings
from tests.helpers import worker_command

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 19092


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _two_free_ports() -> tuple[int, int]:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return a.getsockname()[1], b.getsockname()[1]


@dataclass(frozen=True)
class ChaosBroker(LocalBroker):
    """A `LocalBroker` whose config, data, log and pid file live in `data_root`."""

    data_root: Path = Path("chaos-broker")

    @classmethod
    def create(cls, data_root: Path, port: int | None = DEFAULT_PORT) -> ChaosBroker:
        """On `port` and the next one if both are free, else on two free ports the OS picks."""
        if port is None or not (_port_free(port) and _port_free(port + 1)):
            port, controller = _two_free_ports()
        else:
            controller = port + 1
        home = LocalBroker.from_env().home
        return cls(home=home, port=port, controller_port=controller, data_root=data_root)

    @property
    def run_dir(self) -> Path:
        return self.data_root

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)

    def kill9(self, within_s: float = 30.0) -> None:
        """SIGKILL the broker, as a crash would, and return once it is gone and its ports are closed."""
        pid = self.running_pid()
        if pid is None:
            raise RuntimeError(f"the chaos broker on {self.port} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + within_s
        while self.running_pid() is not None or not (_port_free(self.port) and _port_free(self.controller_port)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the chaos broker (pid {pid}) did not die within {within_s:.0f}s")
            time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):  # start() launched it from this process: reap it
            os.waitpid(pid, os.WNOHANG)


@dataclass
class WorkerPool:
    """Worker processes of one consumer group; `live` are the members the harness has not stopped."""

    bootstrap_servers: str
    topics_file: Path
    group: str
    journal: Path
    log_dir: Path
    concurrency: int
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)
    leaving: list[subprocess.Popen[bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # workers that exited unbidden or badly
    started: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        env = os.environ | {
            "STREAMPROC_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "STREAMPROC_CHAOS_JOURNAL": str(self.journal),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        with (self.log_dir / f"worker-{self.started}.log").open("wb") as log:
            proc = subprocess.Popen(
                worker_command(
                    "tests.chaos.app:app", self.group, str(self.topics_file), "--concurrency", str(self.concurrency)
                ),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.started += 1
        self.live.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """kill -9, and return once it is dead (nothing it started can write any more)."""
        self.live.remove(proc)
        proc.kill()
        proc.wait()

    def terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM: the worker drains, commits and leaves on its own time; reaped in `check`/`stop`."""
        self.live.remove(proc)
        proc.send_signal(signal.SIGTERM)
        self.leaving.append(proc)

    def check(self) -> None:
        """Note workers that exited unbidden (and replace them, so the run can end) or badly."""
        for proc in [p for p in self.live if p.poll() is not None]:
            self.problems.append(f"worker pid {proc.pid} exited unbidden with code {proc.returncode}")
            self.live.remove(proc)
            self.start()
        for proc in [p for p in self.leaving if p.poll() is not None]:
            if proc.returncode != 0:
                self.problems.append(f"worker pid {proc.pid} exited with code {proc.returncode} after SIGTERM")
            self.leaving.remove(proc)

    def stop(self, within_s: float = 60.0) -> None:
        """SIGTERM every live worker and wait for all; SIGKILL what outlives `within_s`."""
        self.check()
        for proc in list(self.live):
            self.terminate(proc)
        deadline = time.monotonic() + within_s
        for proc in list(self.leaving):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.problems.append(f"worker pid {proc.pid} did not exit within {within_s:.0f}s of SIGTERM")
                self.leaving.remove(proc)
                proc.kill()
                proc.wait()
        self.check()

    def close(self) -> None:
        """Kill whatever of ours still runs: the harness never leaves a worker behind."""
        for proc in self.live + self.leaving:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.live.clear()
        self.leaving.clear()
