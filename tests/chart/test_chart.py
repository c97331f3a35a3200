"""The Helm chart (SPEC section 8): lint, valid objects in every mode, and what the objects must say."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import yaml

from streamproc.lag import PartitionLag, keda_replicas
from streamproc.topology import Topology, load_topology
from tests.chart.rendering import (
    CHART,
    FULLNAME,
    MODES,
    REPO,
    SASL,
    SASL_TLS,
    SECURITY,
    TLS_SYSTEM_CAS,
    WEB,
    Obj,
    by_kind,
    lint,
    merged,
    of_component,
    one,
    render,
    selectors,
    streamproc_metric_names,
    topics_configmap,
    topology_of,
    try_render,
    worker_container,
)
from tests.chart.validation import validate

# Not the defaults: four priorities, another prefix, a managed route with more partitions than the
# intake topics and a producer-owned route (no partitions), to show the triggers follow the data.
CUSTOM_TOPICS: Obj = {
    "topics": {
        "prefix": "jobs",
        "priorities": ["critical", "high", "normal", "low"],
        "intake": {"partitions": 8},
        "routes": [
            {"topic": "orders.created", "task": "process_order", "priority": "normal", "partitions": 24},
            {"topic": "billing.events", "task": "bill", "priority": "low"},
        ],
    }
}


def mode(name: str) -> Obj:
    return {"autoscaling": {"mode": name}}


def triggers(topology: Topology) -> dict[str, int]:
    """KEDA's triggers as the library defines them (`streamproc lag`): intake topics and routes."""
    return {spec.name: spec.partitions for spec in topology.topics() if spec.role in ("intake", "route")}


def env_of(container: Obj) -> dict[str, Obj]:
    return {entry["name"]: entry for entry in container["env"]}


def flags_of(container: Obj) -> dict[str, str]:
    """The worker's `--flag value` pairs."""
    assert container["command"] == ["streamproc"]
    args: list[str] = container["args"]
    assert args[0] == "worker", args
    return dict(zip(args[1::2], args[2::2], strict=True))


# lint and validity


