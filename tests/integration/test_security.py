"""SASL_SSL with SCRAM-SHA-512 against `streamproc broker start --secure` (SPEC §11).

Every command connects through the secure listener with the printed `STREAMPROC_*` variables;
then each way of getting them wrong gives its own one-line error and exit 1, fast, the worker
included. The secure broker has a port of its own, beside the session's broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from streamproc.localbroker import LocalBroker
from streamproc.localbroker.certs import ensure_certificates
from streamproc.topology import Topology
from tests.helpers import run_cli

SECURE_PORT = 29092  # its controller on 29093, SASL_SSL on 29094: clear of the default 9092/9093
WORKER = ("worker", "--app", "tests.worker_app:app", "--metrics-port", "0")


@dataclass(frozen=True)
class SecureBroker:
    broker: LocalBroker
    env: dict[str, str]  # what `broker start --secure` told us to export


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    broker = LocalBroker(home=LocalBroker.from_env().home, port=SECURE_PORT, controller_port=SECURE_PORT + 1)
    ran_before = broker.running_pid() is not None
    port = {"STREAMPROC_BROKER_PORT": str(SECURE_PORT)}
    started = run_cli("broker", "start", "--secure", **port)
    try:
        assert started.returncode == 0, started.stderr
        exports = {}
        for line in started.stdout.splitlines():
            if line.startswith("export "):
                name, value = line.removeprefix("export ").split("=", 1)
                exports[name] = value
        assert exports == broker.secure_env()
        assert exports["STREAMPROC_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{broker.sasl_port}"
        status = run_cli("broker", "status", **port)
        assert status.returncode == 0 and f"SASL_SSL on 127.0.0.1:{broker.sasl_port}" in status.stdout
        yield SecureBroker(broker, exports)
    finally:
        if not ran_before:
            stopped = run_cli("broker", "stop", **port)
            assert stopped.returncode == 0 and "broker stopped" in stopped.stdout, stopped.stdout + stopped.stderr
            assert broker.running_pid() is None


@pytest.fixture
def topics_file(topology: Topology, tmp_path: Path) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(topology.model_dump()))
    return path


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_command_connects_through_sasl_ssl(
    secure: SecureBroker, topology: Topology, topics_file: Path, tmp_path: Path
) -> None:
    env, file, group = secure.env, str(topics_file), f"{topology.prefix}-g"
    assert f"create {topology.prefix}.normal" in ok(run_cli("topics", "apply", "--file", file, **env))
    task_id = ok(run_cli("submit", "step", "--json", '{"label": "secure"}', "--file", file, **env)).strip()
    ok(run_cli("submit", "no_such_task", "--file", file, **env))  # the worker dead-letters it

    journal = tmp_path / "journal.txt"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamproc", *WORKER, "--group", group, "--file", file],
            env=os.environ | env | {"STREAMPROC_TEST_JOURNAL": str(journal)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not (journal.exists() and f"done {task_id} " in journal.read_text()):
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"the task did not run within 60s: {log.read_text()}"
                time.sleep(0.1)
            listed: list[dict[str, object]] = []
            while not listed:  # the dead letter is written while the task runs: wait for it too
                assert time.monotonic() < deadline, "no dead letter within 60s"
                listed = json.loads(ok(run_cli("dlq", "list", "--json", "--file", file, **env)))
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    [letter] = listed
    headers = letter["headers"]
    assert isinstance(headers, dict) and headers["task"] == "no_such_task", letter
    assert headers["dlq-reason"] == "unknown_task", letter
    lag = ok(run_cli("lag", "--group", group, "--file", file, **env))
    assert f"{topology.prefix}.normal" in lag and "KEDA would run 0 replica(s)" in lag, lag


def other_ca(directory: Path) -> str:
    """The CA file of a CA that did not sign the broker's certificate."""
    return str(ensure_certificates(directory, "another").ca_file)


