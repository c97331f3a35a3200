"""`streamproc demo` end to end on the session broker, as `make demo` runs it: on topics of its own
prefix, deleted on exit (also on Ctrl-C), never touching the default `tasks.*` topics."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from streamproc.admin import admin_client, end_offsets
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import run_cli

REPO = Path(__file__).parents[2]
DEFAULT_TOPICS = [spec.name for spec in Topology().topics()]


async def _topics_with_prefix(settings: KafkaSettings, prefix: str) -> list[str]:
    async with admin_client(settings) as client:
        return sorted(t for t in await client.list_topics() if t.startswith(f"{prefix}."))


def test_demo_runs_every_task_on_its_own_prefix_and_deletes_its_topics(
    kafka_settings: KafkaSettings, bootstrap: str, topology: Topology, tmp_path: Path
) -> None:
    topics_file = tmp_path / "topics.yaml"  # small partition counts and short tiers, to keep it quick
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    demo_prefix = f"{topology.prefix}-demo"  # its own prefix, unique in this session's broker
    default_before = asyncio.run(end_offsets(kafka_settings, DEFAULT_TOPICS))

    result = run_cli("demo", "--tasks", "400", "--file", str(topics_file), "--prefix", demo_prefix, cwd=str(REPO))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "400/400 tasks done" in result.stdout
    assert "metrics on http://127.0.0.1:" in result.stdout
    for priority in topology.priorities:
        assert priority in result.stdout
    assert f"the demo's topics: {demo_prefix}.* (deleted on exit)" in result.stdout
    assert f"deleted the demo's topics ({len(topology.topics())} x {demo_prefix}.*)" in result.stdout
    # The default topics hold no new record (one created meanwhile, by another test, is empty), the
    # demo's topics are gone, and the topics file's own prefix was never used.
    default_after = asyncio.run(end_offsets(kafka_settings, DEFAULT_TOPICS))
    assert {tp: end for tp, end in default_after.items() if end != default_before.get(tp, 0)} == {}
    assert asyncio.run(_topics_with_prefix(kafka_settings, demo_prefix)) == []
    assert asyncio.run(_topics_with_prefix(kafka_settings, topology.prefix)) == []


def test_ctrl_c_still_deletes_the_demos_topics(
    kafka_settings: KafkaSettings, bootstrap: str, topology: Topology, tmp_path: Path
) -> None:
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    demo_prefix = f"{topology.prefix}-demo"
    expected = sorted(spec.name.replace(topology.prefix, demo_prefix, 1) for spec in topology.topics())
    output = tmp_path / "demo.out"
    command = [sys.executable, "-m", "streamproc", "demo", "--tasks", "100000"]
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--file", str(topics_file), "--prefix", demo_prefix],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while asyncio.run(_topics_with_prefix(kafka_settings, demo_prefix)) != expected:
                assert proc.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the demo did not create its topics within 60s"
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = output.read_text()
    assert proc.returncode != 0, text  # interrupted before 100,000 tasks were done
    assert f"deleted the demo's topics ({len(expected)} x {demo_prefix}.*)" in text
    assert asyncio.run(_topics_with_prefix(kafka_settings, demo_prefix)) == []
