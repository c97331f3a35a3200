"""Render the Helm chart with the repo's pinned helm and read what it made.

helm is built by `make helm` (`go install`, pinned in the Makefile) into .tools/bin; a missing
binary fails the chart tests with that hint rather than skipping them. STREAMPROC_HELM names
another helm binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from streamproc.topology import Topology, load_topology

REPO = Path(__file__).parents[2]
CHART = REPO / "helm" / "streamproc"
HELM = Path(os.environ.get("STREAMPROC_HELM", REPO / ".tools" / "bin" / "helm"))
KUBE_VERSION = "1.34.0"  # what helm renders for (.Capabilities) and kubernetes-validate checks against
RELEASE = "sp"
NAMESPACE = "jobs"
FULLNAME = f"{RELEASE}-streamproc"
COMPONENT = "app.kubernetes.io/component"  # worker, web, topics-apply

Obj = dict[str, Any]

SASL = {"kafka": {"sasl": {"enabled": True, "mechanism": "SCRAM-SHA-512", "secretName": "kafka-credentials"}}}
SASL_TLS = {
    "kafka": {
        "sasl": {"enabled": True, "mechanism": "SCRAM-SHA-256", "secretName": "kafka-credentials"},
        "tls": {"enabled": True, "caSecretName": "kafka-ca"},
    }
}
TLS_SYSTEM_CAS = {"kafka": {"tls": {"enabled": True}}}
# The live monitor on, with the token from a Secret (actions allowed).
WEB = {"web": {"enabled": True, "token": {"existingSecret": "streamproc-web"}}}


# The combinations every offline and server-side check covers: autoscaling modes, Kafka security.
MODES = ["keda", "hpa", "none"]
SECURITY: dict[str, Obj] = {"plaintext": {}, "sasl": SASL, "sasl+tls": SASL_TLS, "tls-system-cas": TLS_SYSTEM_CAS}


def merged(*layers: Obj) -> Obj:
    """Values layers merged key by key, as helm merges `-f` files over the defaults."""
    result: Obj = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def helm(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm (with `env` over the environment); fail (never skip) with the way to build it
    when it is missing."""
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"helm is missing at {HELM}: run `make helm` (builds the pinned version with go install)")
    return subprocess.run(
        [str(HELM), *args],
        capture_output=True,
        text=True,
        env=os.environ | dict(env or {}),
        timeout=timeout_s,
        check=False,
    )


@contextmanager
def values_file(values: Obj) -> Iterator[str]:
    """`values` in a temporary file for `helm -f`, removed afterwards."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        json.dump(values, file)  # JSON is YAML, and keeps None as null
        file.flush()
        yield file.name


def try_render(values: Obj | None = None, *extra: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    """`helm template` of `chart` with `values` layered over the defaults."""
    with values_file(values or {}) as path:
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
        return helm(*args, "-f", path, *extra)


def lint(values: Obj) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` of the chart with `values` layered over the defaults."""
    with values_file(values) as path:
        return helm(
            "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", path
        )


def render(values: Obj | None = None) -> list[Obj]:
    """Every object the chart renders for `values`; a failed render fails the test with helm's message."""
    result = try_render(values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Obj], kind: str) -> Obj:
    """The single object of `kind`."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def of_component(objects: list[Obj], kind: str, component: str) -> Obj:
    """The single object of `kind` labelled app.kubernetes.io/component: `component` (worker, web)."""
    found = [o for o in by_kind(objects, kind) if o["metadata"]["labels"].get(COMPONENT) == component]
    assert len(found) == 1, f"expected one {kind} of component {component}, got {len(found)}"
    return found[0]


def worker_container(objects: list[Obj]) -> Obj:
    container: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def topics_configmap(objects: list[Obj]) -> Obj:
    found = [obj for obj in by_kind(objects, "ConfigMap") if obj["metadata"]["name"] == f"{FULLNAME}-topics"]
    assert len(found) == 1
    return found[0]


def topology_of(configmap: Obj) -> Topology:
    """The topics file a ConfigMap holds, read by the library exactly as a worker would read it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "topics.yaml"
        path.write_text(configmap["data"]["topics.yaml"])
        return load_topology(path)


def _exprs(objects: list[Obj]) -> Iterator[str]:
    """Every PromQL expression of the PrometheusRule alerts and the dashboard panels."""
    for rule_object in by_kind(objects, "PrometheusRule"):
        for group in rule_object["spec"]["groups"]:
            for rule in group["rules"]:
                yield rule["expr"]
    for configmap in by_kind(objects, "ConfigMap"):
        for key, text in configmap.get("data", {}).items():
            if key.endswith(".json"):
                for panel in json.loads(text)["panels"]:
                    for target in panel["targets"]:
                        # Grafana's interval variable is not PromQL; any duration parses the same.
                        yield re.sub(r"\$__rate_interval|\$__range|\$__interval", "5m", target["expr"])


def selectors(objects: list[Obj]) -> list[promql_parser.VectorSelector]:
    """Every vector selector of every expression; an expression that does not parse fails."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    for expr in _exprs(objects):
        try:
            parsed = promql_parser.parse(expr)
        except ValueError as exc:
            raise AssertionError(f"not valid PromQL ({exc}): {expr}") from None
        promql_parser.walk(parsed, visit)
    return found


def streamproc_metric_names(objects: list[Obj]) -> set[str]:
    """The streamproc_* series names the alerts and the dashboard query (e.g. ..._bucket, ..._total)."""
    return {s.name for s in selectors(objects) if s.name and s.name.startswith("streamproc_")}
