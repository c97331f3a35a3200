"""Fixtures: a real Kafka broker for the whole session, and topics of their own for each test.

The broker is, in order: the one `STREAMPROC_BOOTSTRAP_SERVERS` names if it answers; a
testcontainers Kafka if a Docker engine answers; else the local broker of `streamproc broker`,
started here and stopped at the end unless it already ran.

`make test` runs the suite in two xdist processes (`-n 2`). Their controller starts the local
broker once and names it to both. The tests that must not overlap stay in one process each: the
Kubernetes tests share one control plane, the browser tests one Chromium, the security tests one
broker on fixed ports, and the tests that run several worker processes for a minute or more (the
chaos cases, the quick bench, worker kills) run one at a time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from streamproc import admin, provisioning
from streamproc.localbroker import LocalBroker
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology

# A shell without job control starts background jobs (`make test &`) with SIGINT ignored, and the
# children inherit that: the tests that press Ctrl-C on `streamproc demo` and `streamproc top` would
# see nothing happen. A handler, unlike an ignore, is reset to the default when a child starts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # no SDK, no socket, no engine: all mean "no Docker here"
        return False
    return True


def _named_broker_answers() -> bool:
    named = os.environ.get("STREAMPROC_BOOTSTRAP_SERVERS")
    if not named:
        return False
    return asyncio.run(admin.broker_answers(KafkaSettings(bootstrap_servers=named)))


_started_for_workers = pytest.StashKey[LocalBroker]()


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the controller starts the local broker for its workers, which inherit its address:
    one broker for the run, stopped once every worker is done."""
    controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")
    if not controller or _named_broker_answers() or _docker_answers():
        return
    broker = LocalBroker.from_env()
    started = broker.start()
    os.environ["STREAMPROC_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    if not started.already_running:
        config.stash[_started_for_workers] = broker


def pytest_unconfigure(config: pytest.Config) -> None:
    broker = config.stash.get(_started_for_workers, None)
    if broker is not None:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_settings() -> Iterator[KafkaSettings]:
    if _named_broker_answers():
        settings = KafkaSettings.from_env()
        yield settings
        _delete_test_topics(settings)
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        container = KafkaContainer().with_kraft().with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        with container:
            yield KafkaSettings(bootstrap_servers=container.get_bootstrap_server())
        return
    broker = LocalBroker.from_env()
    started = broker.start()
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
    try:
        yield settings
        _delete_test_topics(settings)
    finally:
        if not started.already_running:
            broker.stop()


_session_prefixes: list[str] = []


def _delete_test_topics(settings: KafkaSettings) -> None:
    """Delete the topics of this session's tests: a broker that keeps its data (the local one) would
    otherwise gather thousands of partitions over runs, until it runs out of file descriptors."""

    async def delete() -> None:
        async with admin.admin_client(settings) as client:
            names = [name for name in await client.list_topics() if name.split(".")[0] in set(_session_prefixes)]
            await admin.delete_topics(client, names, within_s=120)

    if _session_prefixes:
        asyncio.run(delete())


@pytest.fixture
def bootstrap(kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session broker's address, also exported for code that reads the environment."""
    monkeypatch.setenv("STREAMPROC_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    return kafka_settings.bootstrap_servers


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    _session_prefixes.append(prefix)
    return prefix


@pytest.fixture
def topology(prefix: str) -> Topology:
    """The default topics file under a unique prefix, with small partition counts and short tiers."""
    return Topology.model_validate(
        {
            "prefix": prefix,
            "intake": {"partitions": 3},
            "tiers": {"delays": ["1s", "2s"], "partitions": 2},
            "dlq": {"partitions": 1},
            "status": {"partitions": 3},
        }
    )


@pytest.fixture
async def one_partition(kafka_settings: KafkaSettings, topology: Topology) -> Topology:
    """`topology` with one partition per intake topic, applied: every task shares one partition."""
    single = topology.model_copy(update={"intake": topology.intake.model_copy(update={"partitions": 1})})
    await provisioning.apply(kafka_settings, single)
    return single


INTEGRATION_DIR = os.path.join(os.path.dirname(__file__), "integration")
CHAOS_DIR = os.path.join(os.path.dirname(__file__), "chaos")
BROWSER_DIR = os.path.join(os.path.dirname(__file__), "browser")
K8S_DIR = os.path.join(os.path.dirname(__file__), "k8s")  # KEDA in the test cluster reads the broker
_skipped_kafka_tests: list[str] = []


# The modules whose tests run several worker processes for a minute or more (kills, restarts, the
# quick bench): two at once would slow each other into their deadlines.
BUSY_MODULES = {
    os.path.join(INTEGRATION_DIR, f"{name}.py") for name in ("test_bench", "test_worker_processes", "test_workflows")
}
SECURITY_MODULE = os.path.join(INTEGRATION_DIR, "test_security.py")  # its module's broker listens on fixed ports


def xdist_group(path: str) -> str | None:
    """The group whose tests xdist hands to one process (see the module's docstring), by the test's file;
    None: the test may run in either."""
    if path.startswith(K8S_DIR):
        return "k8s"
    if path.startswith(BROWSER_DIR):
        return "browser"
    if path == SECURITY_MODULE:
        return "security"
    if path.startswith(CHAOS_DIR) or path in BUSY_MODULES:
        return "busy"
    return None


@pytest.hookimpl(optionalhook=True)  # xdist's hook: without xdist (`-p no:xdist`) it is not called
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduling with `xdist_group` above as the scope. (xdist's own `--dist loadgroup` marks
    groups by rewriting `item._nodeid`, which pytest 9.2 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = os.path.join(config.rootpath, nodeid.split("::", 1)[0])  # node ids are relative to the rootdir
            return xdist_group(path) or nodeid

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration, tests/chaos, tests/browser and tests/k8s talks to a real broker."""
    for item in items:
        if str(item.path).startswith((INTEGRATION_DIR, CHAOS_DIR, BROWSER_DIR, K8S_DIR)):
            item.add_marker(pytest.mark.kafka)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "kafka" in report.keywords:
        _skipped_kafka_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped Kafka test is a failed run: CI must prove the Kafka behaviour, not skip it."""
    if _skipped_kafka_tests:
        print(f"\nKafka tests were skipped, failing the run: {', '.join(_skipped_kafka_tests)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
