"""`topics apply`: the plan that makes the cluster match the topics file, and its execution.

`plan` is pure (declared topics + cluster state → changes), so its rules are unit-tested without
a broker; `apply` reads the cluster, plans, and carries the plan out. A plan that would lower a
partition count or change a replication factor is refused whole, before anything is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.admin import NewTopic

from streamproc import admin
from streamproc.errors import StreamprocError
from streamproc.settings import KafkaSettings
from streamproc.topology import Configs, TopicSpec, Topology


@dataclass(frozen=True)
class Plan:
    """What `apply` will do, and what it refuses to do."""

    create: list[TopicSpec] = field(default_factory=list)
    raise_partitions: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (now, declared)
    set_configs: dict[str, tuple[Configs, Configs]] = field(default_factory=dict)  # name → (now, declared)
    refusals: dict[str, str] = field(default_factory=dict)  # name → why
    missing_external: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.create or self.raise_partitions or self.set_configs)

    def differs(self, name: str) -> bool:
        """True when the cluster's topic `name` does not match the file (missing, refused or to change)."""
        return (
            name in self.raise_partitions
            or name in self.set_configs
            or name in self.refusals
            or name in self.missing_external
            or any(t.name == name for t in self.create)
        )

    def describe(self) -> list[str]:
        """One human line per change, refusal and warning."""
        lines = [
            f"create {t.name} (partitions={t.partitions}, replication={t.replication_factor}"
            + "".join(f", {k}={v}" for k, v in sorted(t.configs.items()))
            + ")"
            for t in self.create
        ]
        lines += [
            f"raise partitions of {name}: {now} → {declared}" for name, (now, declared) in self.raise_partitions.items()
        ]
        for name, (now, declared) in self.set_configs.items():
            changes = [
                f"{k}: {now.get(k, '(default)')} → {declared.get(k, '(default)')}"
                for k in sorted(set(now) | set(declared))
                if now.get(k) != declared.get(k)
            ]
            lines.append(f"set configs of {name}: " + ", ".join(changes))
        lines += [f"refused: {reason}" for reason in self.refusals.values()]
        lines += [
            f"warning: route topic {name} does not exist (its producer creates it)" for name in self.missing_external
        ]
        return lines


def plan(topology: Topology, existing: dict[str, admin.TopicState]) -> Plan:
    """Compare the declared topics with the cluster's; the file's configs are the complete overrides."""
    result = Plan()
    for spec in topology.topics():
        state = existing.get(spec.name)
        if spec.partitions == 0:  # a route topic owned by its producer
            if state is None:
                result.missing_external.append(spec.name)
            continue
        if state is None:
            result.create.append(spec)
            continue
        refused = []
        if spec.partitions < state.partitions:
            refused.append(
                f"{spec.name} has {state.partitions} partitions and the file declares {spec.partitions}: "
                "Kafka cannot remove partitions (recreate the topic by hand if you must)"
            )
        elif spec.partitions > state.partitions:
            result.raise_partitions[spec.name] = (state.partitions, spec.partitions)
        if spec.replication_factor != state.replication_factor:
            refused.append(
                f"{spec.name} has replication factor {state.replication_factor} and the file declares "
                f"{spec.replication_factor}: topics apply does not reassign replicas"
            )
        if refused:
            result.refusals[spec.name] = "; ".join(refused)
        if dict(spec.configs) != state.configs:
            result.set_configs[spec.name] = (state.configs, dict(spec.configs))
    return result


async def apply(settings: KafkaSettings, topology: Topology, dry_run: bool = False) -> Plan:
    """Make the cluster match `topology`; with `dry_run`, only return the plan."""
    names = [spec.name for spec in topology.topics()]
    async with admin.admin_client(settings) as client:
        changes = plan(topology, await admin.describe_topics(client, names))
        if changes.refusals:
            raise StreamprocError("topics apply refused, nothing changed: " + "; ".join(changes.refusals.values()))
        if dry_run or changes.is_empty:
            return changes
        if changes.create:
            await admin.create_topics(
                client,
                [
                    NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=dict(t.configs))
                    for t in changes.create
                ],
            )
        if changes.raise_partitions:
            await admin.add_partitions(client, {n: declared for n, (_, declared) in changes.raise_partitions.items()})
        if changes.set_configs:
            await admin.set_topic_configs(client, {n: declared for n, (_, declared) in changes.set_configs.items()})
    return changes


async def delete(settings: KafkaSettings, topology: Topology) -> list[str]:
    """Delete the topology's own topics (intake, tiers, DLQ; never a route's); return those that existed."""
    own = [spec.name for spec in topology.topics() if spec.role != "route"]
    async with admin.admin_client(settings) as client:
        return await admin.delete_topics(client, own)


async def cluster_state(settings: KafkaSettings, topology: Topology) -> tuple[dict[str, admin.TopicState], Plan]:
    """What the cluster has of the declared topics, and the plan that would make it match."""
    async with admin.admin_client(settings) as client:
        existing = await admin.describe_topics(client, [spec.name for spec in topology.topics()])
    return existing, plan(topology, existing)