@pytest.mark.parametrize("web", [False, True], ids=["", "web"])
@pytest.mark.parametrize("security", ["plaintext", "sasl+tls"])
def test_helm_lint_strict_is_clean(security: str, web: bool) -> None:
    result = lint(merged(SECURITY[security], WEB if web else {}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("web", [False, True], ids=["", "web"])
@pytest.mark.parametrize("security", list(SECURITY))
@pytest.mark.parametrize("autoscaling", MODES)
def test_every_rendered_object_is_valid(autoscaling: str, security: str, web: bool) -> None:
    objects = render(merged(mode(autoscaling), SECURITY[security], WEB if web else {}))
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount", "PodDisruptionBudget", "Job"} <= kinds
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    assert ("ScaledObject" in kinds) == (autoscaling == "keda")
    assert ("HorizontalPodAutoscaler" in kinds) == (autoscaling == "hpa")
    assert len(by_kind(objects, "Deployment")) == len(by_kind(objects, "Service")) == (2 if web else 1)
    for obj in objects:
        validate(obj)


def render_notes(values: Obj, tmp_path: Path) -> str:
    """`helm template` skips NOTES.txt (and lint ignores its errors), so render it through a probe template."""
    chart = tmp_path / "streamproc"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-probe.yaml").write_text(
        'notes: |\n  {{- include "streamproc/templates/NOTES.txt" . | nindent 2 }}\n'
    )
    result = try_render(values, "--show-only", "templates/notes-probe.yaml", chart=chart)
    assert result.returncode == 0, result.stderr
    notes: str = yaml.safe_load(result.stdout)["notes"]
    return notes


@pytest.mark.parametrize("autoscaling", MODES)
def test_notes_render_in_every_mode(autoscaling: str, tmp_path: Path) -> None:
    notes = render_notes(mode(autoscaling), tmp_path)
    assert f"Scaling ({autoscaling})" in notes and "streamproc lag --group streamproc" in notes, notes
    assert "streamproc web" not in notes  # web.enabled is off by default


def test_a_custom_topics_file_renders_valid_objects() -> None:
    for obj in render(merged(CUSTOM_TOPICS, SASL_TLS)):
        validate(obj)


def test_the_values_schema_rejects_a_typo_and_a_bad_mode() -> None:
    typo = try_render({"worker": {"concurency": 8}})
    assert typo.returncode != 0
    assert "concurency" in typo.stderr and "not allowed" in typo.stderr, typo.stderr
    nested_typo = try_render({"autoscaling": {"lagTreshold": 5}})
    assert nested_typo.returncode != 0 and "lagTreshold" in nested_typo.stderr, nested_typo.stderr
    bad_mode = try_render(mode("kedaa"))
    assert bad_mode.returncode != 0
    assert "/autoscaling/mode" in bad_mode.stderr, bad_mode.stderr
    no_secret = try_render({"kafka": {"sasl": {"enabled": True}}})
    assert no_secret.returncode != 0 and "secretName" in no_secret.stderr, no_secret.stderr


# topics: one source for the ConfigMap, the Job and the triggers


def test_the_default_topics_configmap_is_the_repos_topics_file() -> None:
    objects = render()
    assert topology_of(topics_configmap(objects)) == load_topology(REPO / "topics" / "topics.yaml")
    hook = [obj for obj in by_kind(objects, "ConfigMap") if obj["metadata"]["name"] == f"{FULLNAME}-topics-apply"]
    assert len(hook) == 1
    assert hook[0]["data"] == topics_configmap(objects)["data"]


@pytest.mark.parametrize("values", [{}, CUSTOM_TOPICS], ids=["default topics", "custom topics"])
def test_scaledobject_triggers_are_the_intake_topics_and_routes_of_the_topics_file(values: Obj) -> None:
    values = merged(values, {"worker": {"group": "billing-workers"}})
    objects = render(values)
    topology = topology_of(topics_configmap(objects))
    scaled = one(objects, "ScaledObject")
    metadata = [trigger["metadata"] for trigger in scaled["spec"]["triggers"]]
    assert all(trigger["type"] == "kafka" for trigger in scaled["spec"]["triggers"])
    assert [m["topic"] for m in metadata] == list(triggers(topology))
    assert {m["consumerGroup"] for m in metadata} == {"billing-workers"}
    assert {m["offsetResetPolicy"] for m in metadata} == {"earliest"}  # a new group starts at earliest
    assert {m["bootstrapServers"] for m in metadata} == {"kafka:9092"}
    assert {(m["lagThreshold"], m["activationLagThreshold"]) for m in metadata} == {("100", "0")}
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert {"minReplicaCount", "maxReplicaCount"} <= scaled["spec"].keys()
    # KEDA 2.21 uses them only to scale from and to zero, and its webhook warns of them otherwise.
    assert not {"pollingInterval", "cooldownPeriod"} & scaled["spec"].keys()
    to_zero = one(render(merged(values, {"autoscaling": {"minReplicas": 0}})), "ScaledObject")["spec"]
    assert (to_zero["minReplicaCount"], to_zero["pollingInterval"], to_zero["cooldownPeriod"]) == (0, 15, 300)
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]


