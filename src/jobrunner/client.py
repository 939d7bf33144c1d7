"""Enqueue from Python: `AsyncClient` (asyncpg) and `Client` (psycopg 3).

Both enqueue on the connection you pass, inside whatever transaction it has open, so a job
exists if and only if your transaction commits. psycopg is imported when the first `Client` is
made: the daemon and asyncio applications, which import this module, never load it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from jobrunner.new_job import MAX_PAYLOAD_BYTES, InvalidJob, NewJob, bulk_columns, payload_limit_error, validate_job
from jobrunner.sql_files import Queries
from jobrunner.trace_context import (
    traced_enqueue,
    traced_enqueue_many,
    traced_enqueue_many_sync,
    traced_enqueue_sync,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncClient", "Client", "InvalidJob", "JobRecord", "NewJob"]

# what enqueue accepts as `connection=`: a connection, or one borrowed from a pool
AsyncConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
AsyncExecutor = asyncpg.Pool | AsyncConnection


# the jsonb columns of a record: read as text (one decoder for both drivers), given as Python values
_JSON_FIELDS = ("payload", "result", "progress")


@dataclass(frozen=True)
class JobRecord:
    """A row of background_jobs as `get` returns it. `payload`, `result` and `progress` are
    Python values decoded from their JSON (a dict; any JSON value or None)."""

    id: int
    job_type: str
    queue: str
    payload: dict[str, Any]
    priority: int
    status: str
    attempts: int
    max_attempts: int
    scheduled_at: datetime
    dedupe_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    worker_id: str | None
    last_error: str | None
    last_error_traceback: str | None
    result: Any
    release_count: int
    cancel_requested_at: datetime | None
    progress: Any
    concurrency_key: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | asyncpg.Record) -> JobRecord:
        fields = {name: row[name] for name in cls.__dataclass_fields__}
        for name in _JSON_FIELDS:
            if fields[name] is not None:
                fields[name] = json.loads(fields[name])
        return cls(**fields)


def _raise_payload_refusal(constraint_name: str | None, message: str, exc: Exception) -> None:
    """The database refused a payload over its limit: raise it as the InvalidJob the clients'
    own check raises."""
    refused = payload_limit_error(constraint_name, message)
    if refused is not None:
        raise refused from exc


class AsyncClient:
    """asyncpg client. `db` is a pool or a connection; every method also takes `connection=`
    to run inside a transaction you hold. `max_payload_bytes` is the database's payload limit
    (1 MiB unless the owner set another with set_payload_limit): a larger payload is refused
    before it is sent."""

    def __init__(
        self, db: AsyncExecutor, schema: str = "public", *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self._db = db
        self._queries = Queries(schema)
        self._max_payload_bytes = max_payload_bytes

    @traced_enqueue
    async def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: AsyncConnection | None = None,
        queue: str = "default",
        priority: int = 0,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_attempts: int = 5,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> int:
        """Enqueue one job; returns its id (the live job's id when `dedupe_key` is taken)."""
        args = validate_job(
            job_type,
            {} if payload is None else payload,
            queue,
            priority,
            run_at,
            delay,
            max_attempts,
            dedupe_key,
            concurrency_key,
            self._max_payload_bytes,
        )
        db = connection or self._db
        try:
            job_id: int = await db.fetchval(self._queries.enqueue, *args)
        except asyncpg.CheckViolationError as exc:
            _raise_payload_refusal(exc.constraint_name, exc.message, exc)
            raise
        return job_id

    @traced_enqueue_many
    async def enqueue_many(self, jobs: Iterable[NewJob], *, connection: AsyncConnection | None = None) -> list[int]:
        """Enqueue many jobs in one statement; returns the ids inserted, in the order of `jobs`
        (dedupe hits are skipped)."""
        limit = self._max_payload_bytes
        validated = [job.validated(limit) for job in jobs]
        if not validated:
            return []
        db = connection or self._db
        try:
            ids: list[int] | None = await db.fetchval(self._queries.enqueue_batch, *bulk_columns(validated))
        except asyncpg.CheckViolationError as exc:
            _raise_payload_refusal(exc.constraint_name, exc.message, exc)
            raise
        return ids or []

    async def get(self, job_id: int, *, connection: AsyncConnection | None = None) -> JobRecord | None:
        """The job's row (status, attempts, last error, result, …), or None when there is no such job."""
        row = await (connection or self._db).fetchrow(self._queries.get_job, job_id)
        return JobRecord.from_row(row) if row else None

    async def cancel(self, job_id: int, *, connection: AsyncConnection | None = None) -> str | None:
        """Cancel a job. Returns its status after the request: "cancelled" (it was pending),
        "cancelling" (running: its handler is stopped within about a second and the job ends
        cancelled), the status it already had when finished, or None when there is no such job."""
        status: str | None = await (connection or self._db).fetchval(self._queries.cancel_job, job_id)
        return status

    async def retry(self, job_id: int, *, connection: AsyncConnection | None = None) -> bool:
        """Give a failed, dead or cancelled job a fresh set of attempts."""
        return await (connection or self._db).fetchrow(self._queries.retry_job, job_id) is not None


_DOLLAR_PARAM = re.compile(r"\$(\d+)")


def _pyformat(sql: str) -> str:
    """Our SQL uses $1 placeholders; psycopg's client side wants %(name)s."""
    return _DOLLAR_PARAM.sub(r"%(p\1)s", sql.replace("%", "%%"))


def _params(values: Iterable[Any]) -> dict[str, Any]:
    return {f"p{i}": value for i, value in enumerate(values, start=1)}


class Client:
    """psycopg 3 client for synchronous code (Django, Flask, scripts). Give it a connection;
    each call runs on it, in its current transaction (commit is yours)."""

    def __init__(
        self, connection: psycopg.Connection[Any], schema: str = "public", *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        from psycopg.errors import CheckViolation
        from psycopg.rows import dict_row

        self._check_violation = CheckViolation
        self._dict_row = dict_row
        self._conn = connection
        self._max_payload_bytes = max_payload_bytes
        queries = Queries(schema)
        self._enqueue = _pyformat(queries.enqueue)
        self._enqueue_batch = _pyformat(queries.enqueue_batch)
        self._get = _pyformat(queries.get_job)
        self._cancel = _pyformat(queries.cancel_job)
        self._retry = _pyformat(queries.retry_job)

    def _fetchall(
        self, sql: str, values: Iterable[Any], connection: psycopg.Connection[Any] | None
    ) -> list[tuple[Any, ...]]:
        with (connection or self._conn).cursor() as cur:
            try:
                cur.execute(sql, _params(values))  # rendered from sql/, not user input
            except self._check_violation as exc:
                _raise_payload_refusal(exc.diag.constraint_name, exc.diag.message_primary or str(exc), exc)
                raise
            return cur.fetchall() if cur.description else []

    @traced_enqueue_sync
    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: psycopg.Connection[Any] | None = None,
        queue: str = "default",
        priority: int = 0,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        max_attempts: int = 5,
        dedupe_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> int:
        args = validate_job(
            job_type,
            {} if payload is None else payload,
            queue,
            priority,
            run_at,
            delay,
            max_attempts,
            dedupe_key,
            concurrency_key,
            self._max_payload_bytes,
        )
        rows = self._fetchall(self._enqueue, args, connection)
        job_id: int = rows[0][0]
        return job_id

    @traced_enqueue_many_sync
    def enqueue_many(self, jobs: Iterable[NewJob], *, connection: psycopg.Connection[Any] | None = None) -> list[int]:
        validated = [job.validated(self._max_payload_bytes) for job in jobs]
        if not validated:
            return []
        ids: list[int] | None = self._fetchall(self._enqueue_batch, bulk_columns(validated), connection)[0][0]
        return ids or []

    def get(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> JobRecord | None:
        with (connection or self._conn).cursor(row_factory=self._dict_row) as cur:
            cur.execute(self._get, _params([job_id]))
            row = cur.fetchone()
        return JobRecord.from_row(row) if row else None

    def cancel(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> str | None:
        """See AsyncClient.cancel."""
        rows = self._fetchall(self._cancel, [job_id], connection)
        status: str | None = rows[0][0] if rows else None
        return status

    def retry(self, job_id: int, *, connection: psycopg.Connection[Any] | None = None) -> bool:
        return bool(self._fetchall(self._retry, [job_id], connection))
