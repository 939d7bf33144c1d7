"""The pruner deletes finished jobs past the retention, in batches, and nothing else."""

from __future__ import annotations

import asyncpg
import structlog

from jobrunner.daemon.maintenance.pruner import FinishedJobPruner
from jobrunner.store import JobStore


async def test_old_finished_jobs_go_in_batches_and_everything_else_stays(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        INSERT INTO background_jobs (job_type, status, finished_at)
        SELECT 'old', s, now() - interval '2 hours'
        FROM unnest(ARRAY['completed', 'failed', 'dead', 'cancelled']) AS s, generate_series(1, 3);
        INSERT INTO background_jobs (job_type, status, finished_at) VALUES ('recent', 'completed', now());
        INSERT INTO background_jobs (job_type) VALUES ('waiting');
        """
    )
    async with asyncpg.create_pool(db_url, min_size=1, max_size=2) as pool:
        pruner = FinishedJobPruner(JobStore(pool, "public"), 3600.0, 60.0, structlog.get_logger(), batch=5)
        assert await pruner.prune_once() == 12  # three batches: 5, 5, 2
    rows = await conn.fetch("SELECT job_type FROM background_jobs ORDER BY job_type")
    assert [r["job_type"] for r in rows] == ["recent", "waiting"]