def test_hpa_scales_on_the_lag_of_the_same_topics() -> None:
    objects = render(merged(CUSTOM_TOPICS, mode("hpa"), {"autoscaling": {"lagThreshold": 250}}))
    topology = topology_of(topics_configmap(objects))
    hpa = one(objects, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    external = metric["external"]
    assert external["metric"]["name"] == "streamproc_consumer_lag"
    assert external["metric"]["selector"]["matchLabels"] == {"group": "streamproc"}
    (topics,) = external["metric"]["selector"]["matchExpressions"]
    assert (topics["key"], topics["operator"]) == ("topic", "In")
    assert topics["values"] == list(triggers(topology))
    assert external["target"] == {"type": "AverageValue", "averageValue": "250"}
    assert hpa["spec"]["maxReplicas"] == max(triggers(topology).values())
    assert "replicas" not in one(objects, "Deployment")["spec"]  # the HPA owns it


def test_mode_none_runs_fixed_replicas_without_autoscaler() -> None:
    objects = render(merged(mode("none"), {"worker": {"replicas": 3}}))
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert not by_kind(objects, "ScaledObject") and not by_kind(objects, "HorizontalPodAutoscaler")
    assert not by_kind(objects, "TriggerAuthentication")


# replicas: never above what KEDA could use


@pytest.mark.parametrize("values", [{}, CUSTOM_TOPICS], ids=["default topics", "custom topics"])
def test_max_replicas_defaults_to_the_largest_trigger_partition_count(values: Obj) -> None:
    objects = render(values)
    topology = topology_of(topics_configmap(objects))
    # With every trigger topic far behind, each KEDA trigger asks for its partition count and the
    # HPA takes the largest: that is the most replicas KEDA would ever use.
    far_behind = [
        keda_replicas([PartitionLag(topic, p, 0, 10**9, 0) for p in range(partitions)], 100)
        for topic, partitions in triggers(topology).items()
        if partitions
    ]
    assert one(objects, "ScaledObject")["spec"]["maxReplicaCount"] == max(far_behind)
    assert max(far_behind) == max(triggers(topology).values())


def test_max_replicas_clamps_kedas_integer_division_quirk() -> None:
    """KEDA caps a trigger's lag only when totalLag // lagThreshold > partitions, so a lag just above
    partitions * lagThreshold passes uncapped and asks for partitions + 1 replicas; maxReplicas holds it."""
    objects = render({"autoscaling": {"lagThreshold": 10}})
    partitions = load_topology(REPO / "topics" / "topics.yaml").intake.partitions
    lag = partitions * 10 + 5  # 125 on 12 partitions: 125 // 10 == 12, not > 12
    wanted = keda_replicas([PartitionLag("tasks.high", 0, 0, lag, 0), *_idle(partitions - 1)], 10)
    assert wanted == math.ceil(lag / 10) == partitions + 1
    assert one(objects, "ScaledObject")["spec"]["maxReplicaCount"] == partitions


def _idle(count: int) -> list[PartitionLag]:
    return [PartitionLag("tasks.high", p + 1, 0, 0, 0) for p in range(count)]


def test_max_replicas_above_the_largest_partition_count_fails_clearly() -> None:
    for autoscaling in ("keda", "hpa"):
        result = try_render(merged(mode(autoscaling), {"autoscaling": {"maxReplicas": 13}}))
        assert result.returncode != 0
        assert "autoscaling.maxReplicas (13) is above 12, the largest partition count" in result.stderr, result.stderr
    allowed = render({"autoscaling": {"maxReplicas": 5, "minReplicas": 0}})
    spec = one(allowed, "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 5)
    custom = render(merged(CUSTOM_TOPICS, {"autoscaling": {"maxReplicas": 24}}))  # the 24-partition route
    assert one(custom, "ScaledObject")["spec"]["maxReplicaCount"] == 24
    inverted = try_render({"autoscaling": {"maxReplicas": 2, "minReplicas": 3}})
    assert inverted.returncode != 0 and "minReplicas (3) is above" in inverted.stderr


# authentication


@pytest.mark.parametrize("security", list(SECURITY))
def test_trigger_authentication_exists_exactly_when_keda_needs_secrets(security: str) -> None:
    values = SECURITY[security]
    objects = render(values)
    kafka = values.get("kafka", {})
    sasl, ca = kafka.get("sasl", {}).get("enabled", False), kafka.get("tls", {}).get("caSecretName")
    auths = by_kind(objects, "TriggerAuthentication")
    metadata = [t["metadata"] for t in one(objects, "ScaledObject")["spec"]["triggers"]]
    refs = [t.get("authenticationRef") for t in one(objects, "ScaledObject")["spec"]["triggers"]]
    if not (sasl or ca):  # plaintext, or TLS on the system CAs: nothing secret to hand KEDA
        assert auths == [] and refs == [None] * len(refs)
    else:
        (auth,) = auths
        assert refs == [{"name": auth["metadata"]["name"]}] * len(refs)
        params = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
        expected: dict[str, tuple[str, str]] = {}
        if sasl:
            expected |= {"username": ("kafka-credentials", "username"), "password": ("kafka-credentials", "password")}
        if ca:
            expected |= {"ca": ("kafka-ca", "ca.crt")}
        assert params == expected
    keda_sasl = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256"}
    for m in metadata:
        assert m.get("sasl") == (keda_sasl[kafka["sasl"]["mechanism"]] if sasl else None)
        assert m.get("tls") == ("enable" if kafka.get("tls", {}).get("enabled") else None)


def test_workers_and_topics_job_read_sasl_and_the_ca_from_secrets() -> None:
    objects = render(SASL_TLS)
    job = one(objects, "Job")
    for pod in (one(objects, "Deployment")["spec"]["template"]["spec"], job["spec"]["template"]["spec"]):
        container = pod["containers"][0]
        env = env_of(container)
        assert env["STREAMPROC_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["STREAMPROC_SASL_MECHANISM"]["value"] == "SCRAM-SHA-256"
        for var, key in (("STREAMPROC_SASL_USERNAME", "username"), ("STREAMPROC_SASL_PASSWORD", "password")):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "kafka-credentials", "key": key}
            assert "value" not in env[var]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-ca"
        assert env["STREAMPROC_SSL_CAFILE"]["value"] == f"{mounts['kafka-ca']}/ca.crt"
    assert env_of(worker_container(render(SASL)))["STREAMPROC_SECURITY_PROTOCOL"]["value"] == "SASL_PLAINTEXT"
    assert env_of(worker_container(render(TLS_SYSTEM_CAS)))["STREAMPROC_SECURITY_PROTOCOL"]["value"] == "SSL"
    assert "STREAMPROC_SSL_CAFILE" not in env_of(worker_container(render(TLS_SYSTEM_CAS)))


# the worker pod


@pytest.mark.parametrize("shutdown_timeout", [30, 7.5, 120])
def test_termination_grace_period_is_above_the_shutdown_timeout(shutdown_timeout: float) -> None:
    objects = render({"worker": {"shutdownTimeout": shutdown_timeout}})
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert isinstance(pod["terminationGracePeriodSeconds"], int)
    assert pod["terminationGracePeriodSeconds"] > shutdown_timeout
    assert float(flags_of(pod["containers"][0])["--shutdown-timeout"]) == shutdown_timeout


def test_probes_point_at_healthz_and_readyz_on_the_metrics_port() -> None:
    container = worker_container(render({"worker": {"metricsPort": 9500}}))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 9500}
    assert flags_of(container)["--metrics-port"] == "9500"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 9500


def test_worker_runs_the_app_with_its_flags_and_the_mounted_topics_file() -> None:
    objects = render({"worker": {"app": "myapp.tasks:app", "concurrency": 16, "group": "g1"}})
    container = worker_container(objects)
    flags = flags_of(container)
    assert (flags["--app"], flags["--concurrency"], flags["--shutdown-timeout"]) == ("myapp.tasks:app", "16", "30")
    env = env_of(container)
    assert env["STREAMPROC_GROUP"]["value"] == "g1"
    assert env["STREAMPROC_BOOTSTRAP_SERVERS"]["value"] == "kafka:9092"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert env["STREAMPROC_TOPICS_FILE"]["value"] == f"{mounts['topics']}/topics.yaml"
    assert volumes["topics"]["configMap"]["name"] == topics_configmap(objects)["metadata"]["name"]
    assert "topics.yaml" in topics_configmap(objects)["data"]


def test_reserved_slots_are_the_workers_default_unless_set() -> None:
    assert "--reserved-slots" not in flags_of(worker_container(render()))
    assert flags_of(worker_container(render({"worker": {"reservedSlots": 0}})))["--reserved-slots"] == "0"


def test_worker_is_non_root_with_a_read_only_root_and_no_capabilities() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_topics_job_is_a_pre_install_and_pre_upgrade_hook_running_topics_apply() -> None:
    objects = render()
    job = one(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["backoffLimit"] == 3
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] + container["args"] == ["streamproc", "topics", "apply"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env_of(container)["STREAMPROC_TOPICS_FILE"]["value"] == f"{mounts['topics']}/topics.yaml"
    (hook_configmap,) = [v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "topics"]
    (hook,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == hook_configmap]
    # A pre-install hook runs before the release's objects exist: its ConfigMap is a hook too, created first.
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    worker_selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not worker_selector.items() <= job_labels.items()  # the Service and PDB never pick the Job's pod
    assert not by_kind(render({"topicsJob": {"enabled": False}}), "Job")


def test_service_monitor_scrapes_the_metrics_port_of_the_workers_service() -> None:
    objects = render()
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert service["spec"]["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_monitoring_objects_can_be_turned_off() -> None:
    off = {"metrics": {name: {"enabled": False} for name in ("serviceMonitor", "prometheusRule", "dashboard")}}
    objects = render(off)
    assert not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "PrometheusRule")
    assert not [o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]


# the live monitor (web.enabled)


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector picks an object with `labels`."""
    return selector.items() <= labels.items()


def test_web_is_off_by_default() -> None:
    objects = render()
    assert not [o for o in objects if o["metadata"]["labels"].get("app.kubernetes.io/component") == "web"]


def test_web_runs_streamproc_web_with_the_workers_image_kafka_settings_and_volumes() -> None:
    objects = render(merged(SASL_TLS, WEB, {"image": {"repository": "registry.example.com/sp", "tag": "1.2"}}))
    worker, web = of_component(objects, "Deployment", "worker"), of_component(objects, "Deployment", "web")
    assert web["metadata"]["name"] == f"{FULLNAME}-web"
    assert web["spec"]["replicas"] == 1  # one view, not scaled
    worker_pod, pod = worker["spec"]["template"]["spec"], web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    worker_main = worker_pod["containers"][0]
    assert container["image"] == worker_main["image"] == "registry.example.com/sp:1.2"
    assert container["imagePullPolicy"] == worker_main["imagePullPolicy"]
    # The worker's convention (command streamproc, the subcommand in args) works whether or not the
    # image's ENTRYPOINT is streamproc: command replaces it.
    assert container["command"] == worker_main["command"] == ["streamproc"]
    args: list[str] = container["args"]
    assert args[0] == "web", args
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert (flags["--host"], flags["--port"]) == ("0.0.0.0", "8080")
    # Kafka, SASL, TLS, topics file and group exactly as the workers get them, plus the token.
    env, worker_env = env_of(container), env_of(worker_main)
    own = {"STREAMPROC_WEB_TOKEN", "STREAMPROC_LAG_THRESHOLD"}
    assert {k: v for k, v in env.items() if k not in own} == worker_env
    assert env["STREAMPROC_LAG_THRESHOLD"]["value"] == "100"  # autoscaling.lagThreshold: the replicas it shows
    assert env["STREAMPROC_WEB_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "streamproc-web", "key": "token"}
    assert "value" not in env["STREAMPROC_WEB_TOKEN"]
    # The workers' volumes and mounts (topics ConfigMap, CA Secret, /tmp), plus a writable data dir for --db.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {k: v for k, v in volumes.items() if k != "data"} == {v["name"]: v for v in worker_pod["volumes"]}
    assert [m for m in container["volumeMounts"] if m["name"] != "data"] == worker_main["volumeMounts"]
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert mounts["data"]["mountPath"] == "/var/lib/streamproc/web" and not mounts["data"].get("readOnly")
    assert flags["--db"] == "/var/lib/streamproc/web/status.sqlite"
    checksums = [d["spec"]["template"]["metadata"]["annotations"]["checksum/topics"] for d in (web, worker)]
    assert checksums[0] == checksums[1]  # a changed topics file restarts the UI too


def test_web_without_a_token_secret_is_read_only_and_the_chart_makes_no_secret() -> None:
    objects = render({"web": {"enabled": True}})
    container = of_component(objects, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert "STREAMPROC_WEB_TOKEN" not in env_of(container)
    assert not by_kind(objects, "Secret")
    assert not by_kind(render(WEB), "Secret")  # the token Secret is referenced, never created
    custom = render({"web": {"enabled": True, "token": {"existingSecret": "ops-ui", "key": "web-token"}}})
    container = of_component(custom, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["STREAMPROC_WEB_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "ops-ui",
        "key": "web-token",
    }


def test_web_probes_and_service_use_the_http_port() -> None:
    objects = render(merged(WEB, {"web": {"port": 9080, "service": {"port": 80}}}))
    container = of_component(objects, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 9080}
    assert container["args"][container["args"].index("--port") + 1] == "9080"
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/api/health"
        assert ports.get(get["port"], get["port"]) == 9080
        assert container[probe]["periodSeconds"] >= 1
    service = of_component(objects, "Service", "web")
    assert service["metadata"]["name"] == f"{FULLNAME}-web"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    web_pod_labels = of_component(objects, "Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    assert labels_match(service["spec"]["selector"], web_pod_labels)


def test_web_pod_has_the_workers_security_context_resources_and_scheduling() -> None:
    scheduling: Obj = {
        "nodeSelector": {"pool": "ops"},
        "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]
                }
            }
        },
    }
    objects = render(merged(WEB, {"web": scheduling}))
    worker_pod = of_component(objects, "Deployment", "worker")["spec"]["template"]["spec"]
    pod = of_component(objects, "Deployment", "web")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"] == worker_pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"] == worker_pod["containers"][0]["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    for key, value in scheduling.items():
        assert pod[key] == value
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize("autoscaling", MODES)
def test_no_worker_selector_picks_the_web_pod(autoscaling: str) -> None:
    """The worker Service, PDB, ServiceMonitor and Deployment (so KEDA and the HPA) select only workers."""
    objects = render(merged(mode(autoscaling), WEB))
    worker, web = of_component(objects, "Deployment", "worker"), of_component(objects, "Deployment", "web")
    web_pod = web["spec"]["template"]["metadata"]["labels"]
    worker_pod = worker["spec"]["template"]["metadata"]["labels"]
    worker_selectors = {
        "Deployment": worker["spec"]["selector"]["matchLabels"],
        "Service": of_component(objects, "Service", "worker")["spec"]["selector"],
        "PodDisruptionBudget": one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in worker_selectors.items():
        assert labels_match(selector, worker_pod), kind
        assert not labels_match(selector, web_pod), f"the workers' {kind} selects the web pod"
    assert not labels_match(web["spec"]["selector"]["matchLabels"], worker_pod)
    # The ServiceMonitor selects Services: the workers' metrics Service, never the UI's.
    monitor = one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert labels_match(monitor, of_component(objects, "Service", "worker")["metadata"]["labels"])
    assert not labels_match(monitor, of_component(objects, "Service", "web")["metadata"]["labels"])
    # The autoscalers scale the workers' Deployment by name.
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        for scaler in by_kind(objects, kind):
            assert scaler["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"] != web["metadata"]["name"]


def test_web_name_fits_and_differs_from_the_workers_for_the_longest_full_name() -> None:
    objects = render(merged(WEB, {"fullnameOverride": "x" * 63}))
    worker, web = of_component(objects, "Deployment", "worker"), of_component(objects, "Deployment", "web")
    assert len(web["metadata"]["name"]) <= 63 and web["metadata"]["name"].endswith("-web")
    assert web["metadata"]["name"] != worker["metadata"]["name"]
    assert of_component(objects, "Service", "web")["metadata"]["name"] == web["metadata"]["name"]
    for obj in objects:
        validate(obj)


def test_the_values_schema_checks_the_web_block() -> None:
    typo = try_render({"web": {"enabled": True, "tokn": {}}})
    assert typo.returncode != 0 and "tokn" in typo.stderr, typo.stderr
    bad_type = try_render({"web": {"enabled": True, "service": {"type": "Ingress"}}})
    assert bad_type.returncode != 0 and "/web/service/type" in bad_type.stderr, bad_type.stderr
    no_key = try_render({"web": {"enabled": True, "token": {"existingSecret": "s", "key": ""}}})
    assert no_key.returncode != 0 and "/web/token/key" in no_key.stderr, no_key.stderr
    replicas = try_render({"web": {"enabled": True, "replicas": 2}})  # one view: not a value
    assert replicas.returncode != 0 and "replicas" in replicas.stderr, replicas.stderr


def test_notes_say_how_to_reach_the_ui(tmp_path: Path) -> None:
    notes = render_notes(WEB, tmp_path / "token")
    assert f"kubectl port-forward -n jobs svc/{FULLNAME}-web 8080:8080" in notes, notes
    assert "Secret streamproc-web" in notes and "Read-only" not in notes, notes
    assert f"STREAMPROC_WEB_URL=http://{FULLNAME}-web.jobs.svc:8080" in notes, notes
    read_only = render_notes({"web": {"enabled": True}}, tmp_path / "read-only")
    assert "Read-only: set web.token.existingSecret" in read_only, read_only


# alerts and dashboard


def test_alerts_cover_the_key_figures_with_thresholds_from_values() -> None:
    values = {
        "metrics": {
            "prometheusRule": {
                "alerts": {
                    "backlog": {"threshold": 2500},
                    "waitP95": {"threshold": 7},
                    "failureRate": {"threshold": 0.2},
                }
            }
        }
    }
    rule = one(render(values), "PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(rules) == {
        "StreamprocBacklog",
        "StreamprocHighFailureRate",
        "StreamprocSlowStart",
        "StreamprocLowThroughput",
        "StreamprocDeadLetters",
        "StreamprocNoReadyWorker",
    }
    for alert in rules.values():
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert alert["labels"]["severity"] in ("warning", "critical")
    assert rules["StreamprocBacklog"]["expr"].endswith("> 2500") and rules["StreamprocBacklog"]["for"] == "5m"
    assert "histogram_quantile(0.95" in rules["StreamprocSlowStart"]["expr"]
    assert rules["StreamprocSlowStart"]["expr"].endswith("> 7")
    assert rules["StreamprocHighFailureRate"]["expr"].endswith("> 0.2")
    assert "< 10" in rules["StreamprocLowThroughput"]["expr"]
    assert "increase(streamproc_tasks_dead_lettered_total" in rules["StreamprocDeadLetters"]["expr"]
    assert "kube_deployment_status_replicas_available" in rules["StreamprocNoReadyWorker"]["expr"]


def test_every_query_parses_and_selects_this_releases_workers() -> None:
    objects = render(CUSTOM_TOPICS)
    found = [s for s in selectors(objects) if s.name and s.name.startswith("streamproc_")]
    assert found
    for selector in found:
        matchers = {(m.name, m.value) for m in selector.matchers.matchers}
        assert {("namespace", "jobs"), ("job", FULLNAME)} <= matchers, str(selector)
    lag_topics = {
        m.value for s in found if s.name == "streamproc_consumer_lag" for m in s.matchers.matchers if m.name == "topic"
    }
    # The backlog and throughput alerts watch exactly the trigger topics (tiers wait on purpose).
    topology = topology_of(topics_configmap(objects))
    assert lag_topics == {"|".join(name.replace(".", "\\.") for name in triggers(topology))}


def test_dashboard_is_a_labelled_configmap_with_the_required_panels() -> None:
    objects = render()
    (dashboard,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    names = streamproc_metric_names([dashboard])
    assert {
        "streamproc_tasks_started_total",
        "streamproc_consumer_lag",
        "streamproc_task_wait_seconds_bucket",
        "streamproc_task_duration_seconds_bucket",
        "streamproc_tasks_succeeded_total",
        "streamproc_tasks_failed_total",
        "streamproc_tasks_dead_lettered_total",
    } <= names


def test_the_validators_reject_unknown_and_mistyped_fields() -> None:
    """The validity checks above are not vacuous: a typo in a core or a custom object fails them."""
    objects = render(SASL_TLS)
    broken: list[Obj] = []
    for kind, path, key, value in (
        ("Deployment", ("spec", "template", "spec"), "terminationGracePeriod", 45),
        ("Service", ("spec",), "ports", "9400"),
        ("ScaledObject", ("spec",), "pollingInterva", 15),
        ("ScaledObject", ("spec",), "maxReplicaCount", "12"),
        ("TriggerAuthentication", ("spec",), "secretTargetRefs", []),
        ("ServiceMonitor", ("spec",), "endpoint", []),
        ("PrometheusRule", ("spec",), "group", []),
    ):
        obj = copy.deepcopy(one(objects, kind))
        target = obj
        for part in path:
            target = target[part]
        target[key] = value
        broken.append(obj)
    for obj in broken:
        with pytest.raises(AssertionError):
            validate(obj)
