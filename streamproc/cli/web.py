"""`streamproc web`: the status view of `<prefix>.status` and its HTTP API, until SIGTERM/SIGINT.

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
from pathlib import Path
from typing import Annotated

import structlog
import typer

from streamproc.cli.options import BootstrapServers, TopicsFile
from streamproc.errors import StreamprocError
from streamproc.logs import configure_logging
from streamproc.settings import KafkaSettings, Settings
from streamproc.topology import Topology, load_topology

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
    file: TopicsFile = None,
    bootstrap_servers: BootstrapServers = None,
) -> None:
    """Serve task statuses (GET /api/tasks/ID) from a view of the status topic; the API is described at
    /openapi.json and /docs."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise StreamprocError("streamproc web needs FastAPI and uvicorn: pip install 'streamproc[web]'")
    configure_logging(repeat_interval_s=LOG_REPEAT_INTERVAL_S)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    topology = load_topology(file)
    settings = KafkaSettings.from_env(bootstrap_servers)
    path = db or default_db(topology)
    from streamproc.web.app import listener

    with listener(host, port) as sock:  # OSError (port in use…) is one line from main()
        asyncio.run(_serve(settings, topology, path, sock))


def default_db(topology: Topology) -> Path:
    return Path(Settings.read().home).expanduser() / f"status-{topology.prefix}.sqlite"


async def _serve(settings: KafkaSettings, topology: Topology, path: Path, sock: socket.socket) -> None:
    import uvicorn

    from streamproc.web.app import create_app
    from streamproc.web.store import StatusStore
    from streamproc.web.view import StatusView

    store = StatusStore(path, topology.status_topic, topology.status_ttl_ms)
    try:
        view = StatusView(settings, topology, store)
        # log_config=None: uvicorn's records go through our logging set-up like aiokafka's.
        config = uvicorn.Config(create_app(view), log_config=None, access_log=False, lifespan="off")
        server = uvicorn.Server(config)

        def stop() -> None:
            server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn takes them while it serves, then passes them on here
            loop.add_signal_handler(sig, stop)
        host, port = sock.getsockname()[:2]
        log.info("serving the status API", url=f"http://{host}:{port}/api/tasks/ID", db=str(path))
        following = asyncio.create_task(view.run())
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await asyncio.wait({following, serving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop()
            following.cancel()
            outcomes = await asyncio.gather(serving, following, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
    finally:
        store.close()
