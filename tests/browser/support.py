"""What the browser tests and their fixtures share: the token, the page helpers, and Kafka calls
made from outside Playwright's event loop."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Page, expect

from streamproc import Producer, provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

T = TypeVar("T")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TOKEN = "browser-test-token"


@dataclass(frozen=True)
class Web:
    """A running `streamproc web`."""

    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    def ui(self, view: str = "/") -> str:
        return f"{self.url}/ui/#{view}"


def blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs `coroutine` to its end in a thread of its own: Playwright's sync API holds an event loop
    in the test's thread, where `asyncio.run` refuses to start another."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def apply(settings: KafkaSettings, topology: Topology) -> None:
    blocking(provisioning.apply(settings, topology))


def submit(
    settings: KafkaSettings, topology: Topology, task: str, payloads: list[dict[str, Any]], **options: Any
) -> list[str]:
    """Applies the topology, submits `payloads` of `task` (with `options`: priority, key), returns their ids."""

    async def run() -> list[str]:
        await provisioning.apply(settings, topology)
        async with Producer(settings, topology) as producer:
            return [handle.id for handle in await producer.submit_many(task, payloads, **options)]

    return blocking(run())


def ran(journal: Path) -> list[str]:
    """The labels of the tasks the workers ran to their end (tests/monitor_app.py), in order."""
    return journal.read_text().splitlines() if journal.exists() else []


def open_ui(page: Page, web: Web, view: str = "/") -> None:
    """Opens the UI at `view`, waits for its live stream, and types the token in."""
    page.goto(web.ui(view))
    expect(page.locator("#live")).to_have_class("live on")
    page.locator("#token").fill(TOKEN)
    page.locator("#token").dispatch_event("change")


def screenshot(page: Page, name: str) -> None:
    """A full-page screenshot into docs/screenshots/ (the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / name, full_page=True)
