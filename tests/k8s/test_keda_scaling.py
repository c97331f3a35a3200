"""KEDA's operator scales the chart's worker Deployment as `streamproc lag` predicts (SPEC §8).

Each case prepares a lag shape on the session broker (records, a group's commits, records deleted
as retention would), installs the chart with KEDA's ScaledObject, waits for the HPA KEDA made to
settle, and compares three figures: the Deployment's replicas, `streamproc lag --json`'s
`keda_replicas`, and the value KEDA serves for each trigger through the external metrics API
against the lag `streamproc lag` computed for that topic. The worker pods run on kwok's fake node,
so nothing consumes and the lag holds still while the HPA decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import TopicPartition
from kubernetes import client as k8s
from kubernetes.utils import parse_quantity

from streamproc import provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.chart.rendering import Obj
from tests.helpers import wait_for
from tests.k8s.release import THRESHOLD, Release, commit, delete_records, manifest, produce


@dataclass(frozen=True)
class Shape:
    """Records per partition of each topic (by suffix), the group's commits, and records deleted."""

    backlog: dict[str, list[int]]
    committed: dict[str, list[int]] = field(default_factory=dict)  # none: the group never committed
    deleted_below: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    replicas: int = 0  # what KEDA's rule gives; the test checks `streamproc lag` and the HPA against it


EVENTS = {
    "topics": {
        "routes": [{"topic": "{prefix}.events", "task": "generate_report", "priority": "normal", "partitions": 2}]
    }
}
SHAPES = {
    # 6 x 50 over threshold 100: 3
    "one topic": Shape({"high": [60] * 6}, committed={"high": [10] * 6, "normal": [0] * 6}, replicas=3),
    # high asks 3, normal ceil(480 / 100) = 5: the HPA takes the largest trigger
    "several topics": Shape(
        {"high": [60] * 6, "normal": [90] * 6}, committed={"high": [10] * 6, "normal": [10] * 6}, replicas=5
    ),
    # 1,000 on a 2-partition route: 1000 // 100 > 2, so KEDA caps it at 2 x 100 (maxReplicas is 6)
    "above the partition cap": Shape(
        {"events": [500, 500]}, committed={"events": [0, 0], "high": [0] * 6}, values=EVENTS, replicas=2
    ),
    # never committed: KEDA counts from the log start (0 here): 300
    "never committed": Shape({"high": [50] * 6}, replicas=3),
    # never committed, the first 80 of each partition deleted: KEDA 2.21 counts 6 x 20 = 120 (2.20: 600)
    "never committed, records deleted": Shape({"high": [100] * 6}, deleted_below={"high": [80] * 6}, replicas=2),
}


def prepared(release: Release, settings: KafkaSettings, shape: Shape, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The release's values with the shape's, its topics applied and the shape's records, deletions
    and commits in place; and the topics file the chart renders, for `streamproc lag`."""
    values = release.values(yaml.safe_load(yaml.safe_dump(shape.values).replace("{prefix}", release.prefix)))
    values["topicsJob"] = {"enabled": False}  # the topics are applied here (the hook is tested on its own)
    topology = Topology.model_validate(values["topics"])
    asyncio.run(provisioning.apply(settings, topology))
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump(mode="json")))

    def partitions(per_topic: dict[str, list[int]]) -> dict[TopicPartition, int]:
        return {
            TopicPartition(f"{release.prefix}.{suffix}", p): n
            for suffix, counts in per_topic.items()
            for p, n in enumerate(counts)
        }

    asyncio.run(produce(settings, partitions(shape.backlog)))
    if shape.deleted_below:
        asyncio.run(delete_records(settings, partitions(shape.deleted_below)))
    if shape.committed:
        asyncio.run(commit(settings, release.group, partitions(shape.committed)))
    return values, topics_file


def replicas(api: k8s.ApiClient, release: Release) -> int:
    deployment = manifest(k8s.AppsV1Api(api).read_namespaced_deployment(release.deployment, release.namespace))
    return int(deployment["spec"]["replicas"])


def only_hpa(api: k8s.ApiClient, release: Release) -> Obj | None:
    """The release's HPA (KEDA's, or the chart's own in hpa mode), once there is one."""
    found = k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(release.namespace).items
    assert len(found) <= 1, [hpa.metadata for hpa in found]
    return manifest(found[0]) if found else None


def settled(api: k8s.ApiClient, release: Release, wanted: int) -> bool:
    """The Deployment runs `wanted` replicas and KEDA's HPA wants as many."""
    hpa = only_hpa(api, release)
    return hpa is not None and hpa.get("status", {}).get("desiredReplicas") == wanted == replicas(api, release)


def served_metrics(api: k8s.ApiClient, release: Release) -> dict[str, int]:
    """The value KEDA's adapter serves for each trigger's metric, read as the HPA reads it: GET
    /apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<metric>?labelSelector=<the ScaledObject>."""
    hpa = only_hpa(api, release)
    assert hpa is not None, "KEDA made no HPA"
    values = {}
    for metric in hpa["spec"]["metrics"]:
        name = metric["external"]["metric"]["name"]
        served: Any = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            "external.metrics.k8s.io",
            "v1beta1",
            release.namespace,
            name,
            label_selector=f"scaledobject.keda.sh/name={release.deployment}",
        )
        values[name] = int(parse_quantity(served["items"][0]["value"]))  # type: ignore[no-untyped-call]
    return values


