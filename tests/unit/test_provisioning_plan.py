from streamproc.admin import TopicState
from streamproc.provisioning import plan
from streamproc.topology import Topology

TOPOLOGY = Topology.model_validate(
    {
        "prefix": "p",
        "priorities": ["high"],
        "intake": {"partitions": 4, "configs": {"retention.ms": 1000}},
        "tiers": {"delays": ["1s"], "partitions": 2},
        "dlq": {"partitions": 1},
        "routes": [{"topic": "events", "task": "t", "priority": "high"}],
        "status": {"partitions": 4, "ttl": "1h"},
    }
)
STATUS_CONFIGS = {"cleanup.policy": "compact,delete", "retention.ms": "3600000", "segment.ms": "900000"}
CONTROL_CONFIGS = {"cleanup.policy": "compact,delete", "retention.ms": "604800000", "segment.ms": "86400000"}
MONITOR_CONFIGS = {"retention.ms": "3600000"}


def matching_state() -> dict[str, TopicState]:
    return {
        "p.high": TopicState("p.high", 4, 1, {"retention.ms": "1000"}),
        "p.retry.1s": TopicState("p.retry.1s", 2, 1),
        "p.dlq": TopicState("p.dlq", 1, 1),
        "events": TopicState("events", 7, 3),
        "p.status": TopicState("p.status", 4, 1, STATUS_CONFIGS),
        "p.control": TopicState("p.control", 1, 1, CONTROL_CONFIGS),
        "p.monitor": TopicState("p.monitor", 1, 1, MONITOR_CONFIGS),
        "p.schedules": TopicState("p.schedules", 6, 1, {"cleanup.policy": "compact"}),
    }


def test_empty_cluster_creates_every_managed_topic_and_warns_of_the_external_route() -> None:
    result = plan(TOPOLOGY, {})
    assert [(t.name, t.partitions, t.configs) for t in result.create] == [
        ("p.high", 4, {"retention.ms": "1000"}),
        ("p.retry.1s", 2, {}),
        ("p.dlq", 1, {}),
        ("p.status", 4, STATUS_CONFIGS),  # compacted by task id, deleted after the status TTL
        ("p.control", 1, CONTROL_CONFIGS),
        ("p.monitor", 1, MONITOR_CONFIGS),  # worker reports, kept an hour
        ("p.schedules", 6, {"cleanup.policy": "compact"}),  # delayed tasks by id, periodic slots by name
    ]
    assert result.missing_external == ["events"]
    assert not result.refusals


def test_matching_cluster_needs_nothing() -> None:
    result = plan(TOPOLOGY, matching_state())
    assert result.is_empty and not result.refusals and not result.missing_external
    assert result.describe() == []


def test_more_declared_partitions_are_raised() -> None:
    state = matching_state() | {"p.high": TopicState("p.high", 2, 1, {"retention.ms": "1000"})}
    result = plan(TOPOLOGY, state)
    assert result.raise_partitions == {"p.high": (2, 4)}
    assert result.describe() == ["raise partitions of p.high: 2 → 4"]


def test_fewer_declared_partitions_and_other_replication_are_refused() -> None:
    state = matching_state() | {"p.high": TopicState("p.high", 8, 3, {"retention.ms": "1000"})}
    result = plan(TOPOLOGY, state)
    assert "cannot remove partitions" in result.refusals["p.high"]
    assert "replication factor 3" in result.refusals["p.high"]
    assert result.differs("p.high") and not result.differs("p.dlq")


def test_config_drift_is_set_back_to_the_file() -> None:
    state = matching_state() | {"p.dlq": TopicState("p.dlq", 1, 1, {"cleanup.policy": "compact"})}
    result = plan(TOPOLOGY, state)
    assert result.set_configs == {"p.dlq": ({"cleanup.policy": "compact"}, {})}
    assert result.describe() == ["set configs of p.dlq: cleanup.policy: compact → (default)"]
