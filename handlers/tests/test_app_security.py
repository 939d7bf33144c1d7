"""The app schema under attack, by real logins: a user pointing an upload row at another user's
files, the worker role aiming the partition functions at tables they do not exist for, Supabase's
anon/authenticated touching the app's sequences, and every SECURITY DEFINER function's search_path.

A "user" is what PostgREST makes of a request: a LOGIN role that is a member of `authenticated`,
with the verified JWT's claims in `request.jwt.claims` (so `auth.uid()` is its `sub`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from handlers.tests.test_schema import ALICE, BOB
from tests.test_security import QUEUE_TABLES, as_user, login_role, supabase_db

__all__ = ["login_role", "supabase_db"]  # fixtures used here, defined in tests/test_security.py

LoginRole = Callable[[str], Awaitable[str]]


async def user_connection(db_url: str, login_role: LoginRole, user: uuid.UUID) -> asyncpg.Connection:
    """A real login as a member of `authenticated`, carrying `user` as the JWT's sub."""
    conn = await asyncpg.connect(as_user(db_url, await login_role("authenticated")))
    await conn.execute(
        "SELECT set_config('request.jwt.claims', $1, false)", json.dumps({"sub": str(user), "role": "authenticated"})
    )
    return conn


@pytest.fixture
async def alice(db_url: str, login_role: LoginRole) -> AsyncIterator[asyncpg.Connection]:
    conn = await user_connection(db_url, login_role, ALICE)
    try:
        yield conn
    finally:
        await conn.close()


# -- item 2: upload rows point into the user's own folder of the uploads bucket ----------------

INSERT_PHOTO = "INSERT INTO progress_photos (user_id, bucket, storage_path) VALUES ($1, $2, $3)"


