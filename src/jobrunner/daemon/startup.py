"""The daemon's start: its two pools and the migration check, retried while the database is
away (a restart, a cut connection), since a replica started at the wrong moment must not exit;
and the start-up log lines that say what this daemon runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import structlog
from prometheus_client import Counter

from jobrunner.daemon.backoff import Backoff
from jobrunner.daemon.clock import sleep_unless
from jobrunner.database import INTERNAL_POOL_SIZE, TRANSIENT_ERRORS, create_pool
from jobrunner.dsn import DatabaseUrl
from jobrunner.migrate import pending_migrations
from jobrunner.registry import HandlerRegistry
from jobrunner.settings import Settings

T = TypeVar("T")


class NotMigrated(RuntimeError):
    pass


class Startup:
    def __init__(
        self,
        settings: Settings,
        database_url: DatabaseUrl,
        stopping: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
        errors: Counter,
    ) -> None:
        self._settings = settings
        self._url = database_url
        self._stopping = stopping
        self._log = log
        self._backoff = Backoff("startup", log, errors)

    async def open_pools(self) -> tuple[asyncpg.Pool, asyncpg.Pool] | None:
        """The daemon's own pool and the handlers' pool, once the database answers and needs no
        migration (else NotMigrated). None when stopped meanwhile."""
        s = self._settings
        pool = await self._while_unreachable(
            "database unreachable, retrying",
            lambda: create_pool(
                self._url,
                min_size=s.pool_min_size,
                max_size=INTERNAL_POOL_SIZE,
                connect_timeout=s.connect_timeout,
                idle_timeout=s.pool_idle_timeout,
                # only our own statements run here; handlers get the other pool
                reset_sessions=False,
            ),
            database=self._url.redacted(),
        )
        if pool is None:
            return None
        # handlers' connections: opened only when a handler asks for one
        handler_pool = await create_pool(
            self._url,
            min_size=0,
            max_size=s.effective_pool_max_size,
            connect_timeout=s.connect_timeout,
            idle_timeout=s.pool_idle_timeout,
        )
        try:
            missing = await self._while_unreachable(
                "database unreachable at start, retrying", lambda: pending_migrations(pool, s.schema_name)
            )
            if missing:
                raise NotMigrated(
                    f"the database needs migrations first (run `jobrunner migrate`): {', '.join(missing)}"
                )
        except BaseException:
            await asyncio.gather(close_pool(handler_pool), close_pool(pool))
            raise
        if missing is None:  # stopped while the database was away
            await asyncio.gather(close_pool(handler_pool), close_pool(pool))
            return None
        return pool, handler_pool

    async def _while_unreachable(self, event: str, attempt: Callable[[], Awaitable[T]], **fields: Any) -> T | None:
        while not self._stopping.is_set():
            try:
                return await attempt()
            except TRANSIENT_ERRORS as exc:
                await sleep_unless(self._stopping, self._backoff.failed(event, exc, **fields))
        return None


def log_start(
    log: structlog.typing.FilteringBoundLogger,
    settings: Settings,
    registry: HandlerRegistry,
    database_url: DatabaseUrl,
    *,
    listening: bool,
    burst: bool,
) -> None:
    """What this daemon runs, and what in its configuration looks wrong."""
    s = settings
    log.info(
        "daemon started",
        queues=s.queues,
        concurrency=s.concurrency,
        job_types=registry.job_types(),
        listen=listening,
        database=database_url.redacted(),
        burst=burst,
    )
    if unworked := sorted(set(s.queue_limits) - set(s.queues)):
        # harmless where other replicas work them; a typo otherwise means no limit
        log.warning("queue limits set for queues this daemon does not work", queues=unworked)
    for job_type, problem in registry.configuration_problems().items():
        log.warning("handler not configured: its jobs will fail until it is", job_type=job_type, problem=problem)


async def close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 5.0)
    except Exception:
        pool.terminate()
