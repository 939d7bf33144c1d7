"""What a handler gets: its job, its validated payload, a logger and the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar, Unpack

import asyncpg
import structlog

from jobrunner.client import AsyncClient, AsyncConnection
from jobrunner.enqueue import EnqueueOptions
from jobrunner.flows import ParentJob
from jobrunner.job import Job
from jobrunner.settings import Settings

PayloadT = TypeVar("PayloadT")
T = TypeVar("T")


class ProgressStore(Protocol):
    async def set_progress(self, job_id: int, attempt: int, progress_json: str) -> bool: ...


class BlockingRunner(Protocol):
    """The daemon's bounded pools for blocking code (daemon/blocking_pools.py)."""

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run_in_process(self, fn: Callable[..., T], *args: Any) -> T: ...


class JobContext(Generic[PayloadT]):
    """Built once per attempt, so it stays cheap: the logger is bound on first use."""

    __slots__ = (
        "_base_log",
        "_log",
        "blocking",
        "client",
        "job",
        "payload",
        "pool",
        "progress_store",
        "settings",
        "usage_sink",
    )

    def __init__(
        self,
        job: Job,
        payload: PayloadT,
        log: structlog.typing.FilteringBoundLogger,
        pool: asyncpg.Pool,
        client: AsyncClient,
        usage_sink: Callable[[str, str, float], None] | None = None,
        progress_store: ProgressStore | None = None,
        settings: Settings | None = None,
        blocking: BlockingRunner | None = None,
    ) -> None:
        self.job = job
        # the payload validated by the handler's model, or the decoded JSON object without one
        self.payload = payload
        self.pool = pool
        self.client = client
        # where report_usage goes (the daemon's metrics); None: nowhere
        self.usage_sink = usage_sink
        # writes the progress column of this attempt; None outside a daemon
        self.progress_store = progress_store
        # the daemon's settings (schema, retention, …) for handlers that reach into the queue
        self.settings = settings
        # the daemon's thread and process pools for blocking code; None outside a daemon
        self.blocking = blocking
        self._base_log = log
        self._log: structlog.typing.FilteringBoundLogger | None = None

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger whose every line carries job_id, job_type and attempt."""
        if self._log is None:
            job = self.job
            self._log = self._base_log.bind(job_id=job.id, job_type=job.job_type, attempt=job.attempt)
        return self._log

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
        if self.progress_store is not None:
            await self.progress_store.set_progress(self.job.id, self.job.attempt, json.dumps(progress, default=str))

    async def parents(self) -> list[ParentJob]:
        """The jobs this one waited for (enqueued with `depends_on`, or as a group's callback),
        with their status and result; empty for a job without parents."""
        return await self.client.parents(self.job.id)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in one of the daemon's `blocking_threads` threads, so blocking code (a
        synchronous library, CPU work that releases the GIL such as Pillow's decoders) does not
        freeze the event loop. If the job stops waiting (timeout, cancel, shutdown), its outcome
        is settled at once; the thread runs on and its result is discarded
        (`jobrunner.blocking.cancelled()` tells it). Outside a daemon: a plain worker thread."""
        if self.blocking is None:
            return await asyncio.to_thread(fn, *args)
        return await self.blocking.run_in_thread(fn, *args)

    async def run_in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the daemon's process pool (`blocking_processes` workers, started on
        first use): for pure-Python CPU work, which holds the GIL and would stall the daemon
        even in a thread. `fn`, its arguments and its result cross by pickling: `fn` must be a
        module-level function. A running call is not interrupted when the job stops waiting;
        its result is discarded."""
        if self.blocking is None:
            raise RuntimeError("run_in_process needs the daemon's process pool: call it from a handler the daemon runs")
        return await self.blocking.run_in_process(fn, *args)

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
        connection: AsyncConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> int:
        """Enqueue a follow-up job, as AsyncClient.enqueue does (pass `connection=` from
        `transaction()` to make it part of your writes)."""
        return await self.client.enqueue(job_type, payload, connection=connection, **options)
