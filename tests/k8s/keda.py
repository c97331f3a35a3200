"""KEDA as host processes: its certificate directory, the command lines of its operator, metrics
adapter and admission webhooks, and the objects that point the apiserver at them.

KEDA's own manifests assume pods behind Services; here the aggregation layer reaches the adapter
through an ExternalName Service (kube-aggregator resolves it to `<externalName>:<APIService port>`),
and the apiserver calls the webhooks by URL.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client as k8s

from tests.k8s.components import ROOT
from tests.k8s.pki import Pki

KEDA_BIN = ROOT / ".tools" / "keda" / "bin"
KEDA_NAMESPACE = "keda"
KEDA_METRICS_SERVICE = "keda-metrics-apiserver"
EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"
_NO_PATCHING = ["--enable-cert-rotation=false", "--enable-webhook-patching=false", "--enable-apiservice-patching=false"]


def issue_certs(
    pki: Pki, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], ca_cert: Path, directory: Path
) -> Path:
    """KEDA's certificate directory, as its Secret kedaorg-certs would give it: ca.crt, tls.crt, tls.key;
    one certificate for the operator's gRPC server, the adapter and the webhooks (server and client:
    the gRPC link between the adapter and the operator is mutual TLS)."""
    pki.issue(
        "keda",
        ca,
        "keda",
        dns=[
            "localhost",
            f"{KEDA_METRICS_SERVICE}.{KEDA_NAMESPACE}.svc",  # the aggregator checks this name (handler_proxy.go)
            f"keda-admission-webhooks.{KEDA_NAMESPACE}.svc",
            f"keda-operator.{KEDA_NAMESPACE}.svc",
        ],
        ips=["127.0.0.1"],
        server=True,
        client=True,
        directory=directory,
        file_names=("tls.crt", "tls.key"),
    )
    shutil.copy(ca_cert, directory / "ca.crt")
    return directory


def environment(kubeconfig: Path) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": KEDA_NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
    }


def operator_argv(binary: str, kubeconfig: Path, ports: dict[str, int], certs: Path) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--metrics-bind-address=127.0.0.1:{ports['keda-operator-metrics']}",
        f"--health-probe-bind-address=127.0.0.1:{ports['keda-operator-probe']}",
        f"--metrics-service-bind-address=127.0.0.1:{ports['keda-grpc']}",
        f"--cert-dir={certs}",
        f"--ca-dir={certs}",
        *_NO_PATCHING,
        "--zap-log-level=info",
    ]


def adapter_argv(binary: str, kubeconfig: Path, ports: dict[str, int], certs: Path, front_proxy_ca: Path) -> list[str]:
    return [
        binary,
        f"--secure-port={ports['keda-adapter']}",
        "--bind-address=127.0.0.1",
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs / 'tls.crt'}",
        f"--tls-private-key-file={certs / 'tls.key'}",
        f"--client-ca-file={certs / 'ca.crt'}",
        # The front proxy's CA from the file, not from kube-system/extension-apiserver-authentication:
        # no window at start-up where the aggregator's requests are refused (401) before it is read.
        f"--requestheader-client-ca-file={front_proxy_ca}",
        "--requestheader-allowed-names=front-proxy-client",
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--metrics-service-address=127.0.0.1:{ports['keda-grpc']}",
        f"--port={ports['keda-adapter-metrics']}",
        "--zap-log-level=info",
    ]


def webhooks_argv(binary: str, kubeconfig: Path, ports: dict[str, int], certs: Path) -> list[str]:
    return [
        binary,
        f"--kubeconfig={kubeconfig}",
        f"--port={ports['keda-webhooks']}",
        f"--cert-dir={certs}",
        f"--metrics-bind-address=127.0.0.1:{ports['keda-webhooks-metrics']}",
        f"--health-probe-bind-address=127.0.0.1:{ports['keda-webhooks-probe']}",
        "--zap-log-level=info",
    ]


def register(api_client: k8s.ApiClient, keda_dir: Path, ca: Path, ports: dict[str, int]) -> None:
    """The objects KEDA's own manifests make for its Services, pointed at the host processes: an
    ExternalName Service and the external-metrics APIService for the adapter, and KEDA's
    ValidatingWebhookConfiguration with URLs for the webhooks. Both carry our CA."""
    ca_bundle = base64.b64encode(ca.read_bytes()).decode()
    core = k8s.CoreV1Api(api_client)
    service = {
        "metadata": {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE},
        # kube-aggregator routes an APIService to an ExternalName Service at <externalName>:<APIService
        # port> (k8s.io/apiserver/pkg/util/proxy ResolveCluster), and checks no endpoints for it.
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    }
    core.create_namespaced_service(KEDA_NAMESPACE, k8s.V1Service.model_validate(service))
    apiservice = yaml.safe_load((keda_dir / "config" / "metrics-server" / "api_service.yaml").read_text())
    spec = apiservice["spec"]
    spec.pop("insecureSkipTLSVerify", None)
    spec["service"] = {"name": KEDA_METRICS_SERVICE, "namespace": KEDA_NAMESPACE, "port": ports["keda-adapter"]}
    spec["caBundle"] = ca_bundle
    k8s.ApiregistrationV1Api(api_client).create_api_service(k8s.V1APIService.model_validate(apiservice))

    webhooks = yaml.safe_load((keda_dir / "config" / "webhooks" / "validation_webhooks.yaml").read_text())
    for webhook in webhooks["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {"url": f"https://127.0.0.1:{ports['keda-webhooks']}{path}", "caBundle": ca_bundle}
    k8s.AdmissionregistrationV1Api(api_client).create_validating_webhook_configuration(
        k8s.V1ValidatingWebhookConfiguration.model_validate(webhooks)
    )
