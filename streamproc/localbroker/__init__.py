"""A single-node Apache Kafka (KRaft) on loopback, for the demo and the tests.

The broker's jars come from Maven Central through `mvn dependency:copy-dependencies` on the
`pom.xml` beside this file and are cached under `STREAMPROC_HOME` (default
`~/.cache/streamproc`), so only the first start pays for the download. The broker runs with the
machine's JDK; its pid file lets `stop` end exactly the process `start` launched.

`start(secure=True)` adds a SASL_SSL listener (SCRAM-SHA-512) on port + 2 beside the PLAINTEXT
one, so the security settings and their error messages can be tried without a real cluster. It
keeps its own storage (`secure/data` in the run dir): the SCRAM user is written when the storage
is formatted, which KRaft allows without any admin tool, and the plain broker's data is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
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
from streamproc.localbroker.certs import ensure_certificates
from streamproc.settings import KafkaSettings, Settings

KAFKA_VERSION = "4.4.0"
MAIN_CLASS = "kafka.Kafka"

# Settings for a one-node test broker. The group delay of 0 makes a new consumer group get its
# first assignment at once instead of after 3 s (KAFKA-NOTES "The local broker").
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{secure_listener}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{secure_listener}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
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

SASL_MECHANISM = "SCRAM-SHA-512"
SASL_USERNAME = "streamproc"

# The SASL_SSL listener: only SCRAM-SHA-512, PEM key and trust stores (an unencrypted key, so no
# key password), and no client certificates. No authorizer: an authenticated user may do anything.
SECURE_PROPERTIES = """\
sasl.enabled.mechanisms={mechanism}
listener.name.sasl_ssl.{mechanism_lower}.sasl.jaas.config={login_module} required;
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca_file}
ssl.client.auth=none
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


def new_cluster_id() -> str:
    """A random KRaft cluster id that the storage tool's argument parser accepts.

    One id in 64 would start with "-" and be read as an option; Kafka's own `Uuid.randomUuid`
    draws again in that case, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


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
        """`STREAMPROC_HOME` and `STREAMPROC_BROKER_PORT` (`.env` too), checked like every setting."""
        env = Settings.read()
        home, port = Path(env.home).expanduser(), env.broker_port
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
    def sasl_port(self) -> int:
        """The SASL_SSL listener's port when started with `secure=True`."""
        return self.port + 2

    @property
    def secure_dir(self) -> Path:
        """The secure broker's certificates, SCRAM password and storage."""
        return self.run_dir / "secure"

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

    def runs_secure(self) -> bool:
        """True when the broker was last started (or runs) with the SASL_SSL listener."""
        try:
            return "SASL_SSL://" in (self.run_dir / "server.properties").read_text()
        except FileNotFoundError:
            return False

    def sasl_password(self) -> str:
        """The SCRAM user's password, made once per run dir (the storage keeps its hash)."""
        path = self.secure_dir / "sasl-password"
        if not path.exists():
            self.secure_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(16))
        return path.read_text().strip()

    def secure_env(self) -> dict[str, str]:
        """The `STREAMPROC_*` variables that connect a client through the SASL_SSL listener."""
        settings = self.secure_settings()
        return {
            "STREAMPROC_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "STREAMPROC_SECURITY_PROTOCOL": settings.security_protocol,
            "STREAMPROC_SASL_MECHANISM": SASL_MECHANISM,
            "STREAMPROC_SASL_USERNAME": SASL_USERNAME,
            "STREAMPROC_SASL_PASSWORD": self.sasl_password(),
            "STREAMPROC_SSL_CAFILE": str(self.secure_dir / "ca.pem"),
        }

    def secure_settings(self) -> KafkaSettings:
        """How a client connects through the SASL_SSL listener (what `secure_env` exports)."""
        return KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{self.sasl_port}",
            security_protocol="SASL_SSL",
            sasl_mechanism=SASL_MECHANISM,
            sasl_username=SASL_USERNAME,
            sasl_password=self.sasl_password(),
            ssl_cafile=str(self.secure_dir / "ca.pem"),
        )

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

    def _format_storage(self, java: str, config: Path, secure: bool) -> None:
        if (self._data_dir(secure) / "meta.properties").exists():
            return
        args = ["format", "-t", new_cluster_id(), "-c", str(config)]
        if secure:
            args += ["--add-scram", f"{SASL_MECHANISM}=[name={SASL_USERNAME},password={self.sasl_password()}]"]
        proc = subprocess.run(
            self._java(java, "kafka.tools.StorageTool", *args),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise StreamprocError(f"formatting the broker storage failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def _data_dir(self, secure: bool) -> Path:
        return self.secure_dir / "data" if secure else self.run_dir / "data"

    def _write_config(self, secure: bool) -> Path:
        config = self.run_dir / "server.properties"
        text = SERVER_PROPERTIES.format(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self._data_dir(secure),
            secure_listener=f",SASL_SSL://127.0.0.1:{self.sasl_port}" if secure else "",
        )
        if secure:
            certs = ensure_certificates(self.secure_dir, f"port {self.port}")
            text += SECURE_PROPERTIES.format(
                mechanism=SASL_MECHANISM,
                mechanism_lower=SASL_MECHANISM.lower(),
                login_module="org.apache.kafka.common.security.scram.ScramLoginModule",
                keystore=certs.keystore_file,
                ca_file=certs.ca_file,
            )
        config.write_text(text)
        return config

    def start(self, timeout: float = 90.0, secure: bool = False) -> StartResult:
        """Start the broker unless it already runs, and wait until it answers metadata requests
        (with `secure`, on the SASL_SSL listener too)."""
        begin = time.monotonic()
        pid = self.running_pid()
        if pid is not None:
            if secure and not self.runs_secure():
                raise StreamprocError(
                    f"the broker on port {self.port} runs without --secure: `streamproc broker stop` it first"
                )
            return StartResult(pid, already_running=True, seconds=0.0)
        java = _require("java", "a JDK 17 or newer (e.g. `apt-get install openjdk-17-jdk-headless`)")
        ports = [self.port, self.controller_port, *([self.sasl_port] if secure else [])]
        if any(_port_open(port) for port in ports):
            raise StreamprocError(
                f"one of ports {', '.join(map(str, ports))} is taken by another process; "
                "stop it or set STREAMPROC_BROKER_PORT"
            )
        self.ensure_jars()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config(secure)
        self._format_storage(java, config, secure)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                self._java(java, MAIN_CLASS, str(config), heap="1g"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        probes = [KafkaSettings(bootstrap_servers=self.bootstrap_servers)]
        if secure:
            probes.append(self.secure_settings())
        while not (
            _port_open(self.port) and all(asyncio.run(broker_answers(settings, within_s=2.0)) for settings in probes)
        ):
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