def capped(topic: dict[str, Any]) -> int:
    """A trigger's metric as KEDA's Kafka scaler caps it: at partitions x threshold when
    lag // threshold exceeds the partitions (allowIdleConsumers off)."""
    lag, partitions = int(topic["keda_lag"]), int(topic["partitions"])
    return partitions * THRESHOLD if lag // THRESHOLD > partitions else lag


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_keda_scales_the_workers_as_streamproc_lag_predicts(
    api: k8s.ApiClient, release: Release, kafka_settings: KafkaSettings, shape: Shape, tmp_path: Path
) -> None:
    values, topics_file = prepared(release, kafka_settings, shape, tmp_path)
    predicted = release.streamproc_lag(topics_file)
    assert predicted["keda_replicas"] == shape.replicas, predicted["topics"]

    installed = release.helm("install", values)
    assert installed.returncode == 0, installed.stderr
    wait_for(lambda: settled(api, release, shape.replicas), 90, f"{shape.replicas} replicas")
    triggers = {t["topic"]: capped(t) for t in predicted["topics"] if t["keda_trigger"]}
    served = served_metrics(api, release)
    assert sorted(served.values()) == sorted(triggers.values()), (served, triggers)
    print(f"HPA settled at {replicas(api, release)}, streamproc lag: {predicted['keda_replicas']}; {served}")


def test_keda_activates_workers_from_zero_when_lag_appears(
    api: k8s.ApiClient, release: Release, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """minReplicas 0: no lag, no workers; the first records wake one (KEDA's activation, not the HPA)."""
    zero = {"autoscaling": {"minReplicas": 0, "pollingInterval": 1, "cooldownPeriod": 1}}
    values, topics_file = prepared(release, kafka_settings, Shape({}, values=zero), tmp_path)
    assert release.streamproc_lag(topics_file)["keda_replicas"] == 0
    installed = release.helm("install", values)
    assert installed.returncode == 0, installed.stderr
    assert "warning" not in installed.stderr.lower(), installed.stderr  # both fields are relevant at 0
    wait_for(lambda: replicas(api, release) == 0, 60, "KEDA to scale the idle workers to zero")

    asyncio.run(produce(kafka_settings, {TopicPartition(f"{release.prefix}.high", 0): 30}))
    predicted = release.streamproc_lag(topics_file)
    assert predicted["keda_replicas"] == 1
    wait_for(lambda: replicas(api, release) == 1, 60, "KEDA to activate one worker")
    print(f"from zero: Deployment at {replicas(api, release)}, streamproc lag: {predicted['keda_replicas']}")


def test_hpa_mode_is_accepted_and_scales_on_the_exported_lag_series(api: k8s.ApiClient, release: Release) -> None:
    values = release.values({"autoscaling": {"mode": "hpa"}, "topicsJob": {"enabled": False}})
    installed = release.helm("install", values, "--wait=false")
    assert installed.returncode == 0, installed.stderr
    hpa = only_hpa(api, release)
    assert hpa is not None and hpa["metadata"]["name"] == release.deployment
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "streamproc_consumer_lag"  # the gauge every worker exports
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"group": release.group}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": str(THRESHOLD)}
