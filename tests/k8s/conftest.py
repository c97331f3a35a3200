"""The `cluster` fixture: a real Kubernetes control plane with kwok and KEDA on loopback (cluster.py),
one for the session, stopped at the end whatever happened.

Its binaries come from `make k8s-tools`; a missing one fails the tests with that hint, never skips
them (the tests here are marked kafka, and a skipped kafka test fails the run).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from streamproc.settings import KafkaSettings
from tests.k8s.cluster import Cluster, ClusterError, start_cluster
from tests.k8s.release import Release, restricted_namespace


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        started = start_cluster(tmp_path_factory.mktemp("k8s"))
    except ClusterError as error:
        failure = f"the test cluster did not start: {error}"
    else:
        failure = ""
    if failure:  # outside the except block: pytest shows the message once, not with the exception chain
        pytest.fail(failure, pytrace=False)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[k8s.ApiClient]:
    """A client of the cluster as its admin, closed after the test."""
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(api: k8s.ApiClient) -> Iterator[str]:
    """A namespace of the test's own, deleted after it (in the background: nothing waits for it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(api)
    core.create_namespace(k8s.V1Namespace.model_validate({"metadata": {"name": name}}))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def release(cluster: Cluster, api: k8s.ApiClient, kafka_settings: KafkaSettings, prefix: str) -> Iterator[Release]:
    """A release of the chart of its own, in a namespace of its own enforcing Pod Security `restricted`
    (the session's cluster outlives the test), on the session broker under the test's topic prefix."""
    name = f"r{uuid.uuid4().hex[:6]}"
    namespace = restricted_namespace(api, f"ns-{name}")
    yield Release(cluster, name, namespace, prefix, kafka_settings.bootstrap_servers)
    k8s.CoreV1Api(api).delete_namespace(namespace)
