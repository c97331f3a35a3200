"""A real Kubernetes control plane with KEDA, on loopback, for the tests of tests/k8s.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by `make k8s-tools` from the
Go module proxy) run as host processes on 127.0.0.1, with a PKI of their own (pki.py). There is no
kubelet: kwok plays one fake node on which the pods of Deployments become Running and Ready without
running anything, and `JobRunner` (job_runner.py) runs the pods of Jobs for real with podman. KEDA's
operator, metrics adapter and admission webhooks run as host processes too (keda.py). This module
starts them all in order, registers what they need, and waits until each answers.

Nothing here imports pytest: `start_cluster` raises `ClusterError` (with the tails of the logs of
the components that died or did not become ready) and tests/k8s/conftest.py turns it into a failure.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import ApiException

from tests.k8s import control_plane, keda
from tests.k8s.components import ROOT, ClusterError, Component, binary, free_ports, go_module_dir
from tests.k8s.job_runner import JobRunner
from tests.k8s.pki import CertPair, Pki

__all__ = ["Cluster", "ClusterError", "start_cluster"]

CHART_CRDS = ROOT / "tests" / "chart" / "crds"  # the Prometheus-operator CRDs the chart uses
PORT_NAMES = [
    "etcd",
    "etcd-peer",
    "apiserver",
    "controller-manager",
    "scheduler",
    "keda-grpc",
    "keda-operator-metrics",
    "keda-operator-probe",
    "keda-adapter",
    "keda-adapter-metrics",
    "keda-webhooks",
    "keda-webhooks-metrics",
    "keda-webhooks-probe",
]

T = TypeVar("T")


@dataclass
class Cluster:
    """A running control plane with kwok, KEDA and the Job runner; `stop()` ends all of it."""

    workdir: Path
    kubeconfig: Path
    node_name: str = control_plane.NODE_NAME
    components: list[Component] = field(default_factory=list)
    job_runner: JobRunner | None = None

    def api_client(self) -> k8s.ApiClient:
        """A new client of the apiserver as cluster admin (system:masters), from `kubeconfig`."""
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(str(self.kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
        return k8s.ApiClient(configuration)

    def wait_until(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 60,
        interval: float = 0.2,
        what: str = "the condition",
    ) -> T:
        """Call `predicate` until it returns something truthy, and return that; an `ApiException` counts
        as "not yet". Past `timeout` seconds, or if a component died, raise `ClusterError` naming `what`,
        the last value or error, and the log tails of the components."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                value = predicate()
            except ApiException as error:
                value, last = None, f"{error.status} {error.reason}: {error.body}"
            else:
                if value:
                    return value
                last = value
            dead = [c for c in self.components if c.exited() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(c.name for c in dead)} died" if dead else f"{timeout:g}s passed"
                raise ClusterError(f"waiting for {what}: {why}; last: {last!r}\n{self.diagnostics(dead)}")
            time.sleep(interval)

    def diagnostics(self, components: Sequence[Component] = (), lines: int = 40) -> str:
        """The log tails of `components` (all of them when empty)."""
        chosen = list(components) or self.components
        return "\n".join(c.describe(lines) for c in chosen)

    def pod_log(self, namespace: str, pod: str) -> str:
        """What a Job pod's container wrote (stdout and stderr), as `JobRunner` kept it."""
        assert self.job_runner is not None
        return self.job_runner.log_path(namespace, pod).read_text(errors="replace")

    def stop(self) -> None:
        """Stop the Job runner and every process this cluster started (SIGTERM to all, newest first, then
        wait for each, SIGKILL after a grace period), and remove the work dir."""
        if self.job_runner is not None:
            self.job_runner.stop()
        for component in reversed(self.components):
            component.terminate()
        for component in reversed(self.components):
            component.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(base_dir: Path | None = None) -> Cluster:
    """Start the whole cluster and return it once every part answers; on any failure, stop what was
    started and raise `ClusterError`."""
    k8s_names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    keda_names = ("keda-operator", "keda-adapter", "keda-webhooks", "kwok")
    binaries = {name: binary(control_plane.K8S_BIN, name) for name in k8s_names}
    binaries |= {name: binary(keda.KEDA_BIN, name) for name in keda_names}
    keda_dir = go_module_dir("github.com/kedacore/keda/v2")
    kwok_dir = go_module_dir("sigs.k8s.io/kwok")

    workdir = Path(tempfile.mkdtemp(prefix="k8s-", dir=base_dir))
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    pki = Pki(workdir / "pki")
    certs = control_plane.issue_certs(pki)
    keda_certs = keda.issue_certs(pki, certs.ca_signer, certs.ca.cert, workdir / "keda-certs")
    kubeconfig = workdir / "kubeconfig"
    _kubeconfig(kubeconfig, f"https://127.0.0.1:{ports['apiserver']}", certs.ca.cert, certs.admin)
    cluster = Cluster(workdir=workdir, kubeconfig=kubeconfig)
    loopback = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        component = Component(name, argv, workdir / f"{name}.log", loopback | (env or {}))
        cluster.components.append(component)
        component.start()

    try:
        start("etcd", control_plane.etcd_argv(binaries["etcd"], workdir, ports))
        start("kube-apiserver", control_plane.apiserver_argv(binaries["kube-apiserver"], ports, certs))
        context = ssl.create_default_context(cafile=str(certs.ca.cert))
        context.load_cert_chain(str(certs.admin.cert), str(certs.admin.key))
        cluster.wait_until(
            lambda: _probe(ports["apiserver"], "/readyz", context), timeout=60, what="kube-apiserver /readyz"
        )
        start(
            "kube-controller-manager",
            control_plane.controller_manager_argv(binaries["kube-controller-manager"], kubeconfig, ports, certs),
        )
        start("kube-scheduler", control_plane.scheduler_argv(binaries["kube-scheduler"], kubeconfig, ports))
        stages = workdir / "kwok-stages.yaml"
        stages.write_text(control_plane.kwok_stages(kwok_dir))
        kwok_env = {"HOME": str(workdir)}  # kwok also reads ~/.kwok/kwok.yaml: none here
        start("kwok", control_plane.kwok_argv(binaries["kwok"], kubeconfig, stages), kwok_env)

        with cluster.api_client() as api_client:
            core = k8s.CoreV1Api(api_client)
            core.create_namespace(k8s.V1Namespace.model_validate({"metadata": {"name": keda.KEDA_NAMESPACE}}))
            extensions = k8s.ApiextensionsV1Api(api_client)
            crds = _crds(keda_dir)
            for crd in crds:
                extensions.create_custom_resource_definition(k8s.V1CustomResourceDefinition.model_validate(crd))
            crd_names = [crd["metadata"]["name"] for crd in crds]
            core.create_node(k8s.V1Node.model_validate(control_plane.fake_node()))
            cluster.wait_until(lambda: _established(extensions, crd_names), timeout=30, what="the CRDs established")

            keda_env = keda.environment(kubeconfig)
            start(
                "keda-operator", keda.operator_argv(binaries["keda-operator"], kubeconfig, ports, keda_certs), keda_env
            )
            adapter = keda.adapter_argv(
                binaries["keda-adapter"], kubeconfig, ports, keda_certs, certs.front_proxy_ca.cert
            )
            start("keda-adapter", adapter, keda_env)
            start(
                "keda-webhooks", keda.webhooks_argv(binaries["keda-webhooks"], kubeconfig, ports, keda_certs), keda_env
            )
            keda.register(api_client, keda_dir, certs.ca.cert, ports)

            node = control_plane.NODE_NAME
            cluster.wait_until(lambda: _node_ready(core, node), timeout=30, what=f"node {node} Ready")
            cluster.wait_until(
                lambda: core.read_namespaced_service_account("default", "default"),
                timeout=30,
                what="the default ServiceAccount (kube-controller-manager)",
            )
            plain = ssl.create_default_context(cafile=str(certs.ca.cert))
            plain.check_hostname = False  # the controller-manager and scheduler serve self-signed certificates
            plain.verify_mode = ssl.CERT_NONE
            for name in ("controller-manager", "scheduler"):
                cluster.wait_until(
                    lambda name=name: _probe(ports[name], "/healthz", plain),  # type: ignore[misc]
                    timeout=30,
                    what=f"kube-{name} /healthz",
                )
            keda_context = ssl.create_default_context(cafile=str(certs.ca.cert))
            cluster.wait_until(
                lambda: _webhook_answers(ports["keda-webhooks"], keda_context),
                timeout=60,
                what="KEDA's admission webhooks answering",
            )
            registration = k8s.ApiregistrationV1Api(api_client)
            cluster.wait_until(
                lambda: _apiservice_available(registration),
                timeout=60,
                what=f"APIService {keda.EXTERNAL_METRICS_APISERVICE} Available",
            )
        cluster.job_runner = JobRunner(cluster.api_client, workdir, cluster.node_name)
        cluster.job_runner.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _kubeconfig(path: Path, server: str, ca: Path, admin: CertPair) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                "users": [
                    {"name": "admin", "user": {"client-certificate": str(admin.cert), "client-key": str(admin.key)}}
                ],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                "current-context": "test",
            }
        )
    )


