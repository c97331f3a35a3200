"""The live monitor in a real browser (issue 14): `streamproc web` on the real broker, real
`streamproc worker` processes, Debian's Chromium driven by Playwright. Each test saves a
screenshot of what it checked into docs/screenshots/.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.browser.support import Web, apply, open_ui, ran, screenshot, submit
from tests.helpers import wait_for

Workers = Callable[..., subprocess.Popen[bytes]]
GONE_WITHIN_S = 10.0

# Every change of #pending-total, kept in the page for the test to read back.
RECORD_PENDING = """() => {
  window.pendingSeen = [];
  const figure = document.querySelector("#pending-total");
  const note = () => window.pendingSeen.push(figure.textContent);
  note();
  new MutationObserver(note).observe(figure, { childList: true, characterData: true, subtree: true });
}"""


def test_pending_drops_while_tasks_drain(
    kafka_settings: KafkaSettings, topology: Topology, web: Callable[[], Web], workers: Workers, page: Page
) -> None:
    n = 400  # 400 x 50 ms on 4 slots: about 5 s of draining, several of the overview's ticks
    submit(kafka_settings, topology, "work", [{"label": f"w{i}", "sleep_ms": 50} for i in range(n)], priority="normal")
    server = web()
    open_ui(page, server)
    expect(page.locator("#pending-total")).to_have_text(str(n))
    normal = page.locator(f'#queues tbody tr[data-topic="{topology.intake_topic("normal")}"]')
    expect(normal.locator("td").nth(3)).to_have_text(str(n))
    expect(page.locator("#workers-alive")).to_have_text("0")
    page.evaluate(RECORD_PENDING)

    workers("--concurrency", "4")
    page.wait_for_function(
        f"() => {{ const v = Number(document.querySelector('#pending-total').textContent); return v > 0 && v < {n}; }}"
    )
    expect(page.locator("#workers-alive")).to_have_text("1")
    screenshot(page, "overview.png")  # mid-drain: rates out, the sparkline going down
    expect(page.locator("#pending-total")).to_have_text("0", timeout=60_000)
    expect(normal.locator("td").nth(3)).to_have_text("0")

    seen = [int(text) for text in page.evaluate("window.pendingSeen") if text.isdigit()]
    print(f"\npending as the overview showed it: {seen}")
    assert seen[0] == n and seen[-1] == 0
    assert any(0 < value < n for value in seen)  # it went down step by step, not in one jump
    assert seen == sorted(seen, reverse=True)  # and never up: nothing was submitted meanwhile


def test_a_dead_task_shows_its_reason_and_succeeds_when_replayed_from_the_dlq_view(
    kafka_settings: KafkaSettings,
    topology: Topology,
    web: Callable[[], Web],
    workers: Workers,
    page: Page,
    journal: Path,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "in-the-way"
    marker.touch()
    [task_id] = submit(kafka_settings, topology, "blocked", [{"label": "blocked-1", "marker": str(marker)}])
    server = web()
    workers("--concurrency", "2")
    open_ui(page, server, f"/task/{task_id}")
    fields = page.locator("#task-fields")
    expect(fields).to_have_attribute("data-state", "dead")
    expect(page.locator("#task-id")).to_have_text(task_id)
    expect(fields).to_contain_text("retries_exhausted")  # the DLQ reason: max_retries=0
    expect(fields).to_contain_text("is in the way")  # the error
    expect(page.locator("#cancel")).to_be_hidden()  # nothing to cancel any more
    screenshot(page, "task.png")

    # The DLQ view in a second tab; the task page stays open in the first and follows the replay.
    marker.unlink()
    dlq = page.context.new_page()
    open_ui(dlq, server, "/dlq")
    letter = dlq.locator(f'#dlq-latest tbody tr[data-task-id="{task_id}"]')
    expect(letter).to_contain_text("retries_exhausted")
    expect(dlq.locator("#dlq-reasons tbody tr")).to_contain_text(["retries_exhausted"])
    letter.get_by_role("button", name="replay").click()
    expect(dlq.locator("#dlq-message")).to_have_text(re.compile(r"^replayed 1 "))
    expect(letter).to_contain_text("✓")  # the replay group's ledger has it
    screenshot(dlq, "dlq.png")

    expect(fields).to_have_attribute("data-state", "succeeded")  # live, without a reload
    expect(page.locator("#task-result")).to_contain_text("blocked-1")
    letter.get_by_role("link", name=task_id).click()  # the replay kept the task id
    expect(dlq.locator("#task-fields")).to_have_attribute("data-state", "succeeded")
    assert ran(journal) == ["blocked-1"]


def test_cancelling_a_pending_task_from_its_page_keeps_it_from_running(
    kafka_settings: KafkaSettings,
    topology: Topology,
    web: Callable[[], Web],
    workers: Workers,
    page: Page,
    journal: Path,
) -> None:
    server = web()  # and no worker yet: the task stays pending
    [task_id] = submit(kafka_settings, topology, "work", [{"label": "cancelled-1"}], key="k")
    open_ui(page, server, f"/task/{task_id}")
    fields = page.locator("#task-fields")
    expect(fields).to_have_attribute("data-state", "pending")
    page.locator("#cancel").click()
    expect(page.locator("#task-message")).to_have_text("cancelled: it will not start on any worker")
    expect(fields).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#cancel")).to_be_hidden()

    # Same key, same partition, run in order: once `after-1` ran, the worker went past the cancelled one.
    submit(kafka_settings, topology, "work", [{"label": "after-1"}], key="k")
    workers("--concurrency", "2")
    wait_for(lambda: "after-1" in ran(journal), 60, "the task submitted after the cancelled one to run")
    page.reload()
    expect(fields).to_have_attribute("data-state", "cancelled")
    answer = httpx.get(f"{server.url}/api/tasks/{task_id}", timeout=10).json()
    assert answer["state"] == "cancelled"
    assert ran(journal) == ["after-1"]  # the cancelled task never ran


def test_a_sigkilled_worker_is_shown_gone_within_10_s(
    kafka_settings: KafkaSettings, topology: Topology, web: Callable[[], Web], workers: Workers, page: Page
) -> None:
    apply(kafka_settings, topology)
    server = web()
    victim, survivor = workers("--concurrency", "2"), workers("--concurrency", "2")
    open_ui(page, server, "/workers")
    rows = page.locator("#worker-table tbody tr")
    killed = rows.and_(page.locator(f'[data-pid="{victim.pid}"]'))
    kept = rows.and_(page.locator(f'[data-pid="{survivor.pid}"]'))
    for row in (killed, kept):
        expect(row).to_have_attribute("data-state", "alive")
        expect(row.locator("td").nth(4)).not_to_have_text("0")  # the group shared the partitions out
    expect(page.locator("#workers-alive")).to_have_text("2")

    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    gone = f"() => document.querySelector('#worker-table tr[data-pid=\"{victim.pid}\"]')?.dataset.state === 'gone'"
    page.wait_for_function(gone, polling=50, timeout=GONE_WITHIN_S * 1000)  # every 50 ms: measured to within that
    shown_gone_s = time.monotonic() - killed_at
    print(f"\nSIGKILLed worker shown gone {shown_gone_s:.1f} s after the kill")
    assert shown_gone_s < GONE_WITHIN_S
    expect(killed).to_have_attribute("data-state", "gone")
    expect(kept).to_have_attribute("data-state", "alive")
    expect(page.locator("#workers-alive")).to_have_text("1")
    screenshot(page, "workers.png")

    page.locator('nav a[data-view="tiers"]').click()
    tiers = page.locator("#tier-table tbody tr")
    expect(tiers).to_have_count(len(topology.tiers.delays))
    screenshot(page, "tiers.png")
