"""The Kubernetes side of the test cluster: its certificates and the command lines of etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok, and kwok's one fake node.

cluster.py starts these in order and waits for each; the flags of each process read here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.k8s.components import ROOT
from tests.k8s.pki import CertPair, Pki

K8S_BIN = ROOT / ".tools" / "k8s" / "bin"
SERVICE_CIDR = "10.0.0.0/24"
FIRST_SERVICE_IP = "10.0.0.1"
NODE_NAME = "kwok-node-0"
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


@dataclass(frozen=True)
class ControlPlaneCerts:
    ca: CertPair
    ca_signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]  # signs KEDA's certificate too
    front_proxy_ca: CertPair
    front_proxy_client: CertPair
    apiserver: CertPair
    admin: CertPair  # system:masters
    service_account_key: Path
    service_account_pub: Path


def issue_certs(pki: Pki) -> ControlPlaneCerts:
    ca_pair, ca_key, ca_cert = pki.ca("ca", "streamproc-test-ca")
    ca = (ca_key, ca_cert)
    front_proxy_pair, fp_key, fp_cert = pki.ca("front-proxy-ca", "streamproc-test-front-proxy-ca")
    apiserver = pki.issue(
        "apiserver",
        ca,
        "kube-apiserver",
        dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ips=["127.0.0.1", FIRST_SERVICE_IP],
        server=True,
    )
    admin = pki.issue("admin", ca, "admin", organization="system:masters", client=True)
    front_proxy_client = pki.issue("front-proxy-client", (fp_key, fp_cert), "front-proxy-client", client=True)
    sa_key, sa_pub = pki.key_pair("sa")
    return ControlPlaneCerts(ca_pair, ca, front_proxy_pair, front_proxy_client, apiserver, admin, sa_key, sa_pub)


def etcd_argv(binary: str, workdir: Path, ports: dict[str, int]) -> list[str]:
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        binary,
        "--name=test",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=test={peer_url}",
        "--unsafe-no-fsync",  # a test cluster: its data dies with it
        "--log-level=warn",
    ]


def apiserver_argv(binary: str, ports: dict[str, int], certs: ControlPlaneCerts) -> list[str]:
    return [
        binary,
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={certs.apiserver.cert}",
        f"--tls-private-key-file={certs.apiserver.key}",
        f"--client-ca-file={certs.ca.cert}",
        f"--service-account-key-file={certs.service_account_pub}",
        f"--service-account-signing-key-file={certs.service_account_key}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        # The aggregation layer (KEDA's metrics adapter): the front proxy's CA and client certificate.
        f"--requestheader-client-ca-file={certs.front_proxy_ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={certs.front_proxy_client.cert}",
        f"--proxy-client-key-file={certs.front_proxy_client.key}",
        "--profiling=false",
    ]


def _common(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
    ]


def controller_manager_argv(
    binary: str, kubeconfig: Path, ports: dict[str, int], certs: ControlPlaneCerts
) -> list[str]:
    return [
        binary,
        *_common(kubeconfig),
        f"--secure-port={ports['controller-manager']}",
        f"--service-account-private-key-file={certs.service_account_key}",
        f"--root-ca-file={certs.ca.cert}",
        f"--cluster-signing-cert-file={certs.ca.cert}",
        f"--cluster-signing-key-file={certs.ca.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--horizontal-pod-autoscaler-sync-period=1s",
        "--concurrent-horizontal-pod-autoscaler-syncs=5",
        "--controllers=*",
    ]


def scheduler_argv(binary: str, kubeconfig: Path, ports: dict[str, int]) -> list[str]:
    return [binary, *_common(kubeconfig), f"--secure-port={ports['scheduler']}"]


def kwok_stages(kwok_dir: Path) -> str:
    """kwok's own fast stages, except that pods owned by a Job are neither made Ready nor completed:
    `JobRunner` runs those. Nodes: kwok's node-initialize (Ready); pods: pod-ready (minus Job pods) and
    pod-delete; no pod-complete."""
    stages = kwok_dir / "kustomize" / "stage"
    node = yaml.safe_load((stages / "node" / "fast" / "node-initialize.yaml").read_text())
    ready = yaml.safe_load((stages / "pod" / "fast" / "pod-ready.yaml").read_text())
    delete = yaml.safe_load((stages / "pod" / "fast" / "pod-delete.yaml").read_text())
    ready["spec"]["selector"]["matchExpressions"].append(
        {"key": ".metadata.ownerReferences.[].kind", "operator": "NotIn", "values": ["Job"]}
    )
    return yaml.safe_dump_all([node, ready, delete])


def kwok_argv(binary: str, kubeconfig: Path, stages: Path) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--config={stages}",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
        "--node-ip=127.0.0.1",
        "--cidr=10.244.0.0/16",
        "--node-lease-duration-seconds=40",
    ]


def fake_node() -> dict[str, Any]:
    """The Node that kwok manages (by its annotation)."""
    return {
        "metadata": {
            "name": NODE_NAME,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        }
    }