@pytest.mark.parametrize(
    ("bucket", "path"),
    [
        ("user-uploads", f"{BOB}/selfie.jpg"),  # another user's folder
        ("user-uploads", f"{ALICE}/../{BOB}/selfie.jpg"),  # climbing out of one's own
        ("user-uploads", f"{ALICE}/./x/../../{BOB}/a.jpg"),
        ("user-uploads", f"{ALICE}/%2e%2e/{BOB}/a.jpg"),  # encoded
        ("user-uploads", f"/{ALICE}/a.jpg"),  # absolute
        ("user-uploads", f"{ALICE}//a.jpg"),
        ("user-uploads", f"{ALICE}\\..\\{BOB}\\a.jpg"),
        ("user-uploads", f"{ALICE}/..\\{BOB}\\a.jpg"),  # a backslash inside the folder
        ("user-uploads", f"{ALICE}/a\nb.jpg"),
        ("user-uploads", f"{ALICE}"),  # the folder itself, i.e. everything in it
        ("user-uploads", ""),
        ("archive", f"{ALICE}/a.jpg"),  # another bucket
        ("avatars", f"{ALICE}/a.jpg"),
    ],
)
async def test_a_user_cannot_insert_an_upload_row_outside_their_folder(
    alice: asyncpg.Connection, bucket: str, path: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await alice.execute(INSERT_PHOTO, ALICE, bucket, path)
    assert await alice.fetchval("SELECT count(*) FROM progress_photos") == 0


async def test_a_user_sets_only_the_columns_that_are_theirs(
    alice: asyncpg.Connection, conn: asyncpg.Connection
) -> None:
    # created_at decides when cleanup deletes; thumbnails name objects cleanup deletes: server-set
    for column, value in [
        ("created_at", "2000-01-01T00:00:00Z"),
        ("thumbnails", json.dumps([{"bucket": "user-uploads", "path": f"{BOB}/selfie.jpg"}])),
        ("processed_at", "2000-01-01T00:00:00Z"),
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await alice.execute(
                f"INSERT INTO progress_photos (user_id, bucket, storage_path, {column}) "
                f"VALUES ($1, 'user-uploads', $2, $3::text::{'jsonb' if column == 'thumbnails' else 'timestamptz'})",
                ALICE,
                f"{ALICE}/a.jpg",
                value,
            )
    await alice.execute(INSERT_PHOTO, ALICE, "user-uploads", f"{ALICE}/2025/selfie.jpg")
    row = await conn.fetchrow("SELECT * FROM progress_photos")
    assert row is not None and abs((row["created_at"] - await conn.fetchval("SELECT now()")).total_seconds()) < 60
    assert json.loads(row["thumbnails"]) == []
    # UPDATE: the note only; the row cannot be moved to another path, bucket, time or thumbnail list
    assert await alice.execute("UPDATE progress_photos SET note = 'day 1'") == "UPDATE 1"
    for assignment in [
        f"storage_path = '{BOB}/selfie.jpg'",
        "bucket = 'archive'",
        "created_at = '2000-01-01'",
        f"""thumbnails = '[{{"path": "{BOB}/selfie.jpg"}}]'""",
        f"user_id = '{BOB}'",
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await alice.execute(f"UPDATE progress_photos SET {assignment}")
    assert await conn.fetchval("SELECT storage_path FROM progress_photos") == f"{ALICE}/2025/selfie.jpg"


async def test_a_user_cannot_write_paths_into_other_app_tables(alice: asyncpg.Connection) -> None:
    # analyses carry image paths and are written by the worker alone; a profile's avatar_url only
    # ever keeps an object (cleanup_old_data counts it as a reference; nothing reads through it)
    for table in ("glow_analyses", "style_analyses"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await alice.execute(
                f"INSERT INTO {table} (user_id, image_path, overall_score) VALUES ($1, $2, 1)", ALICE, f"{BOB}/x.jpg"
            )
    storage_columns = await alice.fetch(
        "SELECT table_name, column_name FROM information_schema.column_privileges "
        "WHERE grantee = 'authenticated' AND privilege_type IN ('INSERT', 'UPDATE') "
        "AND (column_name ~ '(path|bucket|url|avatar|thumbnail)') ORDER BY 1, 2"
    )
    assert [tuple(r) for r in storage_columns] == [
        ("profiles", "avatar_url"),
        ("profiles", "avatar_url"),
        ("progress_photos", "bucket"),
        ("progress_photos", "storage_path"),
    ]


# -- item 3: SECURITY DEFINER functions take only what they exist for --------------------------


async def test_every_security_definer_function_pins_its_search_path(conn: asyncpg.Connection) -> None:
    functions = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS name, n.nspname, coalesce(p.proconfig, '{}') AS config "
        "FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 2, 1"
    )
    # the core's enqueue functions and the app's partition and maintenance functions at least
    names = {f["name"].split("(")[0] for f in functions}
    assert {"enqueue_job", "partition_rows_page", "protect_partition", "get_my_statistics"} <= names
    unpinned = [
        f"{f['nspname']}.{f['name']} {list(f['config'])}"
        for f in functions
        if "search_path=pg_catalog, pg_temp" not in f["config"]
    ]
    assert unpinned == [], "SECURITY DEFINER functions without search_path=pg_catalog, pg_temp"


@pytest.fixture
async def worker(db_url: str, login_role: LoginRole, conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A real login of the daemon's role, in a database that has an auth.users table as Supabase does."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS auth.users (id uuid PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), "
        "email text, encrypted_password text)"
    )
    await conn.execute(
        "INSERT INTO auth.users (id, email, encrypted_password) VALUES ($1, 'alice@example.com', '$2a$10$hash')", ALICE
    )
    worker_conn = await asyncpg.connect(as_user(db_url, await login_role("jobrunner_worker")))
    try:
        yield worker_conn
    finally:
        await worker_conn.close()


@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM partition_rows_page({auth_users}::oid::regclass, NULL, NULL, 10)",
        "SELECT * FROM partition_rows_page('products'::regclass, NULL, NULL, 10)",
        "SELECT * FROM partition_rows_page('glow_analyses'::regclass, NULL, NULL, 10)",  # the parent, all months
        "SELECT protect_partition('products'::regclass)",
        "SELECT protect_partition({auth_users}::oid::regclass)",
        "SELECT protect_partition('glow_analyses'::regclass)",
        "SELECT create_month_partition('products'::regclass, '2030-01-01')",
        "SELECT create_month_partition('background_jobs'::regclass, '2030-01-01')",
        "SELECT drop_month_partitions_before({auth_users}::oid::regclass, now())",
        "SELECT drop_month_partition('products'::regclass, {auth_users}::oid::regclass)",
    ],
)
async def test_the_worker_cannot_aim_partition_functions_at_other_tables(
    worker: asyncpg.Connection, conn: asyncpg.Connection, call: str
) -> None:
    # by oid, as the attack did: the worker has no USAGE on schema auth, so no name resolves there
    call = call.format(auth_users=await conn.fetchval("SELECT 'auth.users'::regclass::oid"))
    acl_before = await conn.fetch("SELECT oid, relacl::text, relrowsecurity FROM pg_class ORDER BY oid")
    with pytest.raises(asyncpg.PostgresError, match=r"is not a (month )?partition|is not one of the app's partitioned"):
        await worker.fetch(call)
    assert await conn.fetch("SELECT oid, relacl::text, relrowsecurity FROM pg_class ORDER BY oid") == acl_before
    assert await conn.fetchval("SELECT count(*) FROM auth.users") == 1


async def test_the_worker_still_keeps_and_archives_partitions(worker: asyncpg.Connection) -> None:
    created = await worker.fetchval(
        "SELECT partition_name FROM create_month_partition('glow_analyses'::regclass, '2031-05-01')"
    )
    assert created == "glow_analyses_p2031_05"
    assert (
        await worker.fetch("SELECT * FROM partition_rows_page('glow_analyses_p2031_05'::regclass, NULL, NULL, 10)")
        == []
    )
    await worker.execute("SELECT protect_partition('glow_analyses_p2031_05'::regclass)")
    await worker.execute("SELECT drop_month_partition('glow_analyses'::regclass, 'glow_analyses_p2031_05'::regclass)")
    assert await worker.fetchval("SELECT to_regclass('glow_analyses_p2031_05')") is None


# -- item 4: the app's sequences under Supabase's default privileges ---------------------------


async def app_sequences(conn: asyncpg.Connection) -> list[str]:
    """Every sequence owned by a table the app's migrations created (identity and serial alike)."""
    rows = await conn.fetch(
        "SELECT s.oid::regclass::text AS seq FROM pg_class AS s "
        "JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "WHERE s.relkind = 'S' AND NOT d.refobjid::regclass::text = ANY($1::text[]) ORDER BY 1",
        list(QUEUE_TABLES),
    )
    return [r["seq"] for r in rows]


@pytest.mark.parametrize("group", ["anon", "authenticated"])
async def test_supabase_roles_cannot_move_the_apps_sequences(
    supabase_db: str, login_role: LoginRole, group: str
) -> None:
    admin = await asyncpg.connect(supabase_db)
    try:
        sequences = await app_sequences(admin)
        assert "ai_response_cache_id_seq" in sequences
        before = {seq: await admin.fetchval(f"SELECT last_value FROM {seq}") for seq in sequences}
    finally:
        await admin.close()
    user = await asyncpg.connect(as_user(supabase_db, await login_role(group)))
    try:
        await user.execute("SELECT set_config('request.jwt.claims', $1, false)", json.dumps({"sub": str(ALICE)}))
        for seq in sequences:
            for attack in (f"SELECT setval('{seq}', 9223372036854775807)", f"SELECT nextval('{seq}')"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await user.fetchval(attack)
    finally:
        await user.close()
    admin = await asyncpg.connect(supabase_db)
    try:
        assert {seq: await admin.fetchval(f"SELECT last_value FROM {seq}") for seq in sequences} == before
        # the worker still inserts into the table behind it
        await admin.execute("SET ROLE jobrunner_worker")
        await admin.execute("INSERT INTO ai_response_cache (cache_key, response, expires_at) VALUES ('k', '{}', now())")
    finally:
        await admin.close()
