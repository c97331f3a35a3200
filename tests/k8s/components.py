"""The host processes of the test cluster: their binaries, ports, start, stop and logs.

Every part of the cluster runs as a plain process on 127.0.0.1 (no containers, no kubelet), so what
starts and stops them, and shows their logs when something fails, is shared by all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[2]
KEDA_TOOLS_MODULE = ROOT / "tools" / "keda"  # its go.mod pins KEDA and kwok: their sources give CRDs and stages


class ClusterError(AssertionError):
    """The cluster could not start, or a wait ran out of time: the message says why, with log tails."""


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together, so no two are the same)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Component:
    """One host process of the cluster, in a process group of its own, logging to a file."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | self.env,
                start_new_session=True,  # its own process group: stop() signals the group
            )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self) -> None:
        """SIGTERM to the process group, not waiting."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM to the process group, then SIGKILL after `grace_s`; wait for the process."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def describe(self, lines: int = 40) -> str:
        code = self.exited()
        state = "running" if code is None else f"exited with {code}"
        return f"--- {self.name} ({state}), last lines of {self.log}:\n{log_tail(self.log, lines)}"


def go_module_dir(module: str) -> Path:
    """The source directory of `module` as pinned by tools/keda/go.mod (in the Go module cache)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    result = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", module],
        cwd=KEDA_TOOLS_MODULE,
        env=os.environ | {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    directory = Path(result.stdout.strip())
    if result.returncode != 0 or not directory.is_dir():
        raise ClusterError(
            f"`go list -m {module}` in {KEDA_TOOLS_MODULE} failed ({result.returncode}): {result.stderr.strip()}; "
            "run `make k8s-tools`"
        )
    return directory


def binary(directory: Path, name: str) -> str:
    path = directory / name
    if not os.access(path, os.X_OK):
        raise ClusterError(f"{path} is missing: run `make k8s-tools` (builds the control plane, KEDA and kwok)")
    return str(path)
