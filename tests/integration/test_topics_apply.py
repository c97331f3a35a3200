"""`topics apply` against the real broker: create, idempotence, raise, refuse, dry run, CLI."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from streamproc import admin, provisioning
from streamproc.cli import app
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import run_cli


async def cluster(settings: KafkaSettings, topology: Topology) -> dict[str, admin.TopicState]:
    async with admin.admin_client(settings) as client:
        return await admin.describe_topics(client, [t.name for t in topology.topics()])


def resized(topology: Topology, partitions: int) -> Topology:
    return topology.model_copy(update={"intake": topology.intake.model_copy(update={"partitions": partitions})})


async def test_apply_creates_declared_topics_with_partitions_and_configs(
    kafka_settings: KafkaSettings, topology: Topology
) -> None:
    topology = topology.model_copy(
        update={"dlq": topology.dlq.model_copy(update={"configs": {"retention.ms": "5000000"}})}
    )
    applied = await provisioning.apply(kafka_settings, topology)
    assert len(applied.create) == len(topology.managed_topics())

    state = await cluster(kafka_settings, topology)
    assert {n: s.partitions for n, s in state.items()} == {t.name: t.partitions for t in topology.managed_topics()}
    assert state[f"{topology.prefix}.dlq"].configs == {"retention.ms": "5000000"}
    assert state[f"{topology.prefix}.high"].replication_factor == 1


async def test_second_apply_changes_nothing(kafka_settings: KafkaSettings, topology: Topology) -> None:
    await provisioning.apply(kafka_settings, topology)
    before = await cluster(kafka_settings, topology)
    again = await provisioning.apply(kafka_settings, topology)
    assert again.is_empty and again.describe() == []
    assert await cluster(kafka_settings, topology) == before


async def test_apply_raises_partitions_and_updates_configs(kafka_settings: KafkaSettings, topology: Topology) -> None:
    await provisioning.apply(kafka_settings, topology)
    grown = resized(topology, 5)
    grown = grown.model_copy(update={"tiers": grown.tiers.model_copy(update={"configs": {"retention.ms": "7200000"}})})
    result = await provisioning.apply(kafka_settings, grown)
    assert result.raise_partitions == {f"{topology.prefix}.{p}": (3, 5) for p in topology.priorities}

    state = await cluster(kafka_settings, grown)
    assert all(state[f"{topology.prefix}.{p}"].partitions == 5 for p in topology.priorities)
    assert state[f"{topology.prefix}.retry.1s"].configs == {"retention.ms": "7200000"}


async def test_decrease_is_refused_and_nothing_changes(kafka_settings: KafkaSettings, topology: Topology) -> None:
    await provisioning.apply(kafka_settings, resized(topology, 4))
    before = await cluster(kafka_settings, topology)
    shrunk = resized(topology, 2).model_copy(update={"dlq": topology.dlq.model_copy(update={"partitions": 2})})
    with pytest.raises(StreamprocError, match=r"has 4 partitions and the file declares 2.*cannot remove partitions"):
        await provisioning.apply(kafka_settings, shrunk)
    assert await cluster(kafka_settings, topology) == before  # the DLQ raise in the same plan did not happen


async def test_dry_run_only_plans(kafka_settings: KafkaSettings, topology: Topology) -> None:
    planned = await provisioning.apply(kafka_settings, topology, dry_run=True)
    assert len(planned.create) == len(topology.managed_topics())
    assert await cluster(kafka_settings, topology) == {}


def test_cli_apply_and_list(bootstrap: str, topology: Topology, tmp_path: Path) -> None:
    file = tmp_path / "topics.yaml"
    file.write_text(yaml.safe_dump(topology.model_dump()))
    runner = CliRunner()

    dry = runner.invoke(app, ["topics", "apply", "--file", str(file), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would create {topology.prefix}.high" in dry.output

    first = runner.invoke(app, ["topics", "apply", "--file", str(file)])
    assert first.exit_code == 0, first.output
    assert f"create {topology.prefix}.dlq" in first.output

    second = runner.invoke(app, ["topics", "apply", "--file", str(file)])
    assert second.exit_code == 0 and "topics are up to date" in second.output

    listing = runner.invoke(app, ["topics", "list", "--file", str(file)], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    assert f"{topology.prefix}.retry.2s" in listing.output and "missing" not in listing.output


def test_unreachable_broker_is_one_clear_line() -> None:
    result = run_cli("topics", "list", STREAMPROC_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kafka"), result.stderr


def test_bad_topics_file_is_one_line_naming_the_field(tmp_path: Path) -> None:
    file = tmp_path / "topics.yaml"
    file.write_text("routes:\n  - {topic: orders, task: t, priority: urgent}\n")
    result = run_cli("topics", "apply", "--file", str(file))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {file}: routes.0.priority: 'urgent' is not one of the priorities ['high', 'normal', 'low']"
    ]
