"""The peers of SPEC §10 (sentry-arroyo, faust-streaming, Celery on Kafka), each in a virtualenv of its own.

Their dependencies (librdkafka through confluent-kafka, faust's own aiokafka pin, Celery) are no
part of streamproc's environment: on first use the bench creates a virtualenv per peer under
`~/.cache/streamproc/peers/<peer>-<hash>/` (the hash covers the pinned requirements and the
Python version) and installs the pinned versions from PyPI into it. A peer then runs a script
of `peer_scripts/` (stdlib and that peer only, nothing of streamproc) that prints the runner
protocol of `runner.py`, so `Bench.rate` measures it exactly as it measures the other kinds.

A peer that cannot run (the virtualenv or the install failed, the script crashed or never
consumed) is reported as `{"could_not_run": "<one-line reason>"}` in place of its figures.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiokafka.admin import NewTopic

from streamproc.admin import admin_client
from streamproc.bench.runner import Spec
from streamproc.topology import Topology

if TYPE_CHECKING:
    from streamproc.bench.scenarios import Bench, Figures

SCRIPTS = Path(__file__).parent / "peer_scripts"
INSTALL_TIMEOUT_S = 900
FILL_TIMEOUT_S = 900


class PeerUnavailable(Exception):
    """The peer cannot run here; the message is the one-line reason."""


@dataclass(frozen=True)
class Peer:
    kind: Literal["arroyo", "faust", "celery"]
    label: str  # for the table
    script: str  # in peer_scripts/
    requirements: tuple[str, ...]  # pinned: what was measured is known
    own_backlog: bool = False  # Celery reads Celery messages, produced by its own client to its own topic


PEERS = (
    Peer(
        "arroyo",
        "sentry-arroyo: RunTask, CommitOffsets",
        "arroyo_peer.py",
        ("sentry-arroyo==2.48.0", "confluent-kafka==2.16.1"),
    ),
    Peer("faust", "faust-streaming: an agent, at-least-once", "faust_peer.py", ("faust-streaming==0.15.3",)),
    Peer(
        "celery",
        "Celery on kombu's confluentkafka://, solo, acks_late",
        "celery_peer.py",
        ("celery==5.7.0", "kombu[confluentkafka]==5.7.0", "confluent-kafka==2.15.1"),  # kombu pins 2.15.1
        own_backlog=True,
    ),
)


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamproc" / "peers"


def venv_dir(peer: Peer) -> Path:
    pinned = "\n".join([f"python {sys.version_info.major}.{sys.version_info.minor}", *peer.requirements])
    return cache_home() / f"{peer.kind}-{hashlib.sha256(pinned.encode()).hexdigest()[:12]}"


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _run(command: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PeerUnavailable(f"{what}: {error}") from error
    if done.returncode != 0:
        raise PeerUnavailable(f"{what} failed: {_last_line(done.stderr or done.stdout)}")


def ensure(peer: Peer) -> Path:
    """The interpreter of the peer's virtualenv, created and installed on first use."""
    directory = venv_dir(peer)
    python = directory / "bin" / "python"
    ready = directory / ".ready"  # written last: a half-made virtualenv is made again
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benches at once build it once
        if ready.exists():
            return python
        shutil.rmtree(directory, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(directory)], "python -m venv", 120)
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*install, *peer.requirements], f"pip install {' '.join(peer.requirements)}", INSTALL_TIMEOUT_S)
        ready.write_text("\n".join(peer.requirements) + "\n")
    return python


def spec(bench: Bench, peer: Peer, topology: Topology, python: Path, backlog: int) -> Spec:
    base = bench.spec(peer.kind, topology)
    topic = f"{topology.prefix}.{peer.kind}" if peer.own_backlog else base.topic
    return base.model_copy(
        update={"python": str(python), "script": str(SCRIPTS / peer.script), "topic": topic, "count": backlog}
    )


async def rate(bench: Bench, peer: Peer, topology: Topology, backlog: int) -> Figures:
    """The peer's tasks/s on the scenario's backlog (or its own copy of it), or why it could not run."""
    try:
        python = await asyncio.to_thread(ensure, peer)
        run = spec(bench, peer, topology, python, backlog)
        if not peer.own_backlog:
            return await asyncio.to_thread(bench.rate, run, backlog=backlog)
        async with admin_client(bench.settings) as client:
            await client.create_topics([NewTopic(run.topic, topology.intake.partitions, 1)])
        try:
            fill = [run.python or "", run.script or "", "fill", run.model_dump_json()]
            await asyncio.to_thread(_run, fill, f"{peer.kind}: producing the backlog", FILL_TIMEOUT_S)
            return await asyncio.to_thread(bench.rate, run, backlog=backlog)
        finally:
            async with admin_client(bench.settings) as client:
                await client.delete_topics([run.topic])
    except Exception as error:  # never fails the bench: the table says why
        return {"could_not_run": _last_line(str(error)) or type(error).__name__}


def versions() -> dict[str, list[str]]:
    """What the peers run, for the JSON's machine section."""
    return {peer.kind: list(peer.requirements) for peer in PEERS}


def reason(figures: dict[str, Any]) -> str | None:
    """Why a system could not run, or None if it ran."""
    why = figures.get("could_not_run")
    return None if why is None else str(why)
