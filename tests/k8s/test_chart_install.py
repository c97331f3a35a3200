"""The chart installed into a real control plane (tests/k8s/cluster.py) with KEDA's operator and
webhooks running: hooks, Pod Security `restricted`, upgrade, and what the API server itself accepts
or refuses, beyond the schema checks of tests/chart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import dynamic
from kubernetes.client import ApiException

from streamproc import admin
from streamproc.settings import KafkaSettings
from tests.chart.rendering import CHART, MODES, NAMESPACE, SECURITY, WEB, Obj, merged, render
from tests.k8s.cluster import Cluster
from tests.k8s.release import Release, manifest, restricted_namespace


def topics_on_broker(settings: KafkaSettings, prefix: str) -> set[str]:
    async def names() -> set[str]:
        async with admin.admin_client(settings) as admin_client:
            return {t for t in await admin_client.list_topics() if t.startswith(f"{prefix}.")}

    return asyncio.run(names())


def test_install_runs_the_topics_hook_under_restricted_pod_security_and_upgrade_runs_it_again(
    api: k8s.ApiClient, release: Release, kafka_settings: KafkaSettings
) -> None:
    p = release.prefix
    installed = release.helm("install", release.values())
    assert installed.returncode == 0, installed.stderr
    # No warning at all: none from KEDA's webhook (pollingInterval/cooldownPeriod with minReplicas 1),
    # none from Pod Security (every pod of the chart meets `restricted`).
    assert "warning" not in installed.stderr.lower(), installed.stderr
    # The hook Job ran `streamproc topics apply` in the image: the topics exist on the broker.
    made = {f"{p}.high", f"{p}.normal", f"{p}.retry.1s", f"{p}.dlq", f"{p}.status", f"{p}.control", f"{p}.monitor"}
    assert made | {f"{p}.schedules"} == topics_on_broker(kafka_settings, p)
    assert k8s.BatchV1Api(api).list_namespaced_job(release.namespace).items == []  # hook-delete-policy: succeeded
    deployment = manifest(k8s.AppsV1Api(api).read_namespaced_deployment(release.deployment, release.namespace))
    assert deployment["status"]["readyReplicas"] == 1  # KEDA's HPA at minReplicas with no lag
    scaled = scaled_object(api, release)
    assert [t["metadata"]["topic"] for t in scaled["spec"]["triggers"]] == [f"{p}.high", f"{p}.normal"]

    upgraded = release.helm("upgrade", release.values({"topics": {"priorities": ["high", "normal", "low"]}}))
    assert upgraded.returncode == 0, upgraded.stderr
    assert "warning" not in upgraded.stderr.lower(), upgraded.stderr
    assert f"{p}.low" in topics_on_broker(kafka_settings, p)  # the pre-upgrade hook ran again
    triggers = [t["metadata"]["topic"] for t in scaled_object(api, release)["spec"]["triggers"]]
    assert triggers == [f"{p}.high", f"{p}.normal", f"{p}.low"]


def scaled_object(api: k8s.ApiClient, release: Release) -> Obj:
    found: Any = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "keda.sh", "v1alpha1", release.namespace, "scaledobjects", release.deployment
    )
    return dict(found)


@pytest.mark.parametrize("web", [False, True], ids=["", "web"])
@pytest.mark.parametrize("security", list(SECURITY))
@pytest.mark.parametrize("autoscaling", MODES)
def test_every_value_combination_passes_a_server_side_dry_run(
    api: k8s.ApiClient, dry_run_namespace: str, autoscaling: str, security: str, web: bool
) -> None:
    """The combinations tests/chart validates offline, sent to the API server with dryRun=All and strict
    field validation: admission (Pod Security `restricted`, KEDA's webhook) and the CRDs' schemas."""
    values = merged({"autoscaling": {"mode": autoscaling}}, SECURITY[security], WEB if web else {})
    objects = render(values)
    resources = dynamic.DynamicClient(api).resources  # type: ignore[no-untyped-call]
    for obj in objects:
        resource = resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            resource.create(
                body=obj,
                namespace=dry_run_namespace,
                query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
            )
        except ApiException as refused:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} refused: {refused.status} {refused.body}")
    assert {o["kind"] for o in objects} >= {"Deployment", "Job", "ConfigMap", "Service", "PodDisruptionBudget"}


@pytest.fixture(scope="module")
def dry_run_namespace(cluster: Cluster) -> str:
    """`helm template` renders into NAMESPACE (tests/chart/rendering.py): the dry runs go there."""
    with cluster.api_client() as api:
        return restricted_namespace(api, NAMESPACE)


def test_the_api_server_refuses_an_invalid_values_file_and_a_broken_template(release: Release, tmp_path: Path) -> None:
    """What the values schema and helm's own checks let through still stops at the API server."""
    # A memory limit the schema takes as a string, and which is no Kubernetes quantity.
    values = release.values({"worker": {"resources": {"limits": {"memory": "lots"}}}, "topicsJob": {"enabled": False}})
    refused = release.helm("install", values, "--disable-openapi-validation")
    assert refused.returncode != 0
    assert "quantities must match the regular expression" in refused.stderr, refused.stderr

    broken = tmp_path / "streamproc"
    shutil.copytree(CHART, broken)
    service = broken / "templates" / "service.yaml"
    service.write_text(service.read_text().replace("port: {{ .Values.service.port }}", "port: 70000"))
    assert "70000" in service.read_text()
    second = dataclasses.replace(release, name=f"{release.name}b")  # the first name is taken by a failed release
    refused = second.helm(
        "install", second.values({"topicsJob": {"enabled": False}}), "--disable-openapi-validation", chart=broken
    )
    assert refused.returncode != 0
    assert "must be between 1 and 65535" in refused.stderr, refused.stderr
