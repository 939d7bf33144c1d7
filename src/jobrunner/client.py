"""Enqueue from Python: `AsyncClient` (asyncpg) and `Client` (psycopg 3).

Both enqueue on the connection you pass, inside whatever transaction it has open, so a job
exists if and only if your transaction commits. Both run the same statements
(jobrunner.job_statements), each driver by its own runner (jobrunner.statements). psycopg is
imported when the first `Client` runs one: the daemon and asyncio applications, which import
this module, never load it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Unpack

import asyncpg

from jobrunner.enqueue import EnqueueOptions, new_job
from jobrunner.flows import FlowGroup, ParentJob, group_jobs
from jobrunner.job_statements import JobRecord, JobStatements
from jobrunner.new_job import MAX_PAYLOAD_BYTES, InvalidJob, NewJob
from jobrunner.statements import AsyncConnection, AsyncExecutor, run, run_sync
from jobrunner.trace_context import (
    traced_enqueue,
    traced_enqueue_many,
    traced_enqueue_many_sync,
    traced_enqueue_sync,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncClient", "AsyncConnection", "Client", "InvalidJob", "JobRecord", "NewJob"]


class AsyncClient:
    """asyncpg client. `db` is a pool or a connection; every method also takes `connection=`
    to run inside a transaction you hold. `max_payload_bytes` is the database's payload limit
    (1 MiB unless the owner set another with set_payload_limit): a larger payload is refused
    before it is sent."""

    def __init__(
        self, db: AsyncExecutor, schema: str = "public", *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self._db = db
        self._statements = JobStatements(schema)
        self._max_payload_bytes = max_payload_bytes

    @traced_enqueue
    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: AsyncConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> int:
        """Enqueue one job; returns its id (the live job's id when `dedupe_key` is taken). The
        options are `EnqueueOptions`: queue, priority, run_at or delay, max_attempts,
        dedupe_key, concurrency_key; with `depends_on`, the job waits until those jobs finished
        (jobrunner.flows)."""
        job, flow = new_job(job_type, payload, options)
        validated = job.validated(self._max_payload_bytes)
        if flow is not None:
            return await run(connection or self._db, self._statements.enqueue_dependent(validated, *flow))
        return await run(connection or self._db, self._statements.enqueue(validated))

    @traced_enqueue_many
    async def enqueue_many(self, jobs: Iterable[NewJob], *, connection: AsyncConnection | None = None) -> list[int]:
        """Enqueue many jobs in one statement; returns the ids inserted, in the order of `jobs`
        (dedupe hits are skipped)."""
        validated = [job.validated(self._max_payload_bytes) for job in jobs]
        if not validated:
            return []
        return await run(connection or self._db, self._statements.enqueue_batch(validated))

    async def get(self, job_id: int, *, connection: AsyncConnection | None = None) -> JobRecord | None:
        """The job's row (status, attempts, last error, result, …), or None when there is no such job."""
        return await run(connection or self._db, self._statements.get_job(job_id))

    async def cancel(self, job_id: int, *, connection: AsyncConnection | None = None) -> str | None:
        """Cancel a job. Returns its status after the request: "cancelled" (it was pending),
        "cancelling" (running: its handler is stopped within about a second and the job ends
        cancelled), the status it already had when finished, or None when there is no such job."""
        return await run(connection or self._db, self._statements.cancel_job(job_id))

    async def retry(self, job_id: int, *, connection: AsyncConnection | None = None) -> bool:
        """Give a failed, dead or cancelled job a fresh set of attempts."""
        requeued = await run(connection or self._db, self._statements.retry_job(job_id))
        return bool(requeued)

    # -- job flows (jobrunner.flows) -----------------------------------------------------------

    async def enqueue_group(
        self, jobs: Iterable[NewJob], callback: NewJob, *, connection: AsyncConnection | None = None
    ) -> FlowGroup:
        """Enqueue `jobs` and a `callback` job that runs once, when every one of them finished
        (completed or not: its handler reads how they ended with `parents`), in one transaction."""
        members = group_jobs(jobs, callback)
        validated_callback = callback.validated(self._max_payload_bytes)
        async with self._flow_transaction(connection) as conn:
            ids = await self.enqueue_many(members, connection=conn)
            callback_id = await run(conn, self._statements.enqueue_dependent(validated_callback, ids, "run"))
        return FlowGroup(ids, callback_id)

    async def parents(self, job_id: int, *, connection: AsyncConnection | None = None) -> list[ParentJob]:
        """The jobs `job_id` depends on, by id, with their status and result."""
        return await run(connection or self._db, self._statements.parent_jobs(job_id))

    @asynccontextmanager
    async def _flow_transaction(self, connection: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        """The caller's transaction when one is open (not a savepoint: an enqueuer may depend only
        on jobs its transaction enqueued outside savepoints), else one of our own."""
        if connection is None:
            if isinstance(self._db, asyncpg.Pool):
                async with self._db.acquire() as pooled, pooled.transaction():
                    yield pooled
                return
            connection = self._db
        if connection.is_in_transaction():
            yield connection
            return
        async with connection.transaction():
            yield connection


class Client:
    """psycopg 3 client for synchronous code (Django, Flask, scripts). Give it a connection;
    each call runs on it, in its current transaction (commit is yours). The methods are
    AsyncClient's, without `await`."""

    def __init__(
        self, connection: psycopg.Connection[Any], schema: str = "public", *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self._conn = connection
        self._statements = JobStatements(schema)
        self._max_payload_bytes = max_payload_bytes

    @traced_enqueue_sync
    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: psycopg.Connection[Any] | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> int:
        """See AsyncClient.enqueue."""
        job, flow = new_job(job_type, payload, options)
        validated = job.validated(self._max_payload_bytes)
        if flow is not None:
            return run_sync(connection or self._conn, self._statements.enqueue_dependent(validated, *flow))
        return run_sync(connection or self._conn, self._statements.enqueue(validated))

    @traced_enqueue_many_sync
    def enqueue_many(self, jobs: Iterable[NewJob], *, connection: psycopg.Connection[Any] | None = None) -> list[int]:
        """See AsyncClient.enqueue_many."""
        validated = [job.validated(self._max_payload_bytes) for job in jobs]
        if not validated:
            return []
        return run_sync(connection or self._conn, self._statements.enqueue_batch(validated))

    def get(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> JobRecord | None:
        """See AsyncClient.get."""
        return run_sync(connection or self._conn, self._statements.get_job(job_id))

    def cancel(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> str | None:
        """See AsyncClient.cancel."""
        return run_sync(connection or self._conn, self._statements.cancel_job(job_id))

    def retry(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> bool:
        """See AsyncClient.retry."""
        requeued = run_sync(connection or self._conn, self._statements.retry_job(job_id))
        return bool(requeued)

    # -- job flows (jobrunner.flows) -----------------------------------------------------------

    def enqueue_group(
        self, jobs: Iterable[NewJob], callback: NewJob, *, connection: psycopg.Connection[Any] | None = None
    ) -> FlowGroup:
        """See AsyncClient.enqueue_group."""
        members = group_jobs(jobs, callback)
        validated_callback = callback.validated(self._max_payload_bytes)
        with self._flow_transaction(connection) as conn:
            ids = self.enqueue_many(members, connection=conn)
            callback_id = run_sync(conn, self._statements.enqueue_dependent(validated_callback, ids, "run"))
        return FlowGroup(ids, callback_id)

    def parents(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> list[ParentJob]:
        """See AsyncClient.parents."""
        return run_sync(connection or self._conn, self._statements.parent_jobs(job_id))

    @contextmanager
    def _flow_transaction(self, connection: psycopg.Connection[Any] | None) -> Iterator[psycopg.Connection[Any]]:
        """The connection's transaction: the one open, or the implicit one a connection not in
        autocommit mode begins (commit is yours); in autocommit mode outside a transaction, one of
        our own holds the group and its callback. Never a savepoint (see AsyncClient)."""
        from psycopg.pq import TransactionStatus

        conn = connection or self._conn
        if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
            yield conn
            return
        with conn.transaction():
            yield conn
