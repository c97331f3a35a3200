"""The test cluster itself (cluster.py): kwok's fake node runs Deployments, the Job runner really runs
Job pods with podman, KEDA scales a Deployment on Kafka lag through the aggregated external metrics
API, and KEDA's admission webhook answers the apiserver."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from kubernetes import client as k8s
from kubernetes.client import ApiException

import streamproc
from streamproc import admin
from streamproc.settings import KafkaSettings
from tests.k8s.cluster import Cluster

IMAGE = f"localhost/streamproc-example:{streamproc.__version__}"  # the chart's default image (`make image`)


def deployment(name: str, replicas: int) -> k8s.V1Deployment:
    labels = {"app": name}
    manifest = {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": IMAGE, "args": ["worker"]}]},
            },
        },
    }
    return k8s.V1Deployment.model_validate(manifest)


def deployment_status(apps: k8s.AppsV1Api, namespace: str, name: str) -> Any:
    return apps.read_namespaced_deployment(name, namespace).status


def ready_pods(core: k8s.CoreV1Api, namespace: str, app: str) -> list[Any]:
    pods: list[Any] = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        pod
        for pod in pods
        if pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def test_a_deployment_gets_its_pods_running_and_ready_on_the_fake_node(
    cluster: Cluster, api: k8s.ApiClient, namespace: str
) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("web", 3))

    pods = cluster.wait_until(
        lambda: ready if len(ready := ready_pods(core, namespace, "web")) == 3 else None,
        timeout=60,
        what="3 Running and Ready pods",
    )
    assert {pod.spec.node_name for pod in pods} == {cluster.node_name}
    cluster.wait_until(
        lambda: deployment_status(apps, namespace, "web").ready_replicas == 3,
        timeout=30,
        what="the Deployment's readyReplicas at 3",
    )


def job(name: str, command: list[str], container: dict[str, Any] | None = None, **pod_spec: Any) -> k8s.V1Job:
    main = {"name": "main", "image": IMAGE, "command": command, **(container or {})}
    manifest = {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [main],
                    **pod_spec,
                }
            },
        },
    }
    return k8s.V1Job.model_validate(manifest)


def job_status(batch: k8s.BatchV1Api, namespace: str, name: str) -> Any:
    return batch.read_namespaced_job(name, namespace).status


def job_finished(batch: k8s.BatchV1Api, namespace: str, name: str) -> str | None:
    """The Job's Complete or Failed condition, once it has one."""
    for condition in job_status(batch, namespace, name).conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def job_pod(core: k8s.CoreV1Api, namespace: str, name: str) -> Any:
    pods: list[Any] = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
    (pod,) = pods
    return pod


def test_the_job_runner_runs_job_pods_in_the_image_for_real(
    cluster: Cluster, api: k8s.ApiClient, namespace: str
) -> None:
    batch, core = k8s.BatchV1Api(api), k8s.CoreV1Api(api)
    # The chart's security settings: uid 10001, a read-only root filesystem, a writable emptyDir at /tmp.
    version = job(
        "version",
        ["streamproc", "--version"],
        container={
            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        },
        securityContext={"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    batch.create_namespaced_job(namespace, version)
    # A failing one, with what the runner gives a container: a ConfigMap volume, a Secret key in env.
    files = {"metadata": {"name": "files"}, "data": {"greeting": "hello-file"}}
    core.create_namespaced_config_map(namespace, k8s.V1ConfigMap.model_validate(files))
    creds = {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret-value"}}
    core.create_namespaced_secret(namespace, k8s.V1Secret.model_validate(creds))
    failing = job(
        "failing",
        ["sh", "-c", 'cat /etc/files/greeting; echo; echo "token=$TOKEN plain=$PLAIN"; exit 3'],
        container={
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "PLAIN", "value": "literal"},
            ],
            "volumeMounts": [{"name": "files", "mountPath": "/etc/files", "readOnly": True}],
        },
        volumes=[{"name": "files", "configMap": {"name": "files"}}],
    )
    batch.create_namespaced_job(namespace, failing)

    finished = cluster.wait_until(lambda: job_finished(batch, namespace, "version"), timeout=90, what="Job version")
    assert finished == "Complete"
    assert job_status(batch, namespace, "version").succeeded == 1
    pod = job_pod(core, namespace, "version")
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert cluster.pod_log(namespace, pod.metadata.name).split()[-1] == streamproc.__version__

    finished = cluster.wait_until(lambda: job_finished(batch, namespace, "failing"), timeout=90, what="Job failing")
    assert finished == "Failed"
    assert job_status(batch, namespace, "failing").failed == 1
    pod = job_pod(core, namespace, "failing")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    output = cluster.pod_log(namespace, pod.metadata.name).split()
    assert output == ["hello-file", "token=s3cret-value", "plain=literal"]
    assert cluster.job_runner is not None and cluster.job_runner.errors == []


def scaled_object(name: str, target: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": target},
            "pollingInterval": 1,
            "minReplicaCount": 1,
            "maxReplicaCount": 10,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 10, "periodSeconds": 1}],
                        }
                    }
                }
            },
            "triggers": [trigger],
        },
    }


