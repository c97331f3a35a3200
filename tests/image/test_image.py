"""The container images `make image` builds (Dockerfile, tools/image/): the command in them, and a
worker container that runs tasks from the session broker and exits 0 on SIGTERM.

podman runs as `make image` runs it, with the project's containers.conf (.tools/image/: runc and
explicit ulimits). No podman, or no image, fails the tests rather than skipping them: `make test`
builds the images first, so a skip would hide a broken build.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import streamproc
from handlers.app import GenerateReport, generate_report
from streamproc import Producer, provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import podman_as_make_image_runs_it

pytestmark = pytest.mark.kafka  # the worker test needs the session broker; a skip fails the run

ROOT = Path(__file__).parents[2]
WORKER_IMAGE = f"localhost/streamproc:{streamproc.__version__}"  # `make image`: --target worker


def chart_default_image() -> str:
    """The image the Helm chart deploys by default: image.repository and image.tag, else appVersion."""
    image = yaml.safe_load((ROOT / "helm" / "streamproc" / "values.yaml").read_text())["image"]
    chart = yaml.safe_load((ROOT / "helm" / "streamproc" / "Chart.yaml").read_text())
    return f"{image['repository']}:{image['tag'] or chart['appVersion']}"


def chart_default_app() -> str:
    return str(yaml.safe_load((ROOT / "helm" / "streamproc" / "values.yaml").read_text())["worker"]["app"])


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command, env = podman_as_make_image_runs_it()
    return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    """The worker image and the chart's default image, both built by `make image`."""
    example = chart_default_image()
    for image in (WORKER_IMAGE, example):
        assert podman("image", "exists", image).returncode == 0, f"no image {image}: run `make image` first"
    return WORKER_IMAGE, example


def test_the_chart_deploys_the_example_image_of_this_version(images: tuple[str, str]) -> None:
    chart = yaml.safe_load((ROOT / "helm" / "streamproc" / "Chart.yaml").read_text())
    assert chart["appVersion"] == streamproc.__version__
    assert images[1] == f"localhost/streamproc-example:{streamproc.__version__}"  # `make image`: --target example


def test_the_worker_image_runs_streamproc_as_uid_10001_with_the_cli_and_web_extras_only(
    images: tuple[str, str],
) -> None:
    worker, _ = images
    version = podman("run", "--rm", worker, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"streamproc {streamproc.__version__}"), version.stderr
    web = podman("run", "--rm", "--env", "COLUMNS=200", worker, "web", "--help")
    assert web.returncode == 0 and "Usage: streamproc web" in web.stdout, web.stdout + web.stderr

    probe = (
        "import importlib.metadata as m, json, os; "
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(), 'app': os.listdir('.'), "
        "'dists': sorted(d.metadata['Name'].lower() for d in m.distributions())}))"
    )
    run = podman("run", "--rm", "--entrypoint", "python3", worker, "-c", probe)
    assert run.returncode == 0, run.stderr
    inside = json.loads(run.stdout)
    assert (inside["uid"], inside["gid"], inside["cwd"], inside["app"]) == (10001, 10001, "/app", [])
    assert {"streamproc", "typer", "rich", "fastapi", "uvicorn"} <= set(inside["dists"])
    assert not {"pytest", "mypy", "ruff", "hypothesis", "mkdocs", "faststream"} & set(inside["dists"])


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"streamproc-test-{uuid.uuid4().hex[:10]}"
    yield name
    podman("rm", "--force", "--time", "0", name)


def test_a_worker_container_runs_tasks_from_the_broker_and_exits_0_on_sigterm(
    images: tuple[str, str], kafka_settings: KafkaSettings, topology: Topology, tmp_path: Path, container_name: str
) -> None:
    """The chart's default image and app, on the host's network, with the chart's security context:
    read-only root, non-root, no capabilities."""
    _, example = images
    asyncio.run(provisioning.apply(kafka_settings, topology))
    config = tmp_path / "config"
    config.mkdir(mode=0o755)
    config.chmod(0o755)  # readable by the container's uid 10001
    (config / "topics.yaml").write_text(yaml.safe_dump(topology.model_dump()))
    (config / "topics.yaml").chmod(0o644)
    started = podman(
        "run",
        "--detach",
        "--name",
        container_name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{config}:/config:ro",
        "--env",
        f"STREAMPROC_BOOTSTRAP_SERVERS={kafka_settings.bootstrap_servers}",
        example,
        "worker",
        "--app",
        chart_default_app(),
        "--group",
        f"{topology.prefix}-g",
        "--file",
        "/config/topics.yaml",
        "--metrics-port",
        "0",  # a free port: the container shares the host's network
    )
    assert started.returncode == 0, started.stderr

    reports = [GenerateReport(report_id=f"r-{i}", kind="daily", rows=100 * (i + 1)) for i in range(20)]

    async def submit_and_await() -> list[str]:
        async with Producer(kafka_settings, topology) as producer:
            handles = [await producer.submit(generate_report, report.model_dump()) for report in reports]
            return list(await asyncio.gather(*(handle.result(timeout=90) for handle in handles)))

    try:
        results = asyncio.run(submit_and_await())
    except BaseException:
        print(podman("logs", container_name).stderr)
        raise
    assert results == [generate_report(report) for report in reports]  # computed in the container

    killed = podman("kill", "--signal", "TERM", container_name)
    assert killed.returncode == 0, killed.stderr
    began = time.monotonic()
    waited = podman("wait", container_name, timeout=90)
    print(f"the worker container stopped {time.monotonic() - began:.1f} s after SIGTERM")
    logs = podman("logs", container_name)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "0", logs.stdout + logs.stderr
    assert "Traceback" not in logs.stdout + logs.stderr
