"""The daemon's operations endpoint: which routes it serves and what they answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from jobrunner.http_server import OpsServer, Response
from jobrunner.metrics import DaemonMetrics
from jobrunner.settings import Settings


async def start_ops_endpoint(
    settings: Settings,
    metrics: DaemonMetrics,
    is_healthy: Callable[[], bool],
    readiness: Callable[[], Awaitable[str | None]],
    log: structlog.typing.FilteringBoundLogger,
) -> OpsServer | None:
    """Serve /metrics, /healthz and /readyz; None when disabled or the port is taken.

    `readiness` returns None when ready, else what is missing.
    """
    if not settings.http_enabled:
        return None

    async def metrics_route() -> Response:
        return Response(200, metrics.exposition(), CONTENT_TYPE_LATEST)

    async def health_route() -> Response:
        return Response(200, b"ok\n") if is_healthy() else Response(503, b"fetch loop wedged\n")

    async def ready_route() -> Response:
        problem = await readiness()
        return Response(200, b"ready\n") if problem is None else Response(503, f"not ready: {problem}\n".encode())

    server = OpsServer(
        settings.http_host,
        settings.http_port,
        {"/metrics": metrics_route, "/healthz": health_route, "/readyz": ready_route},
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
    log.info("metrics/health endpoint listening", host=settings.http_host, port=server.port)
    return server
