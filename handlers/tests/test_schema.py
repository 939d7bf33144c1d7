"""The app schema on a real database: row security, the rate limiter under concurrency, month
partitions across a boundary, the statistics view and the periodic jobs that maintain them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from jobrunner_handlers.periodic import cleanup_old_metrics, purge_expired_cache, refresh_user_statistics
from tests.support import job_row, running_daemon

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")


async def add_analysis(
    conn: asyncpg.Connection,
    user: uuid.UUID,
    score: float,
    *,
    table: str = "glow_analyses",
    created_at: datetime | None = None,
    areas: dict[str, float] | None = None,
) -> uuid.UUID:
    query = {
        "glow_analyses": "INSERT INTO glow_analyses (user_id, image_path, overall_score, area_scores, created_at) "
        "VALUES ($1, 'p.jpg', $2, $3::jsonb, coalesce($4, now())) RETURNING id",
        "style_analyses": "INSERT INTO style_analyses (user_id, image_path, overall_score, area_scores, created_at) "
        "VALUES ($1, 'p.jpg', $2, $3::jsonb, coalesce($4, now())) RETURNING id",
    }[table]
    analysis_id: uuid.UUID = await conn.fetchval(query, user, score, json.dumps(areas or {}), created_at)
    return analysis_id


async def as_user(conn: asyncpg.Connection, user: uuid.UUID | None, *, legacy: bool = False) -> None:
    """What PostgREST does for a request carrying the user's JWT."""
    await conn.execute("SET ROLE authenticated" if user else "SET ROLE anon")
    if user and legacy:
        await conn.execute("SELECT set_config('request.jwt.claim.sub', $1, false)", str(user))
    elif user:
        await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", json.dumps({"sub": str(user)}))


async def test_users_see_only_their_own_rows(conn: asyncpg.Connection) -> None:
    await add_analysis(conn, ALICE, 80)
    await add_analysis(conn, BOB, 60)
    await add_analysis(conn, BOB, 65, table="style_analyses")
    await conn.execute("INSERT INTO profiles (id, display_name) VALUES ($1, 'Alice'), ($2, 'Bob')", ALICE, BOB)
    await conn.execute(
        "INSERT INTO products (sku, name, category, active) VALUES ('on', 'On', 'serum', true), "
        "('off', 'Off', 'serum', false)"
    )

    await as_user(conn, ALICE)
    assert await conn.fetch("SELECT user_id, overall_score::float8 AS s FROM glow_analyses") == [(ALICE, 80.0)]
    assert await conn.fetchval("SELECT count(*) FROM style_analyses") == 0
    assert await conn.fetchval("SELECT string_agg(display_name, ',') FROM profiles") == "Alice"
    assert await conn.fetchval("SELECT string_agg(sku, ',') FROM products") == "on"
    # only the worker writes analyses
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("INSERT INTO glow_analyses (user_id, image_path, overall_score) VALUES ($1, 'x', 1)", ALICE)
    # the user's own uploads, and nobody else's
    await conn.execute(
        "INSERT INTO progress_photos (user_id, bucket, storage_path) VALUES ($1, 'user-uploads', $2)",
        ALICE,
        f"{ALICE}/a",
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await conn.execute(
            "INSERT INTO progress_photos (user_id, bucket, storage_path) VALUES ($1, 'user-uploads', $2)",
            BOB,
            f"{BOB}/b",
        )
    assert await conn.execute("UPDATE profiles SET display_name = 'x' WHERE id = $1", BOB) == "UPDATE 0"
    # a partition queried directly is locked down too
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM glow_analyses_default")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM ai_response_cache")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetchval("SELECT check_rate_limit($1, 'analysis')", BOB)
    await conn.execute("RESET ROLE")

    await as_user(conn, BOB, legacy=True)
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 1
    assert await conn.fetchval("SELECT count(*) FROM style_analyses") == 1
    await conn.execute("RESET ROLE")

    await as_user(conn, None)
    assert await conn.fetchval("SELECT count(*) FROM products") == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM glow_analyses")


async def test_the_worker_role_writes_analyses_and_runs_maintenance(conn: asyncpg.Connection) -> None:
    await conn.execute("SET ROLE jobrunner_worker")
    await add_analysis(conn, ALICE, 70)
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 1
    await conn.execute("SELECT refresh_user_statistics_cache()")
    assert await conn.fetchval("SELECT cleanup_expired_cache()") == 0
    assert await conn.fetchval("SELECT check_rate_limit($1, 'analysis')", ALICE) is True
    await conn.fetchval("SELECT create_upcoming_partitions(4)")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


async def where_is(conn: asyncpg.Connection, table: str, row_id: uuid.UUID) -> str | None:
    query = {
        "glow_analyses": "SELECT tableoid::regclass::text FROM glow_analyses WHERE id = $1",
        "api_metrics": "SELECT tableoid::regclass::text FROM api_metrics WHERE id = $1",
    }[table]
    found: str | None = await conn.fetchval(query, row_id)
    return found


