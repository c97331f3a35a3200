"""The Job runner: a stand-in for a kubelet that really runs the pods of Jobs, with podman.

The test cluster has no kubelet (kwok fakes one node); Jobs such as the chart's hooks must still run.
It needs only an API client factory, a work dir and the node's name, not the cluster itself.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client import ApiException

from tests.helpers import podman_as_make_image_runs_it
from tests.k8s.components import log_tail


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owned_by_job(pod: Any) -> bool:
    return any(ref.kind == "Job" for ref in pod.metadata.owner_references or [])


class JobRunner:
    """A stand-in for a kubelet, for the pods of Jobs only, on the fake node.

    kwok makes every other pod Running and Ready without running it; a pod owned by a Job, once
    scheduled to the node, is run here for real: `podman run --rm --network host` of its one
    container's image, command, args and env (literal values, and Secret and ConfigMap keys read from
    the API), with its ConfigMap and Secret volumes written to temporary directories and mounted
    read-only (emptyDirs writable), as the pod's runAsUser/runAsGroup, with a read-only root filesystem
    if asked. The pod's status says Running while the container runs, then Succeeded or Failed with the
    exit code, so the Job controller completes or fails the Job; a pod deleted meanwhile has its
    container removed. Images must exist locally (`make image`: no pulls). No probes, restarts, init
    containers, resources, `$(VAR)` expansion, or other volume kinds (projected ones are skipped).
    """

    def __init__(
        self, api_client: Callable[[], k8s.ApiClient], workdir: Path, node_name: str, interval_s: float = 0.2
    ) -> None:
        self.api_client = api_client  # a new client of the apiserver for each thread
        self.node_name = node_name
        self.interval_s = interval_s
        self.dir = workdir / "jobs"
        self.dir.mkdir(exist_ok=True)
        self._stopping = threading.Event()
        self._seen: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._containers: dict[str, str] = {}  # pod uid -> name of its running container
        self._lock = threading.Lock()
        self._loop = threading.Thread(target=self._watch, name="job-runner", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            containers = list(self._containers.values())
        for name in containers:
            _podman("rm", "--force", "--time=1", name)
        self._loop.join(10)
        for thread in self._threads:
            thread.join(15)

    def log_path(self, namespace: str, pod: str) -> Path:
        return self.dir / f"{namespace}_{pod}.log"

    def _watch(self) -> None:
        with self.api_client() as api_client:
            core = k8s.CoreV1Api(api_client)
            while not self._stopping.is_set():
                try:
                    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node_name}")
                except Exception as error:  # the apiserver stopping under us, at the end
                    if not self._stopping.is_set():
                        self.errors.append(f"listing pods: {error}")
                    self._stopping.wait(1)
                    continue
                items: list[Any] = pods.items
                self._remove_containers_of_deleted_pods(items)
                for pod in items:
                    uid = pod.metadata.uid
                    if (
                        uid in self._seen
                        or not _owned_by_job(pod)
                        or pod.metadata.deletion_timestamp
                        or pod.status.phase != "Pending"
                    ):
                        continue
                    self._seen.add(uid)
                    thread = threading.Thread(target=self._run_pod, args=(pod,), name=f"pod-{pod.metadata.name}")
                    self._threads.append(thread)
                    thread.start()
                self._stopping.wait(self.interval_s)

    def _remove_containers_of_deleted_pods(self, pods: list[Any]) -> None:
        alive = {pod.metadata.uid for pod in pods if not pod.metadata.deletion_timestamp}
        with self._lock:
            gone = [name for uid, name in self._containers.items() if uid not in alive]
        for name in gone:
            _podman("rm", "--force", "--time=1", name)

    def _run_pod(self, pod: Any) -> None:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        with self.api_client() as api_client:
            core = k8s.CoreV1Api(api_client)
            try:
                self._run(core, pod)
            except Exception as error:
                self.errors.append(f"{namespace}/{name}: {error!r}")
                with contextlib.suppress(Exception):
                    container = pod.spec.containers[0]
                    self._set_status(core, pod, container, exit_code=128, message=f"job runner: {error!r}")

    def _run(self, core: k8s.CoreV1Api, pod: Any) -> None:
        namespace, name = pod.metadata.namespace, pod.metadata.name
        spec = pod.spec
        if len(spec.containers) != 1 or spec.init_containers:
            raise ValueError("the job runner runs pods of exactly one container and no init containers")
        container = spec.containers[0]
        volumes_dir = Path(tempfile.mkdtemp(prefix=f"{namespace}_{name}_", dir=self.dir))
        volumes_dir.chmod(0o755)
        sources = {volume.name: volume for volume in spec.volumes or []}
        mounts: list[str] = []
        for mount in container.volume_mounts or []:
            volume = sources[mount.name]
            host = volumes_dir / mount.name
            if volume.config_map is not None:
                data = _config_map_data(core, namespace, volume.config_map.name, volume.config_map.optional)
                _materialize(host, data, volume.config_map.items)
            elif volume.secret is not None:
                data = _secret_data(core, namespace, volume.secret.secret_name, volume.secret.optional)
                _materialize(host, data, volume.secret.items)
            elif volume.empty_dir is not None:
                host.mkdir()
                host.chmod(0o1777)
                mounts += ["--volume", f"{host}:{mount.mount_path}"]
                continue
            else:
                continue  # projected (the service account token), hostPath, …: not run here
            mounts += ["--volume", f"{host}:{mount.mount_path}:ro"]

        env: list[str] = []
        for var in container.env or []:
            env += ["--env", f"{var.name}={_env_value(core, pod, var)}"]

        user = _user(spec.security_context, container.security_context)
        container_name = f"k8s-{namespace}-{name}-{pod.metadata.uid[:8]}"
        argv = ["run", "--rm", "--pull=never", "--network", "host", "--name", container_name, *env, *mounts]
        if user:
            argv += ["--user", user]
        if container.security_context is not None and container.security_context.read_only_root_filesystem:
            argv.append("--read-only")
        if container.working_dir:
            argv += ["--workdir", container.working_dir]
        if container.command:
            argv += ["--entrypoint", json.dumps(container.command)]
        argv.append(container.image)
        argv += container.args or []

        self._set_status(core, pod, container, exit_code=None)
        with self._lock:
            self._containers[pod.metadata.uid] = container_name
        log_path = self.log_path(namespace, name)
        try:
            with log_path.open("wb") as log:
                podman, podman_env = podman_as_make_image_runs_it()
                result = subprocess.run(
                    [podman, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=podman_env
                )
        finally:
            with self._lock:
                self._containers.pop(pod.metadata.uid, None)
        shutil.rmtree(volumes_dir, ignore_errors=True)
        if self._stopping.is_set():
            return
        try:
            self._set_status(core, pod, container, exit_code=result.returncode, message=log_tail(log_path, 20))
        except ApiException as error:
            if error.status != 404:  # a pod deleted while it ran has no status to write
                raise

    def _set_status(
        self, core: k8s.CoreV1Api, pod: Any, container: Any, *, exit_code: int | None, message: str = ""
    ) -> None:
        now = _now()
        if exit_code is None:
            phase, ready = "Running", "True"
            state: dict[str, Any] = {"running": {"startedAt": now}}
        else:
            phase, ready = ("Succeeded" if exit_code == 0 else "Failed"), "False"
            reason = "Completed" if exit_code == 0 else "Error"
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "message": message[-4000:],
                    "startedAt": now,
                    "finishedAt": now,
                }
            }
        conditions = [
            {"type": kind, "status": status, "lastTransitionTime": now}
            for kind, status in (("Initialized", "True"), ("Ready", ready), ("ContainersReady", ready))
        ]
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": exit_code is None,
                    "started": exit_code is None,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        if exit_code is None:
            status["startTime"] = now
        core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})


def _podman(*args: str) -> None:
    with contextlib.suppress(Exception):
        podman, env = podman_as_make_image_runs_it()
        subprocess.run([podman, *args], env=env, capture_output=True, timeout=30, check=False)


def _config_map_data(core: k8s.CoreV1Api, namespace: str, name: str, optional: bool | None) -> dict[str, bytes]:
    try:
        config_map = core.read_namespaced_config_map(name, namespace)
    except ApiException as error:
        if error.status == 404 and optional:
            return {}
        raise
    data = {key: value.encode() for key, value in (config_map.data or {}).items()}
    data |= {key: base64.b64decode(value) for key, value in (config_map.binary_data or {}).items()}
    return data


def _secret_data(core: k8s.CoreV1Api, namespace: str, name: str, optional: bool | None) -> dict[str, bytes]:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404 and optional:
            return {}
        raise
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def _materialize(directory: Path, data: dict[str, bytes], items: Any) -> None:
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    chosen = [(item.key, item.path) for item in items] if items else [(key, key) for key in data]
    for key, relative in chosen:
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        target.chmod(0o644)


def _env_value(core: k8s.CoreV1Api, pod: Any, var: Any) -> str:
    if var.value_from is None:
        return str(var.value or "")
    source = var.value_from
    namespace = pod.metadata.namespace
    if source.secret_key_ref is not None:
        ref = source.secret_key_ref
        return _secret_data(core, namespace, ref.name, ref.optional).get(ref.key, b"").decode()
    if source.config_map_key_ref is not None:
        ref = source.config_map_key_ref
        return _config_map_data(core, namespace, ref.name, ref.optional).get(ref.key, b"").decode()
    if source.field_ref is not None:
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": namespace,
            "spec.nodeName": pod.spec.node_name,
            "status.podIP": "127.0.0.1",
        }
        return str(fields.get(source.field_ref.field_path, ""))
    raise ValueError(f"env {var.name}: the job runner reads value, secretKeyRef, configMapKeyRef and fieldRef only")


def _user(pod_context: Any, container_context: Any) -> str | None:
    def pick(attribute: str) -> int | None:
        for context in (container_context, pod_context):
            value = getattr(context, attribute, None) if context is not None else None
            if value is not None:
                return int(value)
        return None

    user, group = pick("run_as_user"), pick("run_as_group")
    if user is None:
        return None
    return f"{user}:{group}" if group is not None else str(user)
