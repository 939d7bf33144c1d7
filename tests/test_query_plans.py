"""Plans of the hot statements, whatever the statistics say. The claim must walk the claim
index: a plan that reads every pending row makes each claim cost grow with the backlog. The
statements on a worker's own jobs must find them by id: walking every running job makes each
outcome write cost grow with what all replicas run.

The claim runs inside claim_jobs (sql/functions/claim_jobs.sql) and the walks it calls, so an
EXPLAIN of the call shows only a function scan; the buffers it counts are the function's,
though, and a claim that walks the index touches a few dozen pages where a scan of the table
touches all of them. (The first call on a connection also plans, and reads the catalog: the
tests count a later one.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from jobrunner.limits import GlobalLimits
from jobrunner.store import ClaimPlan, JobStore, LimitedType

BACKLOG = 50_000


@asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that is always rolled back: the backlog stays as it was."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    finally:
        await transaction.rollback()


def claim_call(limit: int, only_type: str | None = None, *, rare_types: int = 0) -> tuple[str, tuple[object, ...]]:
    """The daemon's claim statement and its arguments: of the queue `default` (with
    `rare_types` limited types declared, none of them waiting), or of one job type limited in
    this process alone (the walk of a limited type)."""
    store = JobStore(None, "public")  # type: ignore[arg-type]
    if only_type is None:
        rare = [LimitedType(f"rare_{n}", 1, GlobalLimits(max_running=5)) for n in range(rare_types)]
        plan = ClaimPlan(["default"], limit, limited_limit=limit, limited_first=True, limited_types=rare)
    else:
        # the limited part alone: the unlimited part, going second, finds no room left
        plan = ClaimPlan(
            ["default"],
            limit,
            limited_limit=limit,
            limited_first=True,
            limited_types=[LimitedType(only_type, limit, None)],
        )
    return store.queries.claim, store.claim_arguments("plan-check", 30.0, plan)


async def touched_by_claim(
    conn: asyncpg.Connection, limit: int, only_type: str | None = None, *, rare_types: int = 0
) -> int:
    """Shared buffers one claim of `limit` jobs touched."""
    claim, arguments = claim_call(limit, only_type, rare_types=rare_types)
    async with rolled_back(conn):
        [row] = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + claim, *arguments)
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


async def test_a_claim_of_a_rare_type_does_not_walk_past_the_others(conn: asyncpg.Connection) -> None:
    # the claims of types with a per-process limit: none of them waits, 50,000 others do
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {BACKLOG})")
    await conn.execute("ANALYZE background_jobs")
    for rare_types in (0, 1, 10):
        await touched_by_claim(conn, 10, rare_types=rare_types)  # the first call plans
    without = await touched_by_claim(conn, 10)
    # the limited parts go first and find nothing; the unlimited part takes the 10 jobs
    with_one = await touched_by_claim(conn, 10, rare_types=1)
    with_ten = await touched_by_claim(conn, 10, rare_types=10)
    # each limited type with no job waiting costs one probe of the type index (a few pages)
    assert with_one - without <= 4, f"one limited type with no job waiting: {without} -> {with_one} pages"
    assert with_ten - without <= 40, f"ten limited types with no job waiting: {without} -> {with_ten} pages"


async def test_a_plan_made_on_an_empty_table_still_walks_the_index_once_it_fills(conn: asyncpg.Connection) -> None:
    # the function's plans are made once per connection: made while the queue was empty (a
    # daemon started on a fresh database), a plan free to choose would scan and sort the table.
    # One job waits, so that every statement of the walk runs (and is planned) on that table
    await conn.execute("INSERT INTO background_jobs (job_type) VALUES ('noop')")
    await conn.execute("ANALYZE background_jobs")
    claim, arguments = claim_call(10)
    async with rolled_back(conn):
        assert len(await conn.fetch(claim, *arguments)) == 1
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {BACKLOG})")
    pages = await table_pages(conn)
    touched = await touched_by_claim(conn, 10)
    assert touched < pages / 4, f"a 10-job claim touched {touched} of the table's {pages} pages"


async def all_running_after_stale_statistics(conn: asyncpg.Connection, jobs: int) -> None:
    """Statistics taken while nothing ran (an estimate of one running row), then `jobs` jobs
    running, most of them other replicas': walking background_jobs_lease_idx costs them all."""
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {jobs})")
    await conn.execute("ANALYZE background_jobs")
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, lease_expires_at = now() + interval '1 hour'"
    )


# the statements that look up this worker's own jobs by id, with their parameter types
BY_ID = {
    "extend_leases": "bigint[], int[], float8",
    "cancel_requested": "bigint[]",
    "set_progress": "bigint, int, jsonb",
}


