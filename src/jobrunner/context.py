"""What a handler gets: its job, its validated payload, a logger and the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from jobrunner.client import AsyncClient
from jobrunner.job import Job
from jobrunner.settings import Settings

PayloadT = TypeVar("PayloadT")


@dataclass
class JobContext(Generic[PayloadT]):
    job: Job
    # the payload validated by the handler's model, or the decoded JSON object without one
    payload: PayloadT
    log: structlog.typing.FilteringBoundLogger
    pool: asyncpg.Pool
    client: AsyncClient
    # where report_usage goes (the daemon's metrics); None: nowhere
    usage_sink: Callable[[str, str, float], None] | None = None
    # writes the progress column of this attempt; None outside a daemon
    progress_writer: Callable[[str], Awaitable[bool]] | None = None
    # the daemon's settings (schema, retention, …) for handlers that reach into the queue
    settings: Settings | None = None

    @property
    def schema(self) -> str:
        """The schema that holds background_jobs."""
        return self.settings.schema_name if self.settings is not None else "public"

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def report_usage(self, kind: str, amount: float) -> None:
        """Count upstream usage (e.g. kind="openai_total_tokens") in jobrunner_upstream_usage_total."""
        if self.usage_sink is not None and amount > 0:
            self.usage_sink(self.job.job_type, kind, amount)

    async def set_progress(self, progress: Any) -> None:
        """Store a JSON value (e.g. {"done": 40, "total": 100}) as the job's progress, visible in
        `jobrunner status --job ID` and the `progress` column while the job runs."""
        if self.progress_writer is not None:
            await self.progress_writer(json.dumps(progress, default=str))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A pooled connection inside a transaction; pass it to `enqueue` for follow-up jobs that
        must exist if and only if your writes commit."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: asyncpg.Connection | None = None,
        queue: str = "default",
        priority: int = 0,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_attempts: int = 5,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> int:
        return await self.client.enqueue(
            job_type,
            payload,
            connection=connection,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            max_attempts=max_attempts,
            dedupe_key=dedupe_key,
            concurrency_key=concurrency_key,
        )
