"""The claim must walk the claim index, whatever the statistics say: a plan that reads every
pending row makes each claim cost grow with the backlog.

The claim runs inside claim_jobs (migration 0010), so an EXPLAIN of the call shows only a
function scan; the buffers it counts are the function's, though, and a claim that walks the
index touches a few dozen pages where a scan of the table touches all of them. (The first call
on a connection also plans, and reads the catalog: the tests count a later one.)"""

from __future__ import annotations

import json

import asyncpg
import pytest

from jobrunner.store import JobStore

BACKLOG = 50_000


async def touched_by_claim(conn: asyncpg.Connection, limit: int, only_type: str | None = None) -> int:
    """Shared buffers one claim of `limit` jobs touched; rolled back, so the backlog stays."""
    claim = JobStore(conn, "public").queries.claim_batch
    transaction = conn.transaction()
    await transaction.start()
    try:
        [row] = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + claim, ["default"], "plan-check", limit, 30.0, [], only_type
        )
    finally:
        await transaction.rollback()
    plan = json.loads(row[0])[0]["Plan"]
    assert plan["Actual Rows"] == limit
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


async def table_pages(conn: asyncpg.Connection) -> int:
    pages: int = await conn.fetchval("SELECT pg_relation_size('background_jobs') / current_setting('block_size')::int")
    return pages


@pytest.mark.parametrize("paused", [False, True], ids=["nothing paused", "a type paused"])
async def test_a_claim_walks_the_claim_index_with_a_limited_type_on_record(
    conn: asyncpg.Connection, paused: bool
) -> None:
    # the shape that once turned the plan into "read and sort every pending row": one job type
    # in the backlog and a row in jobrunner_limit_state (any limited or paused type has one)
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {BACKLOG})")
    paused_until = "now() + interval '1 hour'" if paused else "NULL"
    await conn.execute(
        f"INSERT INTO jobrunner_limit_state (job_type, paused_until) VALUES ('analyze_image', {paused_until})"
    )
    await conn.execute("ANALYZE background_jobs; ANALYZE jobrunner_limit_state")
    pages = await table_pages(conn)
    for only_type in (None, "noop"):
        await touched_by_claim(conn, 10, only_type)  # the first call plans (catalog reads count)
        touched = await touched_by_claim(conn, 10, only_type)
        assert touched < pages / 4, f"a 10-job claim touched {touched} of the table's {pages} pages"


async def test_a_plan_made_on_an_empty_table_still_walks_the_index_once_it_fills(conn: asyncpg.Connection) -> None:
    # the function's plan is made once per connection: made while the queue was empty (a
    # daemon started on a fresh database), a plan free to choose would scan and sort the table
    await conn.execute("ANALYZE background_jobs")
    claim = JobStore(conn, "public").queries.claim_batch
    assert await conn.fetch(claim, ["default"], "plan-check", 10, 30.0, [], None) == []
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {BACKLOG})")
    pages = await table_pages(conn)
    touched = await touched_by_claim(conn, 10)
    assert touched < pages / 4, f"a 10-job claim touched {touched} of the table's {pages} pages"
