from __future__ import annotations

import asyncpg

from jobrunner import JobContext, handler
from tests.support import job_row, running_daemon


@handler("add")
async def add(ctx: JobContext[dict[str, int]]) -> int:
    return ctx.payload["a"] + ctx.payload["b"]


async def test_a_plain_insert_runs_to_completion(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload) VALUES ('add', '{\"a\": 2, \"b\": 3}') RETURNING id"
    )
    async with running_daemon(db_url, [add], burst=True) as daemon:
        pass
    row = await job_row(conn, job_id)
    assert row["status"] == "completed"
    assert row["result"] == "5"
    assert row["attempts"] == 1
    assert daemon.stats.completed == 1