@pytest.mark.parametrize("plan_cache_mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("statement", sorted(BY_ID))
async def test_own_jobs_are_found_by_id_not_by_walking_every_running_job(
    conn: asyncpg.Connection, statement: str, plan_cache_mode: str
) -> None:
    await all_running_after_stale_statistics(conn, 2000)
    await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
    query = getattr(JobStore(conn, "public").queries, statement)
    await conn.execute(f"PREPARE by_id ({BY_ID[statement]}) AS {query}")
    arguments = {
        "extend_leases": "'{1,2,3}', '{1,1,1}', 30",
        "cancel_requested": "'{1,2,3}'",
        "set_progress": "1, 1, '{}'",
    }[statement]
    try:
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN EXECUTE by_id({arguments})"))
    finally:
        await conn.execute("DEALLOCATE by_id; RESET plan_cache_mode")
    assert "background_jobs_lease_idx" not in plan, plan
    assert "Seq Scan on background_jobs" not in plan, plan
    assert "background_jobs_pkey" in plan, plan


async def test_outcome_writes_fetch_their_own_rows_not_every_running_job(conn: asyncpg.Connection) -> None:
    # record_outcomes is a function (sql/functions/record_outcomes.sql), so its plan is not in an outer EXPLAIN:
    # count the rows its index scans fetched instead, within one rolled-back transaction
    await all_running_after_stale_statistics(conn, 5000)
    record = JobStore(conn, "public").queries.record_outcomes
    arguments = ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1] * 10, [11], [1], ["failed"], [0.0], ["x"], ["x"], [None], [False])
    fetched = "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'background_jobs'"
    for _ in range(2):  # the first call plans; the second runs the plan every later call runs
        async with rolled_back(conn):
            before = await conn.fetchval(fetched)
            assert len(await conn.fetch(record, *arguments)) == 11
            rows_fetched = await conn.fetchval(fetched) - before
    # by id: each outcome's row, twice in a mixed batch (locked in id order, then updated);
    # through background_jobs_lease_idx: all 5,000 running, for each outcome
    assert rows_fetched <= 2 * 11, f"writing 11 outcomes fetched {rows_fetched} rows"


@pytest.mark.parametrize("shape", ["many waiting", "much history"])
async def test_the_queue_depth_sample_reads_the_partial_indexes_not_the_table(
    conn: asyncpg.Connection, shape: str
) -> None:
    # one statement over status IN ('pending', 'running') had no partial index to use: the
    # planner read the whole table (in parallel, when many jobs waited); the sample counts each
    # status through its own index (sample_queue_depth) however the statistics look
    waiting, finished = (BACKLOG, 0) if shape == "many waiting" else (100, BACKLOG)
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {waiting})")
    await conn.execute(
        "INSERT INTO background_jobs (job_type, status, attempts, started_at, finished_at) "
        f"SELECT 'old', 'completed', 1, now(), now() FROM generate_series(1, {finished})"
    )
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, lease_expires_at = now() + interval '1 hour' "
        "WHERE id IN (SELECT id FROM background_jobs WHERE status = 'pending' ORDER BY id LIMIT 7)"
    )
    await conn.execute("VACUUM ANALYZE background_jobs")
    sample = JobStore(conn, "public").queries.sample_queue_depth
    scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'background_jobs'"
    async with rolled_back(conn):
        before = await conn.fetchval(scans)
        rows = {(row["queue"], row["status"]): row["jobs"] for row in await conn.fetch(sample)}
        assert await conn.fetchval(scans) == before, "the queue-depth sample scanned the table"
    assert rows == {("default", "pending"): waiting - 7, ("default", "running"): 7}


async def test_the_oldest_runnable_age_is_zero_when_only_later_jobs_wait(conn: asyncpg.Connection) -> None:
    sample = JobStore(conn, "public").queries.sample_queue_depth
    await conn.execute(
        "INSERT INTO background_jobs (job_type, queue, scheduled_at) VALUES ('later', 'q', now() + interval '1 hour')"
    )
    [row] = await conn.fetch(sample)
    assert (row["queue"], row["status"], row["jobs"], row["oldest_runnable_seconds"]) == ("q", "pending", 1, 0.0)
    await conn.execute(
        "INSERT INTO background_jobs (job_type, queue, scheduled_at) VALUES"
        " ('due', 'q', now() - interval '90 seconds'), ('ancient', 'r', '-infinity')"
    )
    ages = {row["queue"]: row["oldest_runnable_seconds"] for row in await conn.fetch(sample)}
    assert 90 <= ages["q"] < 120
    # clamped to the age since 1970 rather than an infinite interval that breaks the sample
    assert ages["r"] > 50 * 365 * 86_400


async def scans_by_claim(conn: asyncpg.Connection, limit: int) -> dict[str, int]:
    """Scans (sequential or index) one claim made of each table, and how many jobs it took."""
    claim, arguments = claim_call(limit)
    scans = "SELECT relname, seq_scan + idx_scan FROM pg_stat_xact_user_tables"
    async with rolled_back(conn):
        before = dict(await conn.fetch(scans))
        taken = len(await conn.fetch(claim, *arguments))
        after = dict(await conn.fetch(scans))
    return {name: after[name] - before.get(name, 0) for name in after} | {"taken": taken}


async def test_paused_queues_cost_a_claim_one_probe(conn: asyncpg.Connection) -> None:
    # claim_jobs reads jobrunner_queue_pauses on every claim: one scan of a table of a few rows,
    # whether it names a queue of the claim or not, and a paused queue's backlog is never walked
    await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {BACKLOG})")
    await conn.execute("ANALYZE background_jobs")
    await scans_by_claim(conn, 10)  # the first call plans
    unpaused = await scans_by_claim(conn, 10)
    assert unpaused["jobrunner_queue_pauses"] == 1 and unpaused["taken"] == 10
    await conn.execute("INSERT INTO jobrunner_queue_pauses (queue, paused_by) VALUES ('elsewhere', 'test')")
    assert await scans_by_claim(conn, 10) == unpaused
    await conn.execute("INSERT INTO jobrunner_queue_pauses (queue, paused_by) VALUES ('default', 'test')")
    paused = await scans_by_claim(conn, 10)
    assert paused["jobrunner_queue_pauses"] == 1 and paused["taken"] == 0
    assert paused["background_jobs"] == 0, "the claim looked into a paused queue's backlog"
