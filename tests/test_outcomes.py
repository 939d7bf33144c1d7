"""record_outcomes: plain completions and every other outcome in one statement, each fenced
by the attempt it ran."""

from __future__ import annotations

import asyncpg

from jobrunner import AsyncClient, NewJob
from jobrunner.store import JobStore, Outcome


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
            Outcome(done, 1, "t", "default", "completed"),
            Outcome(retried, 1, "t", "default", "pending", retry_in=60.0, error="boom", traceback="tb"),
            Outcome(stale, 2, "t", "default", "completed"),  # an attempt this worker does not hold
            Outcome(done_after_failure, 1, "t", "default", "completed"),
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
