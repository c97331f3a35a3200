"""`streamproc bench --quick` runs every scenario on the session broker and writes valid JSON.

Speed is not checked here (a quick run's backlogs are tiny): that the figures exist is.
"""

import asyncio
import json
import time
from pathlib import Path

from streamproc.admin import admin_client
from streamproc.bench.peers import PEERS
from streamproc.bench.scenarios import QUICK
from streamproc.settings import KafkaSettings
from tests.helpers import run_cli


async def topic_names(settings: KafkaSettings) -> set[str]:
    async with admin_client(settings) as client:
        # not the broker's own (`__consumer_offsets` appears with a fresh broker's first group)
        return {name for name in await client.list_topics() if not name.startswith("__")}


def bench_topics(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith("bench-")}


def test_quick_bench_runs_every_scenario_and_writes_the_ratios(
    bootstrap: str, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    before = asyncio.run(topic_names(kafka_settings))
    output = tmp_path / "bench.json"
    result = run_cli("bench", "--quick", "--output", str(output), STREAMPROC_BOOTSTRAP_SERVERS=bootstrap)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SPEC §10" in result.stdout
    # Each scenario deleted its topics (all named `bench-…`); the metadata follows shortly. Other tests
    # running beside this one (`make test` runs two processes) make topics of their own meanwhile.
    deadline = time.monotonic() + 30
    while (left := bench_topics(asyncio.run(topic_names(kafka_settings)) - before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"the bench left topics behind: {sorted(left)}"

    document = json.loads(output.read_text())
    assert document["mode"] == "quick"
    assert {"cores", "python", "aiokafka", "faststream", "broker"} <= document["machine"].keys()
    scenarios = document["scenarios"]
    noop = scenarios["noop"]
    assert set(noop) == {
        "aiokafka",
        "floor",
        "streamproc",
        "streamproc_no_status",
        "faststream",
        "streamproc_two_processes",
        "streamproc_batch",
        "streamproc_uvloop",
        "arroyo",
        "faust",
        "celery",
    }
    assert noop["streamproc"]["tasks_per_s"] > 0
    for compared in ("aiokafka", "floor", "streamproc", "streamproc_no_status", "streamproc_batch"):
        assert len(noop[compared]["rounds"]) == QUICK.rounds  # each one's median of alternating rounds
    assert noop["faststream"]["tasks_per_s"] > 0
    assert noop["floor"]["tasks_per_s"] > 0
    assert noop["streamproc_batch"]["tasks_per_s"] > 0
    assert noop["streamproc_uvloop"]["tasks_per_s"] > 0  # the `bench` extra installs uvloop
    for peer in PEERS:  # each runs from a virtualenv of its own; one that cannot run says why…
        assert noop[peer.kind].get("tasks_per_s", 0) > 0 or noop[peer.kind]["could_not_run"]
        # …but on the machines this runs on every peer installs and runs
        assert "could_not_run" not in noop[peer.kind], f"{peer.kind}: {noop[peer.kind]['could_not_run']}"
        assert noop[peer.kind]["tasks_per_s"] > 0
    assert document["machine"]["peers"].keys() == {peer.kind for peer in PEERS}
    assert scenarios["retry"]["retries"] == QUICK.retries
    assert scenarios["retry"]["error_p99_ms"] >= 0  # a retry never starts before its retry-at
    assert scenarios["priority"]["idle_p99_ms"] > 0
    assert scenarios["memory"]["peak_rss_mb"] > 0
    assert scenarios["results"]["results"] == QUICK.results and scenarios["results"]["p99_ms"] > 0
    assert scenarios["view"]["ingest"]["statuses"] >= QUICK.statuses
    assert scenarios["view"]["lookup"]["stored"] >= QUICK.statuses and scenarios["view"]["lookup"]["p99_ms"] > 0
    monitor = scenarios["monitor"]
    assert monitor["reports"] == monitor["reporters"] * QUICK.monitor_s
    assert monitor["reports_shown"] + monitor["reports_unseen"] == monitor["reports"] and monitor["reports_shown"] > 0
    assert 0 < monitor["lag_p50_ms"] <= monitor["lag_p99_ms"] <= monitor["lag_max_ms"]
    assert monitor["statuses_sent"] > 0 and monitor["statuses_per_s"] > 0
    assert monitor["view_statuses"] > 0
    assert monitor["rss_before_mb"] > 0 and 0 < monitor["rss_end_mb"] <= monitor["rss_hwm_mb"]
    assert monitor["rss_samples_mb"] and monitor["rss_peak_sampled_mb"] > 0
    delayed = scenarios["delayed"]
    assert delayed["ran"] == QUICK.delayed and delayed["ran_twice"] == 0 and delayed["early"] == 0
    assert 0 <= delayed["lateness_p50_ms"] <= delayed["lateness_p99_ms"] <= delayed["lateness_max_ms"]
    assert delayed["rss_peak_mb"] > 0
    ratios = document["ratios"]
    assert len(ratios) == 19
    for ratio in ratios:
        assert {"figure", "value", "target", "at_least", "met"} <= ratio.keys()
