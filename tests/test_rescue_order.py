"""A job whose worker died keeps its place in the queue.

Sent back with scheduled_at = now(), it would wait behind every job of its priority, and the
wait after a worker's death would grow with the backlog. It keeps its scheduled_at, as a
released job does, and the wait is bounded by the lease and the rescue interval. Its attempts
still count: a job that kills every worker that runs it dies at max_attempts, and others run
beside it meanwhile.
"""

from __future__ import annotations

import asyncpg

from jobrunner.store import JobStore
from tests.support import wait_for

LEASE = 0.3
EXPIRED = "SELECT bool_and(lease_expires_at < now()) FROM background_jobs WHERE status = 'running'"


async def test_a_rescued_job_is_claimed_before_the_newer_backlog(conn: asyncpg.Connection) -> None:
    store = JobStore(conn, "public")  # type: ignore[arg-type]
    first = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('victim') RETURNING id")
    [claimed] = await store.claim_batch(["default"], "dead-worker", 1, LEASE)
    assert claimed.id == first
    await conn.execute("INSERT INTO background_jobs (job_type) SELECT 'backlog' FROM generate_series(1, 500)")
    await wait_for(conn, EXPIRED)  # the dead worker never renews its lease
    [rescued] = await store.rescue_expired_leases(100)
    assert (rescued.id, rescued.status, rescued.attempts) == (first, "pending", 1)
    [next_job] = await store.claim_batch(["default"], "live-worker", 1, 30.0)
    assert (next_job.id, next_job.job_type, next_job.attempt) == (first, "victim", 2)


async def test_a_job_that_kills_every_worker_dies_at_max_attempts_and_starves_no_one(
    conn: asyncpg.Connection,
) -> None:
    store = JobStore(conn, "public")  # type: ignore[arg-type]
    killer = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, max_attempts, priority) VALUES ('killer', 3, 10) RETURNING id"
    )
    await conn.execute("INSERT INTO background_jobs (job_type) SELECT 'other' FROM generate_series(1, 100)")
    others_started = 0
    for attempt in (1, 2, 3):
        jobs = await store.claim_batch(["default"], f"worker-{attempt}", 5, LEASE)
        assert (jobs[0].id, jobs[0].attempt) == (killer, attempt)
        others_started += len(jobs) - 1
        # the worker dies with the killer's attempt; the others it held finish elsewhere
        await conn.execute(
            "UPDATE background_jobs SET status = 'completed' WHERE job_type = 'other' AND status = 'running'"
        )
        await wait_for(conn, EXPIRED)
        [rescued] = await store.rescue_expired_leases(100)
        assert rescued.id == killer
    assert (rescued.status, rescued.attempts) == ("dead", 3)
    assert others_started == 12
    jobs = await store.claim_batch(["default"], "worker-4", 5, 30.0)
    assert killer not in [j.id for j in jobs] and len(jobs) == 5
