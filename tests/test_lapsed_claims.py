"""A claim whose rows arrive after their lease ran out is not started.

The lease of a claimed job starts when the claim statement starts. A claim held up for longer
than the lease (waiting behind a table lock, a stalled network, a paused process) returns jobs
another replica may already have rescued and started: running them too would run the job twice
and overrun a global limit. The daemon hands such jobs back instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from jobrunner import JobContext, handler
from tests.support import running_daemon, wait_for

LEASE = 1.0
leases_at_start: list[bool] = []


@handler("lease_probe")
async def lease_probe(ctx: JobContext[Any]) -> None:
    # what the handler holds when it starts: a live lease on its own attempt, or not
    async with ctx.pool.acquire() as conn:
        leases_at_start.append(
            await conn.fetchval(
                "SELECT lease_expires_at > clock_timestamp() FROM background_jobs WHERE id = $1 AND attempts = $2",
                ctx.job.id,
                ctx.job.attempt,
            )
        )


async def test_jobs_whose_lease_ran_out_before_the_claim_returned_are_handed_back(
    db_url: str, conn: asyncpg.Connection
) -> None:
    leases_at_start.clear()
    async with running_daemon(
        db_url, [lease_probe], lease_seconds=LEASE, rescue_interval=60, poll_interval=0.05, listen=False
    ):
        blocker = await asyncpg.connect(db_url)
        try:
            # the job and a lock in one transaction: the daemon's next claim starts (its lease
            # clock with it), waits behind the lock, and sees the job once the lock goes
            await blocker.execute("BEGIN")
            job_id = await blocker.fetchval(
                "INSERT INTO background_jobs (job_type) VALUES ('lease_probe') RETURNING id"
            )
            await blocker.execute("LOCK TABLE background_jobs IN ACCESS EXCLUSIVE MODE")
            await wait_for(
                conn,
                "SELECT count(*) > 0 FROM pg_locks WHERE relation = 'background_jobs'::regclass AND NOT granted",
                timeout=10,
            )
            await asyncio.sleep(LEASE * 1.5)  # the stall being simulated: longer than the lease
            await blocker.execute("COMMIT")
        finally:
            await blocker.close()
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed")
    assert leases_at_start and all(leases_at_start), leases_at_start
    assert await conn.fetchval("SELECT release_count FROM background_jobs WHERE id = $1", job_id) >= 1
