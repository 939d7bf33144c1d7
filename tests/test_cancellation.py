"""Cancelling pending and running jobs; progress and results stored on the job."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import asyncpg

from jobrunner import AsyncClient, JobContext, handler
from tests.support import job_row, jobrunner_process, running_daemon, wait_for, wait_until

started = asyncio.Event()
stopped_by_cancel = asyncio.Event()


@handler("cancellable")
async def cancellable(ctx: JobContext[dict[str, object]]) -> None:
    await ctx.set_progress({"done": 1, "total": 3})
    started.set()
    try:
        await asyncio.Event().wait()  # forever, until cancelled
    except asyncio.CancelledError:
        stopped_by_cancel.set()
        raise


@handler("reports")
async def reports(ctx: JobContext[dict[str, object]]) -> dict[str, object]:
    await ctx.set_progress(0.5)
    return {"answer": 42}


async def test_a_pending_job_is_cancelled_and_never_starts(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    job_id = await client.enqueue("reports", delay=3600)
    assert await client.cancel(job_id) == "cancelled"
    assert await client.cancel(job_id) == "cancelled"  # as it already was
    assert await client.cancel(10**12) is None
    await conn.execute("UPDATE background_jobs SET scheduled_at = now() WHERE id = $1", job_id)
    async with running_daemon(db_url, [reports], burst=True) as daemon:
        pass
    row = await job_row(conn, job_id)
    assert row["status"] == "cancelled"
    assert row["attempts"] == 0
    assert daemon.stats.claimed == 0


async def _cancel_running(db_url: str, conn: asyncpg.Connection, **overrides: object) -> float:
    started.clear()
    stopped_by_cancel.clear()
    job_id = await AsyncClient(conn).enqueue("cancellable")
    async with running_daemon(db_url, [cancellable], **overrides) as daemon:
        await asyncio.wait_for(started.wait(), 10)
        if daemon.listener is not None:
            # a cancel NOTIFY sent before LISTEN is up is lost (the poll finds it later)
            await wait_until(lambda: daemon.listener is not None and daemon.listener.listening, what="LISTEN")
        row = await job_row(conn, job_id)
        assert json.loads(row["progress"]) == {"done": 1, "total": 3}
        asked = time.monotonic()
        assert await conn.fetchval("SELECT cancel_job($1)", job_id) == "cancelling"
        await asyncio.wait_for(stopped_by_cancel.wait(), 5)
        latency = time.monotonic() - asked
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="cancelled")
        await wait_until(lambda: daemon.stats.cancelled == 1, what="the cancel counted")
    row = await job_row(conn, job_id)
    assert row["last_error"] == "cancelled by request"
    assert row["finished_at"] is not None
    return latency


async def test_a_running_job_is_cancelled_through_notify(db_url: str, conn: asyncpg.Connection) -> None:
    # polling would take 30 s here: only the NOTIFY can explain a fast stop
    latency = await _cancel_running(db_url, conn, cancel_poll_interval=30.0)
    assert latency < 1.0


async def test_a_running_job_is_cancelled_by_polling_without_listen(db_url: str, conn: asyncpg.Connection) -> None:
    latency = await _cancel_running(db_url, conn, listen=False, cancel_poll_interval=0.2)
    assert latency < 2.0


async def test_progress_and_result_are_stored(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await AsyncClient(conn).enqueue("reports")
    async with running_daemon(db_url, [reports], burst=True):
        pass
    record = await AsyncClient(conn).get(job_id)
    assert record is not None
    assert record.status == "completed"
    assert record.result == {"answer": 42}
    assert record.progress == 0.5


async def test_a_job_cancelled_while_its_worker_is_dead_ends_cancelled(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, status, attempts, lease_expires_at, worker_id, cancel_requested_at)"
        " VALUES ('reports', 'running', 1, now() - interval '1 second', 'gone', now()) RETURNING id"
    )
    async with running_daemon(db_url, [reports]):
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="cancelled")


async def test_cancel_reaches_a_job_running_in_another_process(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await AsyncClient(conn).enqueue("process_sleep", {"seconds": 120})
    proc = jobrunner_process(db_url, "run", "--handlers", "tests.cancel_process_handlers")
    try:
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="running")
        cli = jobrunner_process(db_url, "cancel", str(job_id))
        assert await asyncio.to_thread(cli.wait, 30) == 0
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="cancelled", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
