"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, `streamproc web` and
`streamproc worker` subprocesses on the session's broker, each test under topics of its own.

The browser is `/usr/bin/chromium` (`make chromium` installs it), never one Playwright downloads;
without it the tests fail, they do not skip: `make test` must prove the UI works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from streamproc.topology import Topology
from tests.browser.support import TOKEN, Web
from tests.helpers import WorkerProcesses, wait_for

CHROMIUM = "/usr/bin/chromium"
# The flags that keep Chromium from reaching for Google's services, which this closed network refuses.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APP = "tests.monitor_app:app"
expect.set_options(timeout=30_000)  # every expect(...) waits up to 30 s, as the pages' own waits do


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the package, closed after its last test: while Playwright's sync API runs, its
    event loop is the thread's running loop, which would break every asyncio test after this package."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. "
            "Install it with `make chromium` (apt-get install chromium)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page of a fresh context (empty localStorage), 30 s for any wait unless told otherwise."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def topics_file(topology: Topology, tmp_path: Path) -> Path:
    """The test's topology (a prefix of its own) as a topics file for the subprocesses."""
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(topology.model_dump()))
    return path


@pytest.fixture
def group(topology: Topology) -> str:
    return f"{topology.prefix}-g"


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """Where the workers' tasks write the labels of the tasks they ran (tests/monitor_app.py)."""
    return tmp_path / "journal.txt"


@pytest.fixture
def web(bootstrap: str, topics_file: Path, group: str, tmp_path: Path) -> Iterator[Callable[[], Web]]:
    """Starts `streamproc web` on a free port, with a token, watching the test's group; stopped
    with SIGTERM at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> Web:
        log_path = tmp_path / "web.log"
        command = [sys.executable, "-m", "streamproc", "web", "--port", "0", "--group", group]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "--file", str(topics_file), "--db", str(tmp_path / "status.sqlite")],
                env=os.environ | {"STREAMPROC_WEB_TOKEN": TOKEN, "STREAMPROC_LOG_FORMAT": "json"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        urls: list[str] = []

        def serving() -> bool:
            assert process.poll() is None, f"streamproc web exited {process.returncode}: {log_path.read_text()}"
            for line in log_path.read_text(errors="replace").splitlines():
                if '"url"' in line:
                    urls.append(json.loads(line)["url"].rstrip("/"))
                    return True
            return False

        wait_for(serving, 30, "streamproc web to serve")
        return Web(urls[0], process)

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(
    bootstrap: str, topics_file: Path, group: str, journal: Path, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts `streamproc worker` processes of tests/monitor_app.py in the test's group; killed at the end."""
    processes = WorkerProcesses(APP, group, topics_file, tmp_path, journal)
    yield processes.start
    processes.close()