async def topic_with_records(settings: KafkaSettings, topic: str, partitions: int, records: int) -> None:
    async with admin.admin_client(settings) as client:
        await admin.create_topics(client, [NewTopic(topic, partitions, 1)])
    async with AIOKafkaProducer(**settings.client_kwargs(), acks="all") as producer:
        for i in range(records):
            await producer.send(topic, b"%d" % i, partition=i % partitions)
        await producer.flush()


def test_keda_scales_a_deployment_on_kafka_lag_through_the_external_metrics_api(
    cluster: Cluster, api: k8s.ApiClient, namespace: str, kafka_settings: KafkaSettings, prefix: str
) -> None:
    topic, records, threshold = f"{prefix}.keda", 250, 100
    asyncio.run(topic_with_records(kafka_settings, topic, partitions=4, records=records))
    apps, custom = k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    apps.create_namespaced_deployment(namespace, deployment("worker", 1))
    trigger = {
        "type": "kafka",
        "metadata": {
            "bootstrapServers": kafka_settings.bootstrap_servers,
            "consumerGroup": f"{prefix}.never-committed",
            "topic": topic,
            "lagThreshold": str(threshold),
            "offsetResetPolicy": "earliest",
        },
    }
    custom.create_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", scaled_object("worker", "worker", trigger)
    )

    autoscaling = k8s.AutoscalingV2Api(api)
    hpa: Any = cluster.wait_until(
        lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("keda-hpa-worker", namespace),
        timeout=60,
        what="KEDA's HPA keda-hpa-worker",
    )
    assert hpa.spec.scale_target_ref.name == "worker"
    (spec,) = hpa.spec.metrics
    assert spec.type == "External" and spec.external.target.average_value == str(threshold)
    metric = spec.external.metric.name

    expected = math.ceil(records / threshold)
    cluster.wait_until(
        lambda: apps.read_namespaced_deployment("worker", namespace).spec.replicas == expected,
        timeout=90,
        what=f"the Deployment scaled to {expected} replicas",
    )
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("keda-hpa-worker", namespace)
    assert hpa.status.desired_replicas == expected
    # GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<metric>?labelSelector=…, the path of a
    # custom object list: through the aggregator to KEDA's adapter, and on to the operator over gRPC.
    metrics: Any = custom.list_namespaced_custom_object(
        "external.metrics.k8s.io", "v1beta1", namespace, metric, label_selector="scaledobject.keda.sh/name=worker"
    )
    (item,) = metrics["items"]
    assert item["metricName"] == metric
    assert item["value"] == str(records)


def test_the_admission_webhook_rejects_a_second_scaled_object_for_the_same_deployment(
    cluster: Cluster, api: k8s.ApiClient, namespace: str
) -> None:
    k8s.AppsV1Api(api).create_namespaced_deployment(namespace, deployment("worker", 1))
    schedule = {"timezone": "UTC", "start": "0 6 * * *", "end": "0 7 * * *", "desiredReplicas": "2"}
    trigger = {"type": "cron", "metadata": schedule}
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", scaled_object("first", "worker", trigger)
    )

    def rejection() -> str | None:
        """A dry run of the second one, until the webhook's cache has the first (it lists from it)."""
        try:
            custom.create_namespaced_custom_object(
                "keda.sh",
                "v1alpha1",
                namespace,
                "scaledobjects",
                scaled_object("second", "worker", trigger),
                dry_run="All",
            )
        except ApiException as error:
            message = str(json.loads(error.body or "{}").get("message", error.body))
            if "denied the request" in message:
                return message
            raise
        return None

    message = cluster.wait_until(rejection, timeout=30, what="the webhook rejecting the second ScaledObject")
    assert message.startswith('admission webhook "vscaledobject.kb.io" denied the request')
    # KEDA names the other ScaledObject, or its HPA once the operator made it (keda-hpa-first): both, the
    # webhook's refusal of a second ScaledObject for the Deployment.
    conflict = "the workload 'worker' of type 'apps/v1.Deployment' is already managed by the"
    owners = ("ScaledObject 'first'", "hpa 'keda-hpa-first'")
    assert conflict in message and message.endswith(owners), message
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(
            "keda.sh", "v1alpha1", namespace, "scaledobjects", scaled_object("second", "worker", trigger)
        )
    assert rejected.value.status == 403
    refusal = json.loads(rejected.value.body or "{}")["message"]
    assert refusal.startswith('admission webhook "vscaledobject.kb.io" denied the request') and conflict in refusal
    existing: Any = custom.list_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects")
    assert [so["metadata"]["name"] for so in existing["items"]] == ["first"]
