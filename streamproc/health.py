"""HTTP for operators (SPEC §7): `/metrics`, `/healthz` (the event loop is responsive) and
`/readyz` (every worker joined its group and the broker answers).

The server runs in a thread of its own, so a scrape never competes with tasks on the event
loop, and a stuck event loop is reported (its heartbeat goes stale) instead of just not answering.
`monitor` runs on the event loop: it beats the heartbeat, follows the workers' group membership,
and refreshes the lag gauge, which also tells whether the broker answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from aiokafka.errors import KafkaError
from prometheus_client import make_wsgi_app

from streamproc.errors import StreamprocError
from streamproc.metrics import Metrics
from streamproc.worker import Worker

log = structlog.get_logger("streamproc.health")

BEAT_S = 1.0
STALE_AFTER_S = 10.0  # no heartbeat for this long: /healthz fails
LAG_INTERVAL_S = 5.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Health:
    """What the probes answer; written on the event loop, read by the HTTP thread."""

    def __init__(self) -> None:
        self._beat = time.monotonic()
        self.joined = False
        self.broker_reachable = False

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def live(self) -> bool:
        return time.monotonic() - self._beat < STALE_AFTER_S

    @property
    def ready(self) -> bool:
        return self.live and self.joined and self.broker_reachable


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds are not news; the worker's log stays JSON."""


def _application(health: Health, metrics: Metrics) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    scrape = make_wsgi_app(metrics.registry)

    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return scrape(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, detail = health.live, "event loop responsive" if health.live else "event loop stalled"
        elif path == "/readyz":
            ok = health.ready
            detail = f"joined: {health.joined}, broker reachable: {health.broker_reachable}, live: {health.live}"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"{'ok' if ok else 'not ok'}: {detail}\n".encode()]

    return application


async def monitor(health: Health, metrics: Metrics, workers: Sequence[Worker]) -> None:
    """Beat every second; every few seconds refresh the lag, which is also the broker check."""
    next_lag = 0.0
    while True:
        health.beat()
        health.joined = all(worker.joined.is_set() for worker in workers)
        if time.monotonic() >= next_lag:
            next_lag = time.monotonic() + LAG_INTERVAL_S
            try:
                async with asyncio.timeout(LAG_INTERVAL_S):
                    await metrics.refresh_lag(workers)
            except (KafkaError, TimeoutError, OSError) as exc:
                if health.broker_reachable:
                    log.warning("the broker did not answer the lag query", error=str(exc) or type(exc).__name__)
                health.broker_reachable = False
            else:
                health.broker_reachable = True
        await asyncio.sleep(BEAT_S)


@asynccontextmanager
async def observed(workers: Sequence[Worker], metrics: Metrics, port: int, host: str = "0.0.0.0") -> AsyncIterator[int]:
    """Serve the endpoints on `port` (0: a free one, which is yielded) and monitor `workers` meanwhile."""
    health = Health()
    metrics.watch(workers)
    try:
        server: WSGIServer = make_server(host, port, _application(health, metrics), handler_class=_Quiet)
    except OSError as exc:
        raise StreamprocError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}): pass another --metrics-port, or 0 for a free one"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="streamproc-http", daemon=True)
    thread.start()
    watching = asyncio.create_task(monitor(health, metrics, workers))
    try:
        yield server.server_port
    finally:
        watching.cancel()
        server.shutdown()
        server.server_close()
