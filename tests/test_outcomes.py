"""record_outcomes: plain completions and every other outcome in one statement, each fenced
by the attempt it ran, each kind of outcome written one way; it and the heartbeat lock rows in
one order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from jobrunner import AsyncClient, NewJob
from jobrunner.job import Job
from jobrunner.outcomes import Cancelled, Completed, Dead, Failed, Outcome, Released, RetryAfter
from jobrunner.store import JobStore
from tests.support import wait_for


async def test_one_batch_writes_completions_failures_and_refuses_stale_attempts(
    conn: asyncpg.Connection,
) -> None:
    done, retried, stale, done_after_failure = await AsyncClient(conn).enqueue_many(
        [NewJob("t", priority=4 - i) for i in range(4)]
    )
    await conn.execute("UPDATE background_jobs SET last_error = 'earlier failure' WHERE id = $1", done_after_failure)
    store = JobStore(conn, "public")  # type: ignore[arg-type]
    claimed = {job.id: job for job in await store.claim_batch(["default"], "w", 4, 30.0)}
    assert set(claimed) == {done, retried, stale, done_after_failure}
    written = await store.record_outcomes(
        [
            Completed(done, 1, "t", "default"),
            RetryAfter(retried, 1, "t", "default", 60.0, "boom", "tb"),
            Completed(stale, 2, "t", "default"),  # an attempt this worker does not hold
            Completed(done_after_failure, 1, "t", "default"),
        ]
    )
    assert written == {done, retried, done_after_failure}
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, status, last_error, finished_at, scheduled_at > now() AS later FROM background_jobs"
        )
    }
    assert rows[done]["status"] == "completed" and rows[done]["finished_at"] is not None
    assert rows[retried]["status"] == "pending" and rows[retried]["last_error"] == "boom" and rows[retried]["later"]
    assert rows[stale]["status"] == "running"
    assert rows[done_after_failure]["status"] == "completed"
    assert rows[done_after_failure]["last_error"] == "earlier failure"  # kept, as the README says


async def rows_locked_by_a_blocked_write(
    db_url: str, conn: asyncpg.Connection, write: Callable[[JobStore, list[Job]], Awaitable[object]]
) -> tuple[set[int], set[int]]:
    """Run `write` on ten claimed jobs while another session holds the fifth row's lock; once
    the write waits for it, report which rows it had already locked and which it had not."""
    await AsyncClient(conn).enqueue_many([NewJob("t") for _ in range(10)])
    store = JobStore(conn, "public")  # type: ignore[arg-type]
    jobs = sorted(await store.claim_batch(["default"], "w", 10, 30.0), key=lambda job: job.id)
    middle = jobs[4].id
    blocker = await asyncpg.connect(db_url)
    writer = await asyncpg.connect(db_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM background_jobs WHERE id = $1 FOR UPDATE", middle)
            # handed over in descending order: the write must still lock in ascending order
            task = asyncio.create_task(write(JobStore(writer, "public"), jobs[::-1]))  # type: ignore[arg-type]
            await wait_for(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = $1",
                writer.get_server_pid(),
                expect=1,
            )
            locked = set()
            for job in jobs:
                if job.id == middle:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute("SELECT 1 FROM background_jobs WHERE id = $1 FOR UPDATE NOWAIT", job.id)
                except asyncpg.LockNotAvailableError:
                    locked.add(job.id)
        await asyncio.wait_for(task, 10)
    finally:
        await blocker.close()
        await writer.close()
    return locked, {job.id for job in jobs if job.id < middle}


async def test_outcome_writes_lock_rows_in_id_order(db_url: str, conn: asyncpg.Connection) -> None:
    # the heartbeat locks in the same order, so the two writes cannot deadlock on each other
    async def complete(store: JobStore, jobs: list[Job]) -> object:
        return await store.record_outcomes([Completed(j.id, j.attempt, "t", "default") for j in jobs])

    locked, below = await rows_locked_by_a_blocked_write(db_url, conn, complete)
    assert locked == below


async def test_a_mixed_batch_of_outcomes_locks_rows_in_id_order(db_url: str, conn: asyncpg.Connection) -> None:
    # completions and retries are two UPDATEs; the lowest ids are the retries, so locking each
    # UPDATE's rows in its own order would take the completions' first
    async def complete_and_retry(store: JobStore, jobs: list[Job]) -> object:
        retried = {job.id for job in sorted(jobs, key=lambda job: job.id)[:3:2]}
        return await store.record_outcomes(
            [
                RetryAfter(j.id, j.attempt, "t", "default", 60.0, "boom")
                if j.id in retried
                else Completed(j.id, j.attempt, "t", "default")
                for j in jobs
            ]
        )

    locked, below = await rows_locked_by_a_blocked_write(db_url, conn, complete_and_retry)
    assert locked == below


async def test_heartbeats_lock_rows_in_id_order(db_url: str, conn: asyncpg.Connection) -> None:
    async def heartbeat(store: JobStore, jobs: list[Job]) -> object:
        return await store.extend_leases({j.id: j.attempt for j in jobs}, 30.0)

    locked, below = await rows_locked_by_a_blocked_write(db_url, conn, heartbeat)
    assert locked == below


async def test_a_released_job_keeps_its_place_and_a_cancel_requested_meanwhile_ends_it(
    conn: asyncpg.Connection,
) -> None:
    """Released: handed back unfinished (shutdown, or a prefetch that waited too long)."""
    handed_back, cancelled_meanwhile = await AsyncClient(conn).enqueue_many([NewJob("t"), NewJob("t")])
    await conn.execute("UPDATE background_jobs SET scheduled_at = now() - interval '1 hour'")
    became_runnable = await conn.fetchval("SELECT scheduled_at FROM background_jobs WHERE id = $1", handed_back)
    store = JobStore(conn, "public")  # type: ignore[arg-type]
    claimed = {job.id: job for job in await store.claim_batch(["default"], "w", 2, 30.0)}
    assert await conn.fetchval("SELECT cancel_job($1)", cancelled_meanwhile) == "cancelling"
    written = await store.record_outcomes([Released(job_id, 1, "t", "default") for job_id in claimed])
    assert written == {handed_back, cancelled_meanwhile}
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, status, attempts, release_count, scheduled_at, finished_at FROM background_jobs"
        )
    }
    back = rows[handed_back]
    assert (back["status"], back["attempts"], back["release_count"]) == ("pending", 0, 1)
    assert back["scheduled_at"] == became_runnable  # not sent behind every job of its priority
    assert back["finished_at"] is None
    ended = rows[cancelled_meanwhile]
    assert (ended["status"], ended["attempts"], ended["release_count"]) == ("cancelled", 0, 0)
    assert ended["finished_at"] is not None


async def test_each_kind_of_outcome_is_written_one_way(conn: asyncpg.Connection) -> None:
    ids = await AsyncClient(conn).enqueue_many([NewJob("t", priority=9 - i, max_attempts=3) for i in range(7)])
    store = JobStore(conn, "public")  # type: ignore[arg-type]
    assert {job.id for job in await store.claim_batch(["default"], "w", 7, 30.0)} == set(ids)
    completed, with_result, retried, failed, dead, cancelled, stood_in = ids
    outcomes: list[Outcome] = [
        Completed(completed, 1, "t", "default"),
        Completed(with_result, 1, "t", "default", '{"n": 1}'),
        RetryAfter(retried, 1, "t", "default", 3600.0, "boom", "tb"),
        Failed(failed, 1, "t", "default", "bad input", "tb"),
        Dead(dead, 1, "t", "default", "no attempts left"),
        Cancelled(cancelled, 1, "t", "default"),
        RetryAfter(stood_in, 1, "t", "default", 3600.0, "unstorable", "tb").stand_in("could not be stored"),
    ]
    assert await store.record_outcomes(outcomes) == set(ids)
    rows = {
        r["id"]: tuple(r)[1:]
        for r in await conn.fetch(
            "SELECT id, status, last_error, last_error_traceback, result::text, scheduled_at > now(),"
            " finished_at IS NOT NULL FROM background_jobs"
        )
    }
    assert rows == {
        completed: ("completed", None, None, None, False, True),
        with_result: ("completed", None, None, '{"n": 1}', False, True),
        retried: ("pending", "boom", "tb", None, True, False),
        failed: ("failed", "bad input", "tb", None, False, True),
        dead: ("dead", "no attempts left", None, None, False, True),
        cancelled: ("cancelled", "cancelled by request", None, None, False, True),
        stood_in: ("pending", "could not be stored", None, None, True, False),
    }
