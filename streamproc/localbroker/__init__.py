"""A single-node Apache Kafka (KRaft) on loopback, for the demo and the tests.

The broker's jars come from Maven Central through `mvn dependency:copy-dependencies` on the
`pom.xml` beside this file and are cached under `STREAMPROC_HOME` (default
`~/.cache/streamproc`), so only the first start pays for the download. The broker runs with the
machine's JDK; its pid file lets `stop` end exactly the process `start` launched.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamproc.admin import broker_answers
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings

KAFKA_VERSION = "4.4.0"
MAIN_CLASS = "kafka.Kafka"

# Settings for a one-node test broker. The group delay of 0 makes a new consumer group get its
# first assignment at once instead of after 3 s (KAFKA-NOTES "The local broker").
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
log.segment.bytes=67108864
"""


def _require(tool: str, install_hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StreamprocError(f"`{tool}` is not on PATH: install {install_hint}")
    return path


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class StartResult:
    pid: int
    already_running: bool
    seconds: float


@dataclass(frozen=True)
class LocalBroker:
    """The local broker's files: cached jars, and its config, data, log and pid file."""

    home: Path
    port: int = 9092
    controller_port: int = 9093

    @classmethod
    def from_env(cls) -> LocalBroker:
        home = Path(os.environ.get("STREAMPROC_HOME", "~/.cache/streamproc")).expanduser()
        port = int(os.environ.get("STREAMPROC_BROKER_PORT", "9092"))
        return cls(home=home, port=port, controller_port=port + 1)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def jars_dir(self) -> Path:
        return self.home / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def run_dir(self) -> Path:
        return self.home / f"broker-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "broker.log"

    def running_pid(self) -> int | None:
        """The pid of the broker this pid file names, if that process is still our broker."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        config = str(self.run_dir / "server.properties").encode()
        return pid if MAIN_CLASS.encode() in cmdline and config in cmdline else None

    def ensure_jars(self) -> bool:
        """Resolve the broker's jars into the cache once; True when they had to be downloaded."""
        if (self.jars_dir / ".complete").exists():
            return False
        mvn = _require("mvn", "Maven (e.g. `apt-get install maven`)")
        self.jars_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.jars_dir.parent) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_bytes(resources.files(__package__).joinpath("pom.xml").read_bytes())
            out = Path(tmp) / "libs"
            proc = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={out}",
                    "-DincludeScope=runtime",
                    f"-Dkafka.version={KAFKA_VERSION}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
                raise StreamprocError("could not resolve the Kafka jars with Maven: " + " | ".join(tail))
            (out / ".complete").write_text(KAFKA_VERSION)
            shutil.rmtree(self.jars_dir, ignore_errors=True)
            out.rename(self.jars_dir)
        return True

    def _java(self, java: str, main: str, *args: str, heap: str = "256m") -> list[str]:
        log_config = resources.files(__package__).joinpath("log4j2.properties")
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            f"{self.jars_dir}/*",
            main,
            *args,
        ]

    def _format_storage(self, java: str, config: Path) -> None:
        if (self.run_dir / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        proc = subprocess.run(
            self._java(java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise StreamprocError(f"formatting the broker storage failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self, timeout: float = 90.0) -> StartResult:
        """Start the broker unless it already runs, and wait until it answers metadata requests."""
        begin = time.monotonic()
        pid = self.running_pid()
        if pid is not None:
            return StartResult(pid, already_running=True, seconds=0.0)
        java = _require("java", "a JDK 17 or newer (e.g. `apt-get install openjdk-17-jdk-headless`)")
        if _port_open(self.port) or _port_open(self.controller_port):
            raise StreamprocError(
                f"port {self.port} or {self.controller_port} is taken by another process; "
                "stop it or set STREAMPROC_BROKER_PORT"
            )
        self.ensure_jars()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "server.properties"
        config.write_text(
            SERVER_PROPERTIES.format(
                port=self.port, controller_port=self.controller_port, data_dir=self.run_dir / "data"
            )
        )
        self._format_storage(java, config)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                self._java(java, MAIN_CLASS, str(config), heap="1g"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        settings = KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        while not (_port_open(self.port) and asyncio.run(broker_answers(settings, within_s=2.0))):
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StreamprocError(f"the broker exited with code {proc.returncode}; see {self.log_file}")
            if time.monotonic() - begin > timeout:
                self.stop()
                raise StreamprocError(f"the broker did not answer within {timeout:.0f}s; see {self.log_file}")
            time.sleep(0.2)
        return StartResult(proc.pid, already_running=False, seconds=time.monotonic() - begin)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the broker this pid file names (SIGTERM, then SIGKILL); its pid, or None if none ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running_pid() is not None:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return pid
