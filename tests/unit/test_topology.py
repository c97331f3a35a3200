import inspect
from pathlib import Path

import pytest
import yaml

from streamproc.cli.demo import DEMO_PREFIX, demo, demo_topology
from streamproc.errors import StreamprocError
from streamproc.producer import Producer
from streamproc.topology import Topology, default_topics_text, default_topology, load_topology, parse_duration_ms
from tests.helpers import run_cli

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


def test_the_packaged_template_is_the_defaults() -> None:
    """One source: the built-in defaults are loaded from the template `topics init` writes, and it
    agrees with the model's own field defaults (which fill what a partial file leaves out)."""
    assert default_topology() == Topology()
    assert Topology.model_validate(yaml.safe_load(default_topics_text())) == Topology()
    assert "# " in default_topics_text()  # the comments that explain each section are kept


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMPROC_TOPICS_FILE", raising=False)
    return tmp_path


def test_without_a_topics_file_every_reader_uses_the_defaults(empty_cwd: Path) -> None:
    assert load_topology() == load_topology(None) == Topology()
    assert Producer.from_env().topology == Topology()


def test_topics_yaml_in_the_working_directory_is_used_when_none_is_named(empty_cwd: Path) -> None:
    (empty_cwd / "topics").mkdir()
    (empty_cwd / "topics" / "topics.yaml").write_text("prefix: mine\n")
    assert load_topology().prefix == "mine"
    assert Producer.from_env().topology.prefix == "mine"


def test_a_named_file_must_exist(empty_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StreamprocError, match=r"absent\.yaml: no such topics file"):
        load_topology(empty_cwd / "absent.yaml")
    with pytest.raises(StreamprocError, match=r"absent\.yaml: no such topics file"):
        Producer.from_env(topics_file=empty_cwd / "absent.yaml")
    monkeypatch.setenv("STREAMPROC_TOPICS_FILE", "from-env.yaml")
    with pytest.raises(StreamprocError, match=r"from-env\.yaml: no such topics file"):
        load_topology()
    (empty_cwd / "from-env.yaml").write_text("prefix: env\n")
    assert load_topology().prefix == "env"
    assert load_topology(REPO_TOPICS_FILE).prefix == "tasks"  # the flag wins over the variable


def test_topics_init_writes_the_defaults_and_refuses_to_overwrite(tmp_path: Path) -> None:
    env = {"STREAMPROC_TOPICS_FILE": ""}
    written = run_cli("topics", "init", cwd=str(tmp_path), **env)
    assert written.returncode == 0, written.stderr
    target = tmp_path / "topics" / "topics.yaml"
    assert target.read_text() == default_topics_text()
    assert load_topology(target) == Topology()

    target.write_text("prefix: edited\n")
    refused = run_cli("topics", "init", cwd=str(tmp_path), **env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: topics/topics.yaml exists; `streamproc topics init --force` overwrites it"
    ]
    assert target.read_text() == "prefix: edited\n"

    forced = run_cli("topics", "init", "--force", cwd=str(tmp_path), **env)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text() == default_topics_text()

    named = run_cli("topics", "init", "--file", "conf/mine.yaml", cwd=str(tmp_path), **env)
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "conf" / "mine.yaml").read_text() == default_topics_text()
    by_env = run_cli("topics", "init", cwd=str(tmp_path), STREAMPROC_TOPICS_FILE="conf/env.yaml")
    assert by_env.returncode == 0, by_env.stderr
    assert (tmp_path / "conf" / "env.yaml").read_text() == default_topics_text()


def test_the_demo_runs_under_a_prefix_of_its_own_without_routes() -> None:
    assert DEMO_PREFIX == "demo" != Topology().prefix
    assert inspect.signature(demo).parameters["prefix"].default == DEMO_PREFIX
    topology = demo_topology(load_topology(REPO_TOPICS_FILE), DEMO_PREFIX)
    assert topology.routes == []
    assert all(spec.name.startswith("demo.") for spec in topology.topics())
    assert topology.priorities == load_topology(REPO_TOPICS_FILE).priorities
    with pytest.raises(StreamprocError, match="--prefix"):
        demo_topology(Topology(), "bad prefix")
