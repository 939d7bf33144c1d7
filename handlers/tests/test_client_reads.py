"""The backend document's client calls that had no backend: paged reads of a user's analyses and
photos (keyset, as the user), and last_active_at, written by the server in batches or by the user
for themselves only."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.tests.api_roles import ApiRoles
from handlers.tests.test_schema import ALICE, BOB, add_analysis

START = datetime(2026, 3, 1, tzinfo=UTC)


async def page_through(conn: asyncpg.Connection, call: str, *args: Any, page: int) -> list[list[asyncpg.Record]]:
    """Every page of a get_my_* function, following its cursor until a short page."""
    pages: list[list[asyncpg.Record]] = []
    cursor: tuple[Any, Any] = (None, None)
    while True:
        rows = await conn.fetch(call, *args, *cursor, page)
        pages.append(rows)
        if len(rows) < page:
            return pages
        cursor = (rows[-1]["created_at"], rows[-1]["id"])


async def test_analyses_page_by_page_newest_first_the_callers_only(api: ApiRoles, conn: asyncpg.Connection) -> None:
    expected: list[tuple[datetime, uuid.UUID, str]] = []
    for i in range(23):
        # pairs of rows share a created_at: the id breaks the tie, so no row is lost or repeated
        at = START + timedelta(hours=i // 2)
        kind = "glow_analyses" if i % 3 else "style_analyses"
        row_id = await add_analysis(conn, ALICE, 50 + i, table=kind, created_at=at)
        expected.append((at, row_id, kind.split("_")[0]))
    for i in range(5):
        await add_analysis(conn, BOB, 10, created_at=START + timedelta(hours=i))
    expected.sort(reverse=True)

    alice = await api.user(ALICE)
    call = "SELECT * FROM get_my_analyses($1, $2, $3, $4)"
    pages = await page_through(alice, call, None, page=10)
    assert [len(p) for p in pages] == [10, 10, 3]
    seen = [(r["created_at"], r["id"], r["kind"]) for p in pages for r in p]
    assert seen == expected
    # one kind only
    style = [r["id"] for p in await page_through(alice, call, "style", page=4) for r in p]
    assert style == [row_id for _, row_id, kind in expected if kind == "style"]
    # a row added after the first page was read neither repeats nor shifts the next one
    first = await alice.fetch(call, None, None, None, 5)
    await add_analysis(conn, ALICE, 99)
    second = await alice.fetch(call, None, first[-1]["created_at"], first[-1]["id"], 5)
    assert [r["id"] for r in second] == [row_id for _, row_id, _ in expected[5:10]]
    assert {r["kind"] for r in first} <= {"glow", "style"} and first[0]["image_path"] == "p.jpg"


async def test_photos_page_by_page(api: ApiRoles, conn: asyncpg.Connection) -> None:
    ids = []
    for i in range(7):
        ids.append(
            await conn.fetchval(
                "INSERT INTO progress_photos (user_id, bucket, storage_path, created_at) "
                "VALUES ($1, 'user-uploads', $2, $3) RETURNING id",
                ALICE,
                f"{ALICE}/{i}.jpg",
                START + timedelta(days=i % 4),
            )
        )
    await conn.execute(
        "INSERT INTO progress_photos (user_id, bucket, storage_path) VALUES ($1, 'user-uploads', $2)",
        BOB,
        f"{BOB}/x.jpg",
    )
    alice = await api.user(ALICE)
    pages = await page_through(alice, "SELECT * FROM get_my_progress_photos($1, $2, $3)", page=3)
    got = [(r["created_at"], r["id"]) for p in pages for r in p]
    assert got == sorted(((START + timedelta(days=i % 4), ids[i]) for i in range(7)), reverse=True)
    assert {r["storage_path"].split("/")[0] for p in pages for r in p} == {str(ALICE)}


@pytest.mark.parametrize(
    ("call", "args", "error"),
    [
        ("SELECT * FROM get_my_analyses($1, $2, $3, $4)", ("selfie", None, None, 10), "p_kind is glow, style"),
        ("SELECT * FROM get_my_analyses($1, $2, $3, $4)", (None, None, None, 0), "p_limit is 1 to 100"),
        ("SELECT * FROM get_my_analyses($1, $2, $3, $4)", (None, None, None, 101), "p_limit is 1 to 100"),
        ("SELECT * FROM get_my_analyses($1, $2, $3, $4)", (None, START, None, 10), "cursor is"),
        ("SELECT * FROM get_my_progress_photos($1, $2, $3)", (None, uuid.uuid4(), 10), "cursor is"),
        ("SELECT * FROM get_my_progress_photos($1, $2, $3)", (None, None, 1000), "p_limit is 1 to 100"),
    ],
)
async def test_paging_arguments_are_checked(api: ApiRoles, call: str, args: tuple[Any, ...], error: str) -> None:
    alice = await api.user(ALICE)
    with pytest.raises(asyncpg.InvalidParameterValueError, match=error):
        await alice.fetch(call, *args)


async def test_paging_needs_a_user(api: ApiRoles) -> None:
    nobody = await api.user(ALICE)
    await nobody.execute("SELECT set_config('request.jwt.claims', '{\"role\": \"authenticated\"}', false)")
    for call in ("SELECT * FROM get_my_analyses()", "SELECT * FROM get_my_progress_photos()"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="carries no user"):
            await nobody.fetch(call)


async def last_active(conn: asyncpg.Connection) -> dict[uuid.UUID, datetime | None]:
    return {r["id"]: r["last_active_at"] for r in await conn.fetch("SELECT id, last_active_at FROM profiles")}


async def test_the_server_marks_users_active_in_batches(api: ApiRoles, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO profiles (id) VALUES ($1), ($2)", ALICE, BOB)
    edge = await api.service_role()
    assert await edge.fetchval("SELECT record_user_activity($1)", [ALICE, BOB, uuid.uuid4()]) == 2
    marked = await last_active(conn)
    assert None not in marked.values()
    # marked within the last minute: left alone (a busy user's row is not rewritten every batch)
    assert await edge.fetchval("SELECT record_user_activity($1)", [ALICE, BOB]) == 0
    await conn.execute("UPDATE profiles SET last_active_at = now() - interval '2 minutes' WHERE id = $1", BOB)
    assert await edge.fetchval("SELECT record_user_activity($1)", [ALICE, BOB]) == 1
    with pytest.raises(asyncpg.InvalidParameterValueError, match="at most 1000"):
        await edge.fetchval("SELECT record_user_activity($1)", [uuid.uuid4() for _ in range(1001)])
    with pytest.raises(asyncpg.InvalidParameterValueError, match="at most 1000"):
        await edge.fetchval("SELECT record_user_activity(NULL)")


async def test_concurrent_batches_neither_wait_nor_deadlock(db_url: str, conn: asyncpg.Connection) -> None:
    users = [uuid.uuid4() for _ in range(200)]
    await conn.execute("INSERT INTO profiles (id) SELECT unnest($1::uuid[])", users)
    pool = await asyncpg.create_pool(db_url, min_size=8, max_size=8)
    assert pool is not None
    try:

        async def batch(seed: int) -> int:
            shuffled = random.Random(seed).sample(users, len(users))
            marked: int = await pool.fetchval("SELECT record_user_activity($1)", shuffled)
            return marked

        counts = await asyncio.gather(*(batch(seed) for seed in range(16)))
    finally:
        await pool.close()
    # each profile marked once, by whichever batch got to it first
    assert sum(counts) == len(users)
    assert await conn.fetchval("SELECT count(*) FROM profiles WHERE last_active_at IS NULL") == 0


async def test_a_user_marks_only_themselves(api: ApiRoles, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO profiles (id) VALUES ($1), ($2)", ALICE, BOB)
    alice = await api.user(ALICE)
    assert await alice.fetchval("SELECT touch_my_last_active()") is True
    assert await alice.fetchval("SELECT touch_my_last_active()") is False
    marked = await last_active(conn)
    assert marked[ALICE] is not None and marked[BOB] is None
    # the column is the server's: a user cannot set it, to a time of their choosing or at all
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await alice.execute("UPDATE profiles SET last_active_at = '2100-01-01' WHERE id = $1", ALICE)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await alice.execute("INSERT INTO profiles (id, last_active_at) VALUES ($1, now())", uuid.uuid4())
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function"):
        await alice.fetchval("SELECT record_user_activity($1)", [BOB])
    # the rest of the profile is still theirs to edit
    assert await alice.execute("UPDATE profiles SET display_name = 'Al', skin_type = 'dry' WHERE id = $1", ALICE) == (
        "UPDATE 1"
    )
    assert (await last_active(conn))[BOB] is None