async def test_month_partitions_across_a_month_boundary(conn: asyncpg.Connection) -> None:
    # the session's time zone must not move the boundary: months are UTC
    await conn.execute("SET TimeZone = 'America/Los_Angeles'")
    last_moment = utc(2019, 12, 31, 23, 59, 59) + timedelta(microseconds=999_999)
    december = await add_analysis(conn, ALICE, 50, created_at=last_moment)
    january = await add_analysis(conn, ALICE, 60, created_at=utc(2020, 1, 1))
    # no partition yet: both landed in the default partition, nothing failed
    assert await where_is(conn, "glow_analyses", december) == "glow_analyses_default"

    created = await conn.fetchval("SELECT create_upcoming_partitions(2, $1)", date(2019, 12, 1))
    assert "glow_analyses_p2019_12" in created and "glow_analyses_p2020_01" in created
    assert "api_metrics_p2020_01" in created and "progress_photos_p2019_12" in created
    assert await conn.fetchval("SELECT create_upcoming_partitions(2, $1)", date(2019, 12, 1)) == []
    # the rows moved out of the default partition into their months
    assert await where_is(conn, "glow_analyses", december) == "glow_analyses_p2019_12"
    assert await where_is(conn, "glow_analyses", january) == "glow_analyses_p2020_01"
    bounds = await conn.fetchrow(
        "SELECT range_start, range_end FROM month_partitions('glow_analyses') WHERE partition::text = $1",
        "glow_analyses_p2019_12",
    )
    assert (bounds["range_start"], bounds["range_end"]) == (utc(2019, 12, 1), utc(2020, 1, 1))
    # a new partition has the parent's indexes
    indexes = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'glow_analyses_p2019_12'")
    assert indexes == await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'glow_analyses_default'")

    dropped = await conn.fetchval("SELECT drop_month_partitions_before('glow_analyses', $1)", utc(2020, 1, 1))
    assert dropped == ["glow_analyses_p2019_12"]
    assert await where_is(conn, "glow_analyses", december) is None
    assert await where_is(conn, "glow_analyses", january) == "glow_analyses_p2020_01"
    # the months this migration created for today are still there
    this_month = datetime.now(UTC).strftime("%Y_%m")
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"glow_analyses_p{this_month}")


async def test_refresh_user_statistics_job_refreshes_the_view(db_url: str, conn: asyncpg.Connection) -> None:
    await add_analysis(conn, ALICE, 60, created_at=datetime.now(UTC) - timedelta(days=2))
    await add_analysis(conn, ALICE, 80)
    await add_analysis(conn, ALICE, 55, table="style_analyses")
    await add_analysis(conn, BOB, 40)
    assert await conn.fetchval("SELECT count(*) FROM user_statistics_cache") == 0
    job_ids = [await conn.fetchval("SELECT enqueue_job('refresh_user_statistics')") for _ in range(2)]
    async with running_daemon(db_url, [refresh_user_statistics], burst=True):
        pass
    for job_id in job_ids:
        row = await job_row(conn, job_id)
        assert row["status"] == "completed", row["last_error"]
        assert json.loads(row["result"]) == {"users": 2}
    stats = await conn.fetchrow("SELECT * FROM user_statistics_cache WHERE user_id = $1", ALICE)
    assert stats["glow_analyses"] == 2 and float(stats["glow_average_score"]) == 70.0
    assert float(stats["glow_latest_score"]) == 80.0 and float(stats["style_latest_score"]) == 55.0
    # the view has no row security: users read their row through get_my_statistics()
    await as_user(conn, BOB)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM user_statistics_cache")
    mine = await conn.fetch("SELECT user_id, glow_analyses FROM get_my_statistics()")
    assert [tuple(r) for r in mine] == [(BOB, 1)]


async def test_purge_and_metrics_jobs(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO ai_response_cache (cache_key, response, expires_at) VALUES "
        "('old', '{}', now() - interval '1 minute'), ('fresh', '{}', now() + interval '1 hour')"
    )
    old_month = (datetime.now(UTC).replace(day=1) - timedelta(days=100)).date()
    await conn.fetchval("SELECT create_month_partition('api_metrics', $1)", old_month)
    old_metric = await conn.fetchval(
        "INSERT INTO api_metrics (endpoint, status_code, response_time_ms, created_at) "
        "VALUES ('/analyze', 200, 12, $1) RETURNING id",
        datetime.combine(old_month, datetime.min.time(), UTC) + timedelta(days=3),
    )
    assert await where_is(conn, "api_metrics", old_metric) == f"api_metrics_p{old_month:%Y_%m}"
    await conn.execute(
        "INSERT INTO api_metrics (endpoint, status_code, response_time_ms, created_at) "
        "VALUES ('/analyze', 500, 40, now() - interval '400 days'), ('/analyze', 200, 9, now())"
    )
    purge = await conn.fetchval("SELECT enqueue_job('purge_expired_cache')")
    metrics = await conn.fetchval("SELECT enqueue_job('cleanup_old_metrics')")
    async with running_daemon(db_url, [purge_expired_cache, cleanup_old_metrics], burst=True):
        pass
    assert json.loads((await job_row(conn, purge))["result"]) == {"deleted": 1}
    assert await conn.fetchval("SELECT string_agg(cache_key, ',') FROM ai_response_cache") == "fresh"
    result = json.loads((await job_row(conn, metrics))["result"])
    assert result == {
        "dropped_partitions": [f"api_metrics_p{old_month:%Y_%m}"],
        "deleted_default_rows": 1,
        "deleted_rate_limit_windows": 0,
    }
    assert await conn.fetchval("SELECT count(*) FROM api_metrics") == 1


def test_every_query_the_handlers_name_exists() -> None:
    import re
    from pathlib import Path

    import jobrunner_handlers
    from jobrunner_handlers.queries import names

    package = Path(jobrunner_handlers.__file__).parent
    used = {m for f in package.glob("*.py") for m in re.findall(r'sql\("(\w+)"\)', f.read_text())}
    assert used and used <= set(names())
