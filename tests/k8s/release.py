"""The chart installed for real: helm against the test control plane, and the Kafka side of a release
(its topics, a group's commits, a backlog of a given shape), for tests/k8s.

helm is the repo's pinned one (tests/chart/rendering.py); it talks to the cluster through the
fixture's kubeconfig, so nothing here reads a user's ~/.kube.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.structs import OffsetAndMetadata
from kubernetes import client as k8s

from streamproc import admin
from streamproc.settings import KafkaSettings
from tests.chart.rendering import CHART, Obj, helm, merged, values_file
from tests.k8s.cluster import Cluster

THRESHOLD = 100  # autoscaling.lagThreshold of every release here
# The HPA's behavior for the tests: any step up or down at once (the chart's default scales down over
# minutes, to spare the group rebalances), so a replica figure settles within the HPA's sync period.
AT_ONCE = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 1}]},
    "scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}]},
}


RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}


def restricted_namespace(api: k8s.ApiClient, name: str) -> str:
    """A namespace enforcing Pod Security `restricted`, as a hardened cluster would give a team."""
    namespace = k8s.V1Namespace.model_validate({"metadata": {"name": name, "labels": RESTRICTED}})
    k8s.CoreV1Api(api).create_namespace(namespace)
    return name


def manifest(model: Any) -> Obj:
    """An object the kubernetes client read, as the manifest it stands for (camelCase keys, no nulls)."""
    document: Obj = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return document


@dataclass(frozen=True)
class Release:
    """One helm release of the chart: its name, namespace, topic prefix and consumer group."""

    cluster: Cluster
    name: str
    namespace: str
    prefix: str
    bootstrap: str

    @property
    def group(self) -> str:
        return f"{self.prefix}-g"

    @property
    def deployment(self) -> str:
        return f"{self.name}-streamproc"

    def values(self, over: Obj | None = None) -> Obj:
        """The chart's values for this release: the session broker, topics under the release's prefix
        (two priorities, no route unless `over` adds one), the test's HPA behavior, then `over`."""
        base: Obj = {
            "kafka": {"bootstrapServers": self.bootstrap},
            "topics": {
                "prefix": self.prefix,
                "priorities": ["high", "normal"],
                "intake": {"partitions": 6},
                "tiers": {"delays": ["1s"], "partitions": 1},
                "dlq": {"partitions": 1},
                "status": {"partitions": 6},
                "schedules": {"partitions": 1},
                "routes": [],
            },
            "worker": {"group": self.group},
            "autoscaling": {"lagThreshold": THRESHOLD, "behavior": AT_ONCE},
        }
        return merged(base, over or {})

    def helm(self, command: str, values: Obj, *extra: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
        """`helm install|upgrade` of `chart` with `values` into the test cluster, waiting for its objects
        (and hooks) to be ready."""
        with values_file(values) as path:
            args = [command, self.name, str(chart), "--namespace", self.namespace, "-f", path]
            kubeconfig = {"KUBECONFIG": str(self.cluster.kubeconfig)}
            return helm(*args, "--wait", "--timeout", "180s", *extra, env=kubeconfig, timeout_s=240)

    def streamproc_lag(self, topics_file: Path) -> dict[str, Any]:
        """`streamproc lag --json` for this release's group and topics, as an operator would run it."""
        result = subprocess.run(
            [
                *(sys.executable, "-m", "streamproc", "lag", "--group", self.group, "--lag-threshold", str(THRESHOLD)),
                *("--json", "--file", str(topics_file), "--bootstrap-servers", self.bootstrap),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode in (0, 1), result.stderr  # 1: the group never committed (the figures stand)
        document: dict[str, Any] = json.loads(result.stdout)
        return document


async def produce(settings: KafkaSettings, counts: Mapping[TopicPartition, int]) -> None:
    """`counts[tp]` small records onto each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(tp.topic, b"{}", partition=tp.partition)
            for tp, count in counts.items()
            for _ in range(count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def commit(settings: KafkaSettings, group: str, offsets: Mapping[TopicPartition, int]) -> None:
    """Commits `offsets` for `group` as a worker of it would (no member needs to stay)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


async def delete_records(settings: KafkaSettings, before: Mapping[TopicPartition, int]) -> None:
    """Moves each partition's log start up to `before[tp]`, as retention would."""
    async with admin.admin_client(settings) as client:
        await client.delete_records({tp: RecordsToDelete(before_offset=o) for tp, o in before.items()})
