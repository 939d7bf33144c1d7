"""Partition upkeep with the clock moved months ahead (a `now` passed in, the database real): months
created ahead, rows that waited in the default partitions moved into their months atomically, a
long reader met with a bounded lock wait, a large backlog left to an operator."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.tests.test_schema import ALICE, add_analysis
from jobrunner_handlers.partitions import maintain_partitions, maintain_partitions_at
from tests.support import job_row, running_daemon

TABLES = ("api_metrics", "glow_analyses", "progress_photos", "style_analyses")


def month(offset: int) -> date:
    """The first day of the month `offset` months from this one (UTC)."""
    today = datetime.now(UTC).date()
    index = today.year * 12 + today.month - 1 + offset
    return date(index // 12, index % 12 + 1, 1)


def at(offset: int, day: int = 1, hour: int = 0) -> datetime:
    first = month(offset)
    return datetime(first.year, first.month, day, hour, tzinfo=UTC)


def name(table: str, offset: int) -> str:
    return f"{table}_p{month(offset):%Y_%m}"


async def add_photo(conn: asyncpg.Connection, created_at: datetime) -> uuid.UUID:
    photo_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO progress_photos (user_id, bucket, storage_path, note, created_at) "
        "VALUES ($1, 'uploads', $2, 'day 1', $3) RETURNING id",
        ALICE,
        f"{ALICE}/{created_at:%Y%m%d}.jpg",
        created_at,
    )
    return photo_id


async def add_metric(conn: asyncpg.Connection, created_at: datetime) -> uuid.UUID:
    metric_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO api_metrics (endpoint, status_code, response_time_ms, created_at) "
        "VALUES ('/analyze', 200, 42, $1) RETURNING id",
        created_at,
    )
    return metric_id


async def rows(conn: asyncpg.Connection) -> dict[uuid.UUID, tuple[str, dict[str, Any]]]:
    """Every row of the partitioned tables: id -> (the partition holding it, the row as JSON)."""
    found = {}
    for table in TABLES:
        query = f"SELECT id, tableoid::regclass::text AS part, to_jsonb(t)::text AS j FROM {table} AS t"
        for row in await conn.fetch(query):
            found[row["id"]] = (row["part"], json.loads(row["j"]))
    return found


async def test_months_ahead_with_the_clock_moved_ahead(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    # the migration made this month and the next three; nothing ran for months since: the rows of
    # months +4 to +7 went to the default partitions
    glow_5 = await add_analysis(conn, ALICE, 51, created_at=at(5, 3))
    glow_7 = [await add_analysis(conn, ALICE, 70 + i, created_at=at(7, 10 + i)) for i in range(2)]
    style_5 = await add_analysis(conn, ALICE, 55, table="style_analyses", created_at=at(5, 28, 23))
    photo_6 = await add_photo(conn, at(6, 15))
    metric_7 = await add_metric(conn, at(7, 1))
    # a clock far ahead, and a month older than any partition: neither gets a partition
    far = await add_analysis(conn, ALICE, 99, created_at=at(30, 2))
    old = await add_analysis(conn, ALICE, 11, created_at=at(-2, 2))
    before = await rows(conn)
    assert {before[i][0] for i in (glow_5, *glow_7, far, old)} == {"glow_analyses_default"}
    assert before[photo_6][0] == "progress_photos_default" and before[metric_7][0] == "api_metrics_default"

    now = at(7, 12, 9)
    result = await maintain_partitions_at(pool, months_ahead=3, max_move_rows=None, now=now)

    ahead = {name(table, offset) for table in TABLES for offset in range(7, 11)}
    waited = {name("glow_analyses", 5), name("style_analyses", 5), name("progress_photos", 6)}
    assert {c["partition"] for c in result["created"]} == ahead | waited
    moved = {c["partition"]: c["moved_rows"] for c in result["created"] if c["moved_rows"]}
    assert moved == {
        name("glow_analyses", 5): 1,
        name("glow_analyses", 7): 2,
        name("style_analyses", 5): 1,
        name("progress_photos", 6): 1,
        name("api_metrics", 7): 1,
    }
    assert result["moved_rows"] == 6 and result["lock_timeouts"] == [] and result["over_move_limit"] == []

    after = await rows(conn)
    # nothing lost, nothing duplicated, nothing changed: only the partitions holding them
    assert {i: r[1] for i, r in after.items()} == {i: r[1] for i, r in before.items()}
    assert after[glow_5][0] == name("glow_analyses", 5)
    assert {after[i][0] for i in glow_7} == {name("glow_analyses", 7)}
    assert after[style_5][0] == name("style_analyses", 5)
    assert after[photo_6][0] == name("progress_photos", 6)
    assert after[metric_7][0] == name("api_metrics", 7)
    assert after[far][0] == after[old][0] == "glow_analyses_default"
    # months with no rows and behind the clock get no partition
    assert await conn.fetchval("SELECT to_regclass($1)", name("glow_analyses", 4)) is None

    # a new partition is a full one: the parent's indexes, row security, no grant to app users
    for partition in (name("glow_analyses", 5), name("glow_analyses", 10)):
        facts = await conn.fetchrow(
            "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_indexes WHERE tablename = c.relname) AS indexes, "
            "has_table_privilege('authenticated', c.oid, 'SELECT') AS users_read, "
            "(SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'c') AS checks "
            "FROM pg_class c WHERE c.relname = $1",
            partition,
        )
        default = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'glow_analyses_default'")
        assert facts["relrowsecurity"] and facts["indexes"] == default and not facts["users_read"]
        # the parent's own checks only: the range check that spared ATTACH its scan is gone
        assert facts["checks"] == await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'glow_analyses'::regclass AND contype = 'c'"
        )

    # the next day, and a month later: only what the calendar adds
    assert (await maintain_partitions_at(pool, months_ahead=3, max_move_rows=None, now=now + timedelta(days=1)))[
        "created"
    ] == []
    later = await maintain_partitions_at(pool, months_ahead=3, max_move_rows=None, now=at(8, 1))
    assert {c["partition"] for c in later["created"]} == {name(table, 11) for table in TABLES}


async def test_the_job_keeps_the_months_ahead(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval("SELECT enqueue_job('maintain_partitions', '{\"months_ahead\": 5}')")
    async with running_daemon(db_url, [maintain_partitions], burst=True):
        pass
    job = await job_row(conn, job_id)
    assert job["status"] == "completed", job["last_error"]
    result = json.loads(job["result"])
    # the migration made this month and the next three
    assert {c["partition"] for c in result["created"]} == {name(t, offset) for t in TABLES for offset in (4, 5)}


async def test_a_long_reader_meets_a_bounded_wait_and_nothing_half_made(
    db_url: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    waiting = await add_analysis(conn, ALICE, 64, created_at=at(4, 20))
    reader = await asyncpg.connect(db_url)
    try:
        # an open transaction that read the table holds a lock on its default partition
        await reader.execute("BEGIN")
        await reader.fetchval("SELECT count(*) FROM glow_analyses")
        job_id = await conn.fetchval("SELECT enqueue_job('maintain_partitions', '{\"months_ahead\": 5}')")
        started = datetime.now(UTC)
        async with running_daemon(db_url, [maintain_partitions], burst=True):
            pass
        elapsed = (datetime.now(UTC) - started).total_seconds()
        job = await job_row(conn, job_id)
        # glow_analyses needs months +4 and +5: two waits of 2 s, then the retry is scheduled
        assert job["status"] == "pending" and "no lock within 2 s" in job["last_error"], job
        assert name("glow_analyses", 4) in job["last_error"] and name("glow_analyses", 5) in job["last_error"]
        assert elapsed < 30
        assert await conn.fetchval("SELECT to_regclass($1)", name("glow_analyses", 4)) is None
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM glow_analyses WHERE id = $1", waiting) == (
            "glow_analyses_default"
        )
        # the other tables did not wait for this one
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name("style_analyses", 4))
    finally:
        await reader.close()
    result = await maintain_partitions_at(pool, months_ahead=5, max_move_rows=None)
    assert {c["partition"]: c["moved_rows"] for c in result["created"]} == {
        name("glow_analyses", 4): 1,
        name("glow_analyses", 5): 0,
    }
    assert await conn.fetchval("SELECT tableoid::regclass::text FROM glow_analyses WHERE id = $1", waiting) == name(
        "glow_analyses", 4
    )


async def test_a_backlog_over_the_move_limit_is_left_to_an_operator(
    db_url: str, conn: asyncpg.Connection, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_PARTITION_MOVE_MAX_ROWS", "2")
    backlog = [await add_analysis(conn, ALICE, 40 + i, created_at=at(5, 1 + i)) for i in range(3)]
    job_id = await conn.fetchval("SELECT enqueue_job('maintain_partitions', '{\"months_ahead\": 5}')")
    async with running_daemon(db_url, [maintain_partitions], burst=True):
        pass
    job = await job_row(conn, job_id)
    assert job["status"] in ("failed", "dead"), job
    assert f"{name('glow_analyses', 5)} (3 rows)" in job["last_error"]
    assert "create_month_partition" in job["last_error"]
    assert await conn.fetchval("SELECT to_regclass($1)", name("glow_analyses", 5)) is None
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name("glow_analyses", 4))
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name("style_analyses", 5))
    # what the message says to run
    made = await conn.fetchrow("SELECT * FROM create_month_partition('glow_analyses', $1)", month(5))
    assert tuple(made) == (name("glow_analyses", 5), 3)
    holders = await conn.fetchval(
        "SELECT array_agg(DISTINCT tableoid::regclass::text) FROM glow_analyses WHERE id = ANY($1)", backlog
    )
    assert holders == [name("glow_analyses", 5)]


async def test_the_worker_role_keeps_partitions_and_nothing_else(conn: asyncpg.Connection) -> None:
    await add_analysis(conn, ALICE, 64, created_at=at(6, 2))
    await conn.execute("SET ROLE jobrunner_worker")
    due = await conn.fetch("SELECT parent::text AS parent, month, default_rows FROM partitions_due(3, $1)", at(5, 9))
    assert [(d["month"], d["default_rows"]) for d in due if d["parent"] == "glow_analyses"] == [
        (month(5), 0),
        (month(6), 1),
        (month(7), 0),
        (month(8), 0),
    ]
    assert tuple(await conn.fetchrow("SELECT * FROM create_month_partition('glow_analyses', $1, 10)", month(6))) == (
        name("glow_analyses", 6),
        1,
    )
    assert await conn.fetch("SELECT * FROM create_month_partition('glow_analyses', $1, 10)", month(6)) == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not one of the app's partitioned tables"):
        await conn.fetch("SELECT * FROM create_month_partition('background_jobs', $1)", month(6))
    with pytest.raises(asyncpg.RaiseError, match="months_ahead must be 0 to 120"):
        await conn.fetch("SELECT * FROM partitions_due(-1)")
    await conn.execute("RESET ROLE")
    for role in ("anon", "authenticated"):
        for function in ("partitions_due(integer, timestamptz)", "create_month_partition(regclass, date, bigint)"):
            assert not await conn.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, function)