# (case, variables to set, variables to unset, the error line after "error: " with {…} filled in)
FAILURES = [
    (
        "wrong password",
        {"STREAMPROC_SASL_PASSWORD": "not-the-password"},
        [],
        "SCRAM-SHA-512 authentication failed: {server} rejected user 'streamproc' "
        "(check STREAMPROC_SASL_USERNAME and STREAMPROC_SASL_PASSWORD)",
    ),
    (
        "untrusted certificate",
        {"STREAMPROC_SSL_CAFILE": "{other_ca}"},
        [],
        "TLS verification of {server} failed (self-signed certificate in certificate chain) "
        "against the CA file {other_ca} (STREAMPROC_SSL_CAFILE)",
    ),
    (
        "no CA file given",
        {},
        ["STREAMPROC_SSL_CAFILE"],
        "TLS verification of {server} failed (self-signed certificate in certificate chain) "
        "against the system's CAs only: no CA file was given (STREAMPROC_SSL_CAFILE)",
    ),
    (
        "wrong mechanism",
        {"STREAMPROC_SASL_MECHANISM": "SCRAM-SHA-256"},
        [],
        "{server} does not enable SASL mechanism SCRAM-SHA-256 (STREAMPROC_SASL_MECHANISM); it offers: SCRAM-SHA-512",
    ),
    (
        "PLAIN mechanism",
        {"STREAMPROC_SASL_MECHANISM": "PLAIN"},
        [],
        "{server} does not enable SASL mechanism PLAIN (STREAMPROC_SASL_MECHANISM); it offers: SCRAM-SHA-512",
    ),
    (
        "missing CA file",
        {"STREAMPROC_SSL_CAFILE": "{tmp}/no-such-ca.pem"},
        [],
        "cannot read the CA file {tmp}/no-such-ca.pem (STREAMPROC_SSL_CAFILE): No such file or directory",
    ),
    (
        "bogus mechanism",
        {"STREAMPROC_SASL_MECHANISM": "FOO"},
        [],
        "STREAMPROC_SASL_MECHANISM=FOO is not valid: use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
    ),
    (
        "bogus protocol",
        {"STREAMPROC_SECURITY_PROTOCOL": "TLS"},
        [],
        "STREAMPROC_SECURITY_PROTOCOL=TLS is not valid: use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
    ),
    (
        "missing credentials",
        {},
        ["STREAMPROC_SASL_USERNAME", "STREAMPROC_SASL_PASSWORD"],
        "STREAMPROC_SECURITY_PROTOCOL=SASL_SSL needs STREAMPROC_SASL_USERNAME and STREAMPROC_SASL_PASSWORD, "
        "which are not set",
    ),
    (
        "mechanism without SASL",
        {"STREAMPROC_SECURITY_PROTOCOL": "SSL"},
        [],
        "STREAMPROC_SASL_MECHANISM is set but STREAMPROC_SECURITY_PROTOCOL=SSL sends no credentials: "
        "use SASL_SSL or SASL_PLAINTEXT, or unset it",
    ),
    (
        "SSL client on the SASL_SSL listener",
        {"STREAMPROC_SECURITY_PROTOCOL": "SSL"},
        ["STREAMPROC_SASL_MECHANISM"],
        "{server} closed the connection while connecting: does STREAMPROC_SECURITY_PROTOCOL=SSL match its listener?",
    ),
    (
        "TLS client on the plaintext listener",
        {"STREAMPROC_BOOTSTRAP_SERVERS": "127.0.0.1:{plain_port}"},
        [],
        "127.0.0.1:{plain_port} closed the connection while connecting: "
        "does STREAMPROC_SECURITY_PROTOCOL=SASL_SSL match its listener?",
    ),
]


@pytest.mark.parametrize(("case", "set_", "unset", "expected"), FAILURES, ids=[case[0] for case in FAILURES])
def test_each_misconfiguration_is_its_own_line_fast(
    secure: SecureBroker,
    topics_file: Path,
    tmp_path: Path,
    case: str,
    set_: dict[str, str],
    unset: list[str],
    expected: str,
) -> None:
    values = {
        "server": secure.env["STREAMPROC_BOOTSTRAP_SERVERS"],
        "other_ca": other_ca(tmp_path / "other-ca"),
        "tmp": str(tmp_path),
        "plain_port": str(secure.broker.port),
    }
    # run_cli adds to os.environ, so "unset" is empty, which the settings read as unset.
    env = secure.env | dict.fromkeys(unset, "") | {name: value.format(**values) for name, value in set_.items()}
    line = "error: " + expected.format(**values)

    begin = time.monotonic()
    result = run_cli("topics", "list", "--file", str(topics_file), **env)
    seconds = time.monotonic() - begin
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [line]

    # The worker stops with the same line instead of retrying (its JSON log lines come before it).
    begin = time.monotonic()
    worker = run_cli(*WORKER, "--file", str(topics_file), **env)
    worker_seconds = time.monotonic() - begin
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert [text for text in worker.stderr.splitlines() if text.startswith("error:")] == [line], worker.stderr
    assert "Traceback" not in worker.stderr
    print(f"\n{case}: topics list {seconds:.2f}s, worker {worker_seconds:.2f}s")
    assert seconds < 30 and worker_seconds < 30


def test_debug_shows_the_traceback(secure: SecureBroker, topics_file: Path) -> None:
    env = secure.env | {"STREAMPROC_SASL_PASSWORD": "not-the-password"}
    result = run_cli("--debug", "topics", "list", "--file", str(topics_file), **env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KafkaConnectionError" in result.stderr
