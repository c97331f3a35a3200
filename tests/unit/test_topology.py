from pathlib import Path

import pytest

from streamproc.errors import StreamprocError
from streamproc.topology import Topology, load_topology, parse_duration_ms

REPO_TOPICS_FILE = Path(__file__).parents[2] / "topics" / "topics.yaml"


def test_defaults_are_those_of_the_spec() -> None:
    topics = {spec.name: spec for spec in Topology().topics()}
    assert [n for n, s in topics.items() if s.role == "intake"] == ["tasks.high", "tasks.normal", "tasks.low"]
    assert {n: s.partitions for n, s in topics.items() if s.role == "intake"} == dict.fromkeys(
        ["tasks.high", "tasks.normal", "tasks.low"], 12
    )
    assert {n: (s.partitions, s.delay_ms) for n, s in topics.items() if s.role == "tier"} == {
        "tasks.retry.5s": (6, 5_000),
        "tasks.retry.1m": (6, 60_000),
        "tasks.retry.10m": (6, 600_000),
    }
    assert topics["tasks.dlq"].partitions == 3
    assert int(topics["tasks.dlq"].configs["retention.ms"]) >= 7 * 86_400_000


def test_repo_file_declares_the_spec_topics_and_a_route() -> None:
    topology = load_topology(REPO_TOPICS_FILE)
    names = [spec.name for spec in topology.managed_topics()]
    assert names[:3] == ["tasks.high", "tasks.normal", "tasks.low"]
    assert {"tasks.retry.5s", "tasks.retry.1m", "tasks.retry.10m", "tasks.dlq"} <= set(names)
    assert [(r.topic, r.task, r.priority) for r in topology.routes] == [("orders.created", "process_order", "normal")]


def test_four_priorities_are_configurable() -> None:
    topology = Topology(priorities=["critical", "high", "normal", "low"])
    assert [s.name for s in topology.topics() if s.role == "intake"] == [
        "tasks.critical",
        "tasks.high",
        "tasks.normal",
        "tasks.low",
    ]


def test_yaml_scalars_become_kafka_config_strings(tmp_path: Path) -> None:
    file = tmp_path / "topics.yaml"
    file.write_text("intake:\n  partitions: 2\n  configs:\n    retention.ms: 1000\n    preallocate: true\n")
    assert load_topology(file).intake.configs == {"retention.ms": "1000", "preallocate": "true"}


def test_unmanaged_route_is_declared_but_not_created() -> None:
    topology = Topology.model_validate(
        {"routes": [{"topic": "orders.created", "task": "process_order", "priority": "low"}]}
    )
    assert "orders.created" in [s.name for s in topology.topics()]
    assert "orders.created" not in [s.name for s in topology.managed_topics()]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("intake:\n  partitions: 0\n", "intake.partitions"),
        ("tiers:\n  delays: [5s, soon]\n", "tiers.delays"),
        ("tiers:\n  delays: [1m, 5s]\n", "tiers.delays"),
        ("tiers:\n  delays: []\n", "tiers.delays"),
        ("priorities: [high, high]\n", "priorities"),
        ("routes:\n  - {topic: a.b, task: t, priority: urgent}\n", "routes.0.priority"),
        ("routes:\n  - {topic: 'bad topic', task: t, priority: high}\n", "routes.0.topic"),
        ("routes:\n  - {topic: tasks.high, task: t, priority: high, partitions: 1}\n", "tasks.high"),
        ("dlq:\n  partitions: 3\n  retention: 5\n", "dlq.retention"),
        ("prefixx: tasks\n", "prefixx"),
    ],
)
def test_bad_file_is_a_clear_error_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    file = tmp_path / "topics.yaml"
    file.write_text(text)
    with pytest.raises(StreamprocError, match=str(file)) as excinfo:
        load_topology(file)
    assert field in str(excinfo.value)


def test_missing_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StreamprocError, match="no such topics file"):
        load_topology(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("priorities: [high\n")
    with pytest.raises(StreamprocError, match="not valid YAML"):
        load_topology(tmp_path / "broken.yaml")


def test_durations() -> None:
    assert [parse_duration_ms(d) for d in ["250ms", "5s", "1m", "2h", "7d"]] == [
        250,
        5_000,
        60_000,
        7_200_000,
        604_800_000,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms("5 s")