def _crds(keda_dir: Path) -> list[dict[str, Any]]:
    """All of KEDA's CRDs (from its module) and the Prometheus-operator ones the chart uses."""
    files = sorted((keda_dir / "config" / "crd" / "bases").glob("*.yaml"))
    files += sorted(CHART_CRDS.glob("monitoring.coreos.com_*.yaml"))
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def _established(api: k8s.ApiextensionsV1Api, names: Sequence[str]) -> bool:
    for name in names:
        crd = api.read_custom_resource_definition(name)
        conditions = (crd.status.conditions if crd.status else None) or []
        if not any(c.type == "Established" and c.status == "True" for c in conditions):
            return False
    return True


def _apiservice_available(api: k8s.ApiregistrationV1Api) -> bool:
    service = api.read_api_service(keda.EXTERNAL_METRICS_APISERVICE)
    conditions = (service.status.conditions if service.status else None) or []
    return any(c.type == "Available" and c.status == "True" for c in conditions)


def _node_ready(api: k8s.CoreV1Api, name: str) -> bool:
    node = api.read_node(name)
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _https_get(port: int, path: str, context: ssl.SSLContext, host: str = "127.0.0.1") -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _probe(port: int, path: str, context: ssl.SSLContext) -> bool:
    try:
        status, _ = _https_get(port, path, context)
    except OSError:
        return False
    return status == 200


def _webhook_answers(port: int, context: ssl.SSLContext) -> bool:
    """The webhook server answers over TLS with our CA's certificate for 127.0.0.1 (any HTTP status:
    a GET without an AdmissionReview is not a review)."""
    try:
        _https_get(port, "/validate-keda-sh-v1alpha1-scaledobject", context)
    except OSError:
        return False
    return True
