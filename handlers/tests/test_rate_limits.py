"""Rate limits per endpoint class (the backend document's defaults), counted for the right user
whoever calls, with every refusal recorded and summed for the alert."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from handlers.tests.api_roles import ApiRoles
from handlers.tests.test_schema import ALICE, BOB


async def window_rows(conn: asyncpg.Connection, user: uuid.UUID, endpoint_class: str) -> list[tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT request_count, refused_count FROM api_rate_limits WHERE user_id = $1 AND endpoint = $2 "
        "ORDER BY window_start",
        user,
        endpoint_class,
    )
    return [(r["request_count"], r["refused_count"]) for r in rows]


async def test_the_documents_limits_are_encoded(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT endpoint_class, max_per_minute FROM api_rate_limit_classes")
    assert dict(rows) == {"analysis": 100, "general": 200, "uploads": 20}  # type: ignore[arg-type]


async def test_105_calls_admit_100_and_record_5_refusals(api: ApiRoles, conn: asyncpg.Connection) -> None:
    """The audit's case: request_count stayed at 100 after 105 calls, and nothing said 5 were refused."""
    edge = await api.service_role()
    async with edge.transaction():  # one minute's window, wherever the clock is
        answers = [await edge.fetchval("SELECT check_rate_limit($1, 'analysis')", ALICE) for _ in range(105)]
    assert answers == [True] * 100 + [False] * 5
    assert await window_rows(conn, ALICE, "analysis") == [(105, 5)]
    refusals = await edge.fetch("SELECT * FROM api_rate_limit_refusals('5 minutes')")
    assert [tuple(r) for r in refusals] == [("analysis", 105, 5, 1)]
    # another class and another user have windows of their own
    assert await edge.fetchval("SELECT check_rate_limit($1, 'general')", ALICE) is True
    assert await edge.fetchval("SELECT check_rate_limit($1, 'analysis')", BOB) is True


async def test_a_user_is_counted_as_themselves_and_only_so(api: ApiRoles, conn: asyncpg.Connection) -> None:
    alice = await api.user(ALICE)
    async with alice.transaction():
        answers = [await alice.fetchval("SELECT check_rate_limit('uploads')") for _ in range(21)]
    assert answers == [True] * 20 + [False]
    assert await window_rows(conn, ALICE, "uploads") == [(21, 1)]
    # naming another user is the service key's variant: refused to a user
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function check_rate_limit"):
        await alice.fetchval("SELECT check_rate_limit($1, 'uploads')", BOB)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await alice.fetch("SELECT * FROM api_rate_limits")
    # the JWT claim as older PostgREST sets it
    bob = await api.user(BOB, legacy=True)
    assert await bob.fetchval("SELECT check_rate_limit('uploads')") is True
    assert await window_rows(conn, BOB, "uploads") == [(1, 0)]
    assert await window_rows(conn, ALICE, "uploads") == [(21, 1)]
    # a request without a user, and anon, count for nobody
    nobody = await api.user(ALICE)
    await nobody.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"authenticated\"}', false)")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="carries no user"):
        await nobody.fetchval("SELECT check_rate_limit('uploads')")
    anon = await api.anon()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function check_rate_limit"):
        await anon.fetchval("SELECT check_rate_limit('uploads')")


async def test_arguments_are_checked(api: ApiRoles, conn: asyncpg.Connection) -> None:
    edge = await api.service_role()
    for endpoint_class in ("analyze", "", "x" * 10_000, None):
        with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown endpoint class"):
            await edge.fetchval("SELECT check_rate_limit($1, $2)", ALICE, endpoint_class)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="no user"):
        await edge.fetchval("SELECT check_rate_limit(NULL::uuid, 'general')")
    for window in ("0 seconds", "2 days"):
        with pytest.raises(asyncpg.InvalidParameterValueError, match="1 minute to 1 day"):
            await edge.fetch("SELECT * FROM api_rate_limit_refusals($1::text::interval)", window)
    assert await conn.fetchval("SELECT count(*) FROM api_rate_limits") == 0


async def test_a_limit_changed_in_the_table_applies_to_the_next_call(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE api_rate_limit_classes SET max_per_minute = 0 WHERE endpoint_class = 'general'")
    assert await conn.fetchval("SELECT check_rate_limit($1, 'general')", ALICE) is False
    await conn.execute("UPDATE api_rate_limit_classes SET max_per_minute = 5 WHERE endpoint_class = 'general'")
    async with conn.transaction():
        assert await conn.fetchval("SELECT check_rate_limit($1, 'general')", ALICE) is True
    assert sum(refused for _, refused in await window_rows(conn, ALICE, "general")) == 1


async def test_concurrent_calls_admit_exactly_the_limit(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO api_rate_limit_classes (endpoint_class, max_per_minute) VALUES ('burst', 15)")
    pool = await asyncpg.create_pool(db_url, min_size=12, max_size=12)
    assert pool is not None
    try:

        async def call() -> bool:
            allowed: bool = await pool.fetchval("SELECT check_rate_limit($1, 'burst')", ALICE)
            return allowed

        answers = await asyncio.gather(*(call() for _ in range(60)))
    finally:
        await pool.close()
    # per minute's window (the calls may straddle the turn of a minute): the first 15 admitted
    windows = await window_rows(conn, ALICE, "burst")
    assert sum(count for count, _ in windows) == 60
    assert answers.count(True) == sum(min(count, 15) for count, _ in windows)
    assert [refused for _, refused in windows] == [max(count - 15, 0) for count, _ in windows]
