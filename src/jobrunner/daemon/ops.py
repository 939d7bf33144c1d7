"""The daemon's operations endpoint: which routes it serves and what they answer.

Every route answers from memory, so that requests, however many, cost the event loop next to
nothing and the database nothing: /healthz reads the fetch loop's last turn, /readyz the
readiness probe's last finding (daemon/readiness.py), /metrics an exposition rendered at most
once per METRICS_MAX_AGE, in a worker thread, one render at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from jobrunner.daemon.readiness import ReadinessProbe
from jobrunner.dsn import DatabaseUrl
from jobrunner.http_server import Limits, OpsServer, Response
from jobrunner.metrics import DaemonMetrics
from jobrunner.settings import Settings

# Prometheus scrapes every 15-60 s; two of them (an HA pair) a second apart get the same page
METRICS_MAX_AGE = 1.0


class MetricsPage:
    """The exposition, rendered off the event loop and shared by the requests of a second."""

    def __init__(self, render: Callable[[], bytes], max_age: float = METRICS_MAX_AGE) -> None:
        self._render = render
        self._max_age = max_age
        self._page = b""
        self._rendered_at = -float("inf")
        self._rendering: asyncio.Future[bytes] | None = None
        self.renders = 0

    async def get(self) -> bytes:
        if time.monotonic() - self._rendered_at < self._max_age:
            return self._page
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(self._render_now())
        # shielded: a client that hangs up does not cancel the render the others wait for
        return await asyncio.shield(self._rendering)

    async def _render_now(self) -> bytes:
        try:
            self._page = await asyncio.to_thread(self._render)
            self.renders += 1
            self._rendered_at = time.monotonic()
            return self._page
        finally:
            self._rendering = None


async def start_ops_endpoint(
    settings: Settings,
    metrics: DaemonMetrics,
    is_healthy: Callable[[], bool],
    readiness: Callable[[], Awaitable[str | None]],
    log: structlog.typing.FilteringBoundLogger,
    database_url: DatabaseUrl | None = None,
) -> OpsServer | None:
    """Serve /metrics, /healthz and /readyz; None when disabled or the port is taken.

    `readiness` returns None when the daemon itself is ready (e.g. not stopping), else why not;
    with `database_url`, a readiness probe checks the database (connection, migrations) too.
    """
    if not settings.http_enabled:
        return None
    probe = (
        ReadinessProbe(
            database_url,
            settings.schema_name,
            interval=settings.readiness_interval,
            connect_timeout=settings.connect_timeout,
            log=log,
            errors=metrics.database_errors,
        )
        if database_url is not None
        else None
    )
    page = MetricsPage(metrics.exposition)

    async def metrics_route() -> Response:
        return Response(200, await page.get(), CONTENT_TYPE_LATEST)

    async def health_route() -> Response:
        return Response(200, b"ok\n") if is_healthy() else Response(503, b"fetch loop wedged\n")

    async def ready_route() -> Response:
        problem = await readiness()
        if problem is None and probe is not None:
            problem = probe.problem
        return Response(200, b"ready\n") if problem is None else Response(503, f"not ready: {problem}\n".encode())

    server = OpsServer(
        settings.http_host,
        settings.http_port,
        {"/metrics": metrics_route, "/healthz": health_route, "/readyz": ready_route},
        Limits(max_connections=settings.http_max_connections, requests_per_second=settings.http_requests_per_second),
    )
    try:
        await server.start()
    except OSError as exc:
        # keep working without it: losing metrics is better than losing the worker
        log.error(
            "metrics/health endpoint could not start",
            host=settings.http_host,
            port=settings.http_port,
            error=repr(exc),
        )
        return None
    if probe is not None:
        server.run_alongside(probe.run(), name="readiness-probe")
    log.info("metrics/health endpoint listening", host=settings.http_host, port=server.port)
    return server
