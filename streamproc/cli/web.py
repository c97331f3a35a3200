"""`streamproc web`: the live monitor and the status view of `<prefix>.status`, until SIGTERM/SIGINT.

The listening socket is bound before anything starts, so a port in use is one line (exit 1)
rather than uvicorn's log and exit; the view and the server run side by side on one loop, and
whichever ends first (a signal, a Kafka or store error) ends the other.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
import typer

from streamproc.cli.options import BootstrapServers, Group, TopicsFile
from streamproc.errors import StreamprocError
from streamproc.logs import configure_logging
from streamproc.producer import Producer
from streamproc.settings import KafkaSettings, Settings
from streamproc.topology import Topology, load_topology
from streamproc.worker_config import WorkerConfig

LOG_REPEAT_INTERVAL_S = 10.0
log = structlog.get_logger("streamproc.web")


def web(
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to serve on (0: a free one, logged).")
    ] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            envvar="STREAMPROC_WEB_DB",
            help="SQLite file of the status view (default ~/.cache/streamproc/status-<prefix>.sqlite); "
            "rebuilt from the status topic when missing or unusable.",
        ),
    ] = None,
    group: Group = WorkerConfig.group,
    lag_threshold: Annotated[
        int,
        typer.Option(
            "--lag-threshold",
            envvar="STREAMPROC_LAG_THRESHOLD",
            min=1,
            help="KEDA's lagThreshold, for the replica figure the overview shows.",
        ),
    ] = 100,
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Serve the live monitor (a UI at /, its JSON API under /api, described at /docs) and task statuses
    (GET /api/tasks/ID). Cancel and replay need STREAMPROC_WEB_TOKEN; without it the UI is read-only."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise StreamprocError("streamproc web needs FastAPI and uvicorn: pip install 'streamproc[web]'")
    configure_logging(repeat_interval_s=LOG_REPEAT_INTERVAL_S)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    topology = load_topology(file)
    settings = KafkaSettings.from_env(bootstrap_servers)
    path = db or default_db(topology)
    token = Settings.read().web_token
    from streamproc.web.app import listener

    with listener(host, port) as sock:  # OSError (port in use…) is one line from main()
        asyncio.run(_serve(settings, topology, path, sock, Watch(group, lag_threshold, token)))


def default_db(topology: Topology) -> Path:
    return Path(Settings.read().home).expanduser() / f"status-{topology.prefix}.sqlite"


@dataclass(frozen=True)
class Watch:
    """What the monitor watches, and the token its actions need."""

    group: str
    lag_threshold: int
    token: str | None


async def _serve(settings: KafkaSettings, topology: Topology, path: Path, sock: socket.socket, watch: Watch) -> None:
    import uvicorn

    from streamproc.monitor.live import LiveMonitor
    from streamproc.web.dlq_view import DlqView
    from streamproc.web.monitor_api import Monitoring
    from streamproc.web.monitor_app import create_monitor_app
    from streamproc.web.store import StatusStore
    from streamproc.web.view import StatusView

    store = StatusStore(path, topology.status_topic, topology.status_ttl_ms)
    try:
        view = StatusView(settings, topology, store)
        live = LiveMonitor(settings, topology, watch.group, watch.lag_threshold)
        dead_letters = DlqView(settings, topology)
        async with Producer(settings, topology) as producer:
            monitoring = Monitoring(settings, topology, live, dead_letters, producer, watch.token)
            app = create_monitor_app(view, monitoring)
            # log_config=None: uvicorn's records go through our logging set-up like aiokafka's. Open event
            # streams never end on their own, so a shutdown gives them a second.
            config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=1)
            server = uvicorn.Server(config)

            def stop() -> None:
                server.should_exit = True

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn takes them while it serves, then passes them on
                loop.add_signal_handler(sig, stop)
            host, port = sock.getsockname()[:2]
            log.info(
                "serving the monitor and the status API",
                url=f"http://{host}:{port}/",
                db=str(path),
                actions="enabled" if watch.token else "off (read-only): STREAMPROC_WEB_TOKEN is not set",
            )
            followers = [asyncio.create_task(run()) for run in (view.run, live.run, dead_letters.run)]
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            try:
                await asyncio.wait({*followers, serving}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop()
                for follower in followers:
                    follower.cancel()
                outcomes = await asyncio.gather(serving, *followers, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome
    finally:
        store.close()
