"""Migrations on an empty database: once, concurrently, per schema, function files applied again
when they change, and the privileges they set."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from jobrunner import AsyncClient, JobContext, NewJob, handler
from jobrunner.migrate import (
    MigrationError,
    MigrationSet,
    discover_migration_sets,
    migrate,
    pending_migrations,
    plan_for_empty_database,
)
from tests.support import running_daemon, wait_for


def names(sets: list[MigrationSet]) -> list[str]:
    return [step.name for step in plan_for_empty_database("public", sets) if step.name is not None]


# what `migrate` applies by default: the core's migrations and function files, then the
# installed plugins'
ALL = names(discover_migration_sets())
CORE = names([MigrationSet.core()])


@pytest.fixture
async def empty_conn(empty_db_url: str) -> Any:
    connection = await asyncpg.connect(empty_db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_migrate_from_scratch_then_nothing(empty_conn: asyncpg.Connection) -> None:
    assert sorted(await pending_migrations(empty_conn, "public")) == sorted(ALL)
    assert await migrate(empty_conn, "public") == ALL
    assert await pending_migrations(empty_conn, "public") == []
    assert await empty_conn.fetchval("SELECT to_regclass('public.background_jobs') IS NOT NULL")
    assert await empty_conn.fetchval("SELECT to_regproc('public.enqueue_job') IS NOT NULL")
    assert await migrate(empty_conn, "public") == []
    # the numbered migrations in order, the function files the baseline calls at its marker line
    # right after it, then every other function file once
    numbered = [f"jobrunner/{m.version:04d}_{m.name}" for m in MigrationSet.core().items]
    assert CORE[:2] == ["jobrunner/0001_baseline", "jobrunner/functions/background_jobs_notify"]
    assert [name for name in CORE if "/functions/" not in name] == numbered
    assert sorted(name for name in CORE if "/functions/" in name) == sorted(
        f"jobrunner/functions/{f.name}" for f in MigrationSet.core().functions
    )
    rows = await empty_conn.fetch("SELECT component, version, name FROM jobrunner_migrations")
    assert sorted(
        f"{r['component']}/{r['version']:04d}_{r['name']}"
        if r["version"] is not None
        else f"{r['component']}/functions/{r['name']}"
        for r in rows
    ) == sorted(ALL)


async def test_concurrent_migrations_apply_each_once(empty_db_url: str) -> None:
    conns = [await asyncpg.connect(empty_db_url) for _ in range(5)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(migrate(c, "public") for c in conns)), 30)
        assert Counter(name for applied in results for name in applied) == Counter(ALL)
        assert sorted(results, key=len)[-1] == ALL  # one replica did it all, in order
        assert await conns[0].fetchval("SELECT count(*) FROM jobrunner_migrations") == len(ALL)
        # the advisory lock is free again: nobody is left holding it
        assert (
            await conns[0].fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            == 0
        )
    finally:
        for c in conns:
            await c.close()


async def test_a_changed_migration_is_refused(empty_db_url: str, empty_conn: asyncpg.Connection) -> None:
    await migrate(empty_conn, "public")
    await empty_conn.execute("UPDATE jobrunner_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="0001_baseline was changed after it was applied"):
        await migrate(empty_conn, "public")
    # the failed run let go of the migration lock: another replica is not blocked
    other = await asyncpg.connect(empty_db_url)
    try:
        with pytest.raises(MigrationError):
            await asyncio.wait_for(migrate(other, "public"), 5)
    finally:
        await other.close()


async def test_plugin_migrations_apply_once_and_refuse_edits(empty_conn: asyncpg.Connection, tmp_path: Path) -> None:
    plugin_file = tmp_path / "0001_plugin_table.sql"
    plugin_file.write_text("CREATE TABLE {schema}.plugin_things (id int);")
    plugin = MigrationSet.from_directory("plugin", tmp_path)
    assert await migrate(empty_conn, "public", [MigrationSet.core(), plugin]) == [*CORE, "plugin/0001_plugin_table"]
    assert await migrate(empty_conn, "public", [MigrationSet.core(), plugin]) == []
    assert await empty_conn.fetchval("SELECT to_regclass('public.plugin_things') IS NOT NULL")

    plugin_file.write_text("CREATE TABLE {schema}.plugin_things (id bigint);")
    with pytest.raises(MigrationError, match="plugin 0001_plugin_table was changed"):
        await migrate(empty_conn, "public", [MigrationSet.from_directory("plugin", tmp_path)])


async def test_a_failing_migration_leaves_nothing_behind(empty_conn: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "0001_half.sql").write_text("CREATE TABLE {schema}.half (id int); SELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(empty_conn, "public", [MigrationSet.from_directory("broken", tmp_path)])
    assert await empty_conn.fetchval("SELECT to_regclass('public.half')") is None
    # one transaction for the whole run: not even the bookkeeping table is left
    assert await empty_conn.fetchval("SELECT to_regclass('public.jobrunner_migrations')") is None
    assert (
        await empty_conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        == 0
    )


# -- function files ------------------------------------------------------------------------


def plugin_set(root: Path, migrations: dict[str, str], functions: dict[str, str]) -> MigrationSet:
    """A plugin's MigrationSet from files written under root/migrations and root/functions."""
    for folder, files in (("migrations", migrations), ("functions", functions)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / folder / name).write_text(text)
    return MigrationSet.from_directory("plugin", root / "migrations", root / "functions")


TABLE = {"0001_things.sql": "CREATE TABLE {schema}.things (id int);"}
COUNT_THINGS = (
    "CREATE OR REPLACE FUNCTION {schema}.count_things() RETURNS bigint LANGUAGE sql"
    " AS $$ SELECT count(*) FROM {schema}.things $$;"
)


async def test_a_function_file_is_applied_again_when_it_changes(empty_conn: asyncpg.Connection, tmp_path: Path) -> None:
    plugin = plugin_set(tmp_path, TABLE, {"count_things.sql": COUNT_THINGS, "other.sql": "SELECT 1;"})
    assert await migrate(empty_conn, "public", [plugin]) == [
        "plugin/0001_things",
        "plugin/functions/count_things",
        "plugin/functions/other",
    ]
    assert await migrate(empty_conn, "public", [plugin]) == []

    (tmp_path / "functions" / "count_things.sql").write_text(COUNT_THINGS.replace("count(*)", "count(*) + 100"))
    changed = MigrationSet.from_directory("plugin", tmp_path / "migrations", tmp_path / "functions")
    assert await pending_migrations(empty_conn, "public", [changed]) == ["plugin/functions/count_things"]
    # only the changed file, and the next run nothing
    assert await migrate(empty_conn, "public", [changed]) == ["plugin/functions/count_things"]
    assert await empty_conn.fetchval("SELECT count_things()") == 100
    assert await migrate(empty_conn, "public", [changed]) == []
    recorded = await empty_conn.fetchval(
        "SELECT checksum FROM jobrunner_migrations WHERE component = 'plugin' AND name = 'count_things'"
    )
    assert recorded == changed.functions[0].checksum != plugin.functions[0].checksum


async def test_function_files_follow_their_requires_lines(empty_conn: asyncpg.Connection, tmp_path: Path) -> None:
    # a SQL-language body is checked when it is created: `a` calls `b`, which sorts after it
    calls_b = "CREATE FUNCTION {schema}.a() RETURNS int LANGUAGE sql AS $$ SELECT {schema}.b() + 1 $$;"
    b = "CREATE OR REPLACE FUNCTION {schema}.b() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;"
    without = plugin_set(tmp_path / "without", TABLE, {"a.sql": calls_b, "b.sql": b})
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(empty_conn, "public", [without])

    ordered = plugin_set(tmp_path / "with", TABLE, {"a.sql": "-- requires: b\n" + calls_b, "b.sql": b})
    assert await migrate(empty_conn, "public", [ordered]) == [
        "plugin/0001_things",
        "plugin/functions/b",
        "plugin/functions/a",
    ]
    assert await empty_conn.fetchval("SELECT a()") == 2


async def test_a_migration_calls_function_files_at_its_marker_line(
    empty_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    migration = (
        "CREATE TABLE {schema}.things (id int);\n"
        "-- jobrunner:functions count_things\n"
        "CREATE TABLE {schema}.counted AS SELECT {schema}.count_things() AS n;\n"
    )
    plugin = plugin_set(
        tmp_path, {"0001_things.sql": migration}, {"count_things.sql": COUNT_THINGS, "z.sql": "SELECT 1;"}
    )
    assert await migrate(empty_conn, "public", [plugin]) == [
        "plugin/0001_things",
        "plugin/functions/count_things",
        "plugin/functions/z",
    ]
    assert await empty_conn.fetchval("SELECT n FROM counted") == 0


@pytest.mark.parametrize(
    ("functions", "message"),
    [
        ({}, "no function file count_things.sql"),
        (
            {"count_things.sql": "-- requires: other\nSELECT 1;", "other.sql": "-- requires: count_things\nSELECT 1;"},
            "function files require each other: count_things -> other",
        ),
    ],
)
async def test_missing_or_circular_function_files_are_refused(
    empty_conn: asyncpg.Connection, tmp_path: Path, functions: dict[str, str], message: str
) -> None:
    plugin = plugin_set(tmp_path, {"0001_x.sql": "SELECT 1;\n-- jobrunner:functions count_things\n"}, functions)
    with pytest.raises(MigrationError, match=message):
        await migrate(empty_conn, "public", [plugin])
    assert await empty_conn.fetchval("SELECT to_regclass('public.jobrunner_migrations')") is None


async def test_a_failing_function_file_leaves_nothing_behind(empty_conn: asyncpg.Connection, tmp_path: Path) -> None:
    plugin = plugin_set(tmp_path, TABLE, {"broken.sql": "SELECT 1/0;"})
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(empty_conn, "public", [plugin])
    assert await empty_conn.fetchval("SELECT to_regclass('public.things')") is None


def test_a_declared_migration_set_must_find_migrations(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match=r"package jobrunner_handlers has no migration in its folder 'nowhere'"):
        MigrationSet.from_package("app", "jobrunner_handlers", "nowhere")
    with pytest.raises(MigrationError, match=r"package no_such_package_x cannot be imported"):
        MigrationSet.from_package("app", "no_such_package_x")
    # a package whose folder exists but holds no migration
    package = tmp_path / "empty_plugin_pkg"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(
            MigrationError, match=r"package empty_plugin_pkg has no migration in its folder 'migrations'"
        ):
            MigrationSet.from_package("app", "empty_plugin_pkg")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("empty_plugin_pkg", None)
    with pytest.raises(MigrationError, match=r"migrations of app: the folder .*missing does not exist"):
        MigrationSet.from_directory("app", tmp_path / "missing")
    with pytest.raises(MigrationError, match=r"migrations of app: the folder .* holds no NNNN_name.sql file"):
        MigrationSet.from_directory("app", package / "migrations")


# -- another schema ------------------------------------------------------------------------


@handler("tenant_job")
async def tenant_job(ctx: JobContext[dict[str, str]]) -> str:
    return f"ran for {ctx.payload['tenant']}"


async def test_a_non_default_schema_end_to_end(empty_db_url: str, empty_conn: asyncpg.Connection) -> None:
    assert await migrate(empty_conn, "tenant_a") == ALL
    assert await empty_conn.fetchval("SELECT to_regclass('tenant_a.background_jobs') IS NOT NULL")
    assert await empty_conn.fetchval("SELECT to_regclass('public.background_jobs')") is None
    assert await pending_migrations(empty_conn, "tenant_a") == []
    assert sorted(await pending_migrations(empty_conn, "public")) == sorted(ALL)

    job_id = await AsyncClient(empty_conn, schema="tenant_a").enqueue("tenant_job", {"tenant": "a"})
    # Settings reads the schema from JOBRUNNER_SCHEMA (see the xfail below for schema_name=)
    async with running_daemon(empty_db_url, [tenant_job], JOBRUNNER_SCHEMA="tenant_a", poll_interval=30) as daemon:
        assert daemon.settings.schema_name == "tenant_a"
        await wait_for(
            empty_conn,
            "SELECT status FROM tenant_a.background_jobs WHERE id = $1",
            job_id,
            expect="completed",
            timeout=5,
        )
        # the NOTIFY channel is per schema: a plain INSERT wakes this daemon (it polls only every 30 s)
        woken = await empty_conn.fetchval(
            "INSERT INTO tenant_a.background_jobs (job_type, payload) VALUES ('tenant_job', '{\"tenant\": \"b\"}')"
            " RETURNING id"
        )
        await wait_for(
            empty_conn,
            "SELECT status FROM tenant_a.background_jobs WHERE id = $1",
            woken,
            expect="completed",
            timeout=5,
        )
    assert await empty_conn.fetchval("SELECT result FROM tenant_a.background_jobs WHERE id = $1", job_id) == (
        '"ran for a"'
    )


async def test_schemas_do_not_share_jobs(empty_db_url: str, empty_conn: asyncpg.Connection) -> None:
    await migrate(empty_conn, "public")
    await migrate(empty_conn, "tenant_a")
    public_job = await AsyncClient(empty_conn).enqueue("tenant_job", {"tenant": "public"})
    tenant_job_id = await AsyncClient(empty_conn, schema="tenant_a").enqueue("tenant_job", {"tenant": "a"})
    async with running_daemon(empty_db_url, [tenant_job], JOBRUNNER_SCHEMA="tenant_a"):
        await wait_for(
            empty_conn,
            "SELECT status FROM tenant_a.background_jobs WHERE id = $1",
            tenant_job_id,
            expect="completed",
            timeout=5,
        )
    assert await empty_conn.fetchval("SELECT status FROM public.background_jobs WHERE id = $1", public_job) == (
        "pending"
    )


async def test_daemon_with_schema_name_setting(empty_db_url: str, empty_conn: asyncpg.Connection) -> None:
    await migrate(empty_conn, "tenant_a")
    job_id = await AsyncClient(empty_conn, schema="tenant_a").enqueue("tenant_job", {"tenant": "a"})
    async with running_daemon(empty_db_url, [tenant_job], schema_name="tenant_a"):
        await wait_for(
            empty_conn,
            "SELECT status FROM tenant_a.background_jobs WHERE id = $1",
            job_id,
            expect="completed",
            timeout=5,
        )


# -- roles and row security ----------------------------------------------------------------

ENSURE_SUPABASE_ROLES = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another test process created it meanwhile
END
$$;
"""


async def as_role(conn: asyncpg.Connection, role: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement as `role` (SET LOCAL ROLE in its own transaction) and commit it."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        return await conn.fetch(sql, *args)


# every function the migrations create that reads or writes the queue (the trigger function
# aside): none may be callable by Supabase's anon/authenticated roles
QUEUE_FUNCTION_NAMES = [
    "enqueue_job",
    "enqueue_jobs",
    "cancel_job",
    "claim_jobs",
    "claim_part",
    "claim_walk_queue",
    "claim_walk_type",
    "claim_walk_keys",
    "record_outcomes",
    "sample_queue_depth",
]


@pytest.fixture
async def supabase_like(empty_conn: asyncpg.Connection) -> asyncpg.Connection:
    """A migrated database where, as on Supabase, anon/authenticated get everything created in public."""
    await empty_conn.execute(ENSURE_SUPABASE_ROLES)
    await empty_conn.execute(
        """
        GRANT USAGE ON SCHEMA public TO anon, authenticated;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated;
        """
    )
    await migrate(empty_conn, "public")
    await empty_conn.execute(
        "INSERT INTO background_jobs (job_type, payload) VALUES ('secret', '{\"token\": \"s3cr3t\"}')"
    )
    await empty_conn.execute("INSERT INTO background_jobs (job_type, dedupe_key) VALUES ('keyed', 'key:1')")
    return empty_conn


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_supabase_roles_get_no_access(supabase_like: asyncpg.Connection, role: str) -> None:
    conn = supabase_like
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        assert not await conn.fetchval("SELECT has_table_privilege($1, 'background_jobs', $2)", role, privilege)
    functions = await conn.fetch(
        "SELECT p.proname, has_function_privilege($1, p.oid, 'EXECUTE') AS allowed FROM pg_proc AS p"
        " WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY($2::text[])",
        role,
        QUEUE_FUNCTION_NAMES,
    )
    assert {f["proname"] for f in functions} == set(QUEUE_FUNCTION_NAMES)
    assert [f["proname"] for f in functions if f["allowed"]] == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "SELECT * FROM background_jobs")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "SELECT enqueue_job('x')")


async def test_only_the_worker_role_may_write_outcomes(supabase_like: asyncpg.Connection) -> None:
    """record_outcomes' own file sets its grants, even where anon/authenticated get every new
    function by default."""
    allowed = {
        r["role"]: r["allowed"]
        for r in await supabase_like.fetch(
            "SELECT role, has_function_privilege(role, p.oid, 'EXECUTE') AS allowed"
            " FROM pg_proc AS p, unnest($1::text[]) AS role"
            " WHERE p.pronamespace = 'public'::regnamespace AND p.proname = 'record_outcomes'",
            ["jobrunner_worker", "jobrunner_enqueuer", "anon", "authenticated"],
        )
    }
    assert allowed == {"jobrunner_worker": True, "jobrunner_enqueuer": False, "anon": False, "authenticated": False}


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_row_security_hides_rows_even_when_granted(supabase_like: asyncpg.Connection, role: str) -> None:
    conn = supabase_like
    # someone grants the table afterwards (a dashboard click): row security still shows and changes nothing
    await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON background_jobs TO {role}")
    assert await as_role(conn, role, "SELECT id FROM background_jobs") == []
    assert await as_role(conn, role, "UPDATE background_jobs SET status = 'cancelled' RETURNING id") == []
    assert await as_role(conn, role, "DELETE FROM background_jobs RETURNING id") == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await as_role(conn, role, "INSERT INTO background_jobs (job_type) VALUES ('sneaky')")
    rows = await conn.fetch("SELECT job_type, status FROM background_jobs ORDER BY id")
    assert [tuple(r) for r in rows] == [("secret", "pending"), ("keyed", "pending")]


async def test_enqueuer_can_add_jobs_and_read_nothing_else(supabase_like: asyncpg.Connection) -> None:
    conn = supabase_like
    role = "jobrunner_enqueuer"
    await as_role(conn, role, "INSERT INTO background_jobs (job_type, payload) VALUES ('from_app', '{\"a\": 1}')")
    keyed = await as_role(conn, role, "SELECT enqueue_job(job_type => 'rpc', dedupe_key => 'rpc:1') AS id")
    again = await as_role(conn, role, "SELECT enqueue_job(job_type => 'rpc', dedupe_key => 'rpc:1') AS id")
    assert keyed[0]["id"] == again[0]["id"]
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE job_type IN ('from_app', 'rpc')") == 2

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "SELECT payload FROM background_jobs")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "UPDATE background_jobs SET priority = 100")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "DELETE FROM background_jobs")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        # only pending jobs with no attempts: an app cannot forge a running or finished job
        await as_role(conn, role, "INSERT INTO background_jobs (job_type, status) VALUES ('forged', 'completed')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "INSERT INTO background_jobs (job_type, worker_id) VALUES ('forged', 'me')")
    # what it may read: only the id/status of live jobs holding a dedupe key
    visible = await as_role(conn, role, "SELECT id, dedupe_key, status FROM background_jobs ORDER BY id")
    assert [r["dedupe_key"] for r in visible] == ["key:1", "rpc:1"]


async def test_enqueuer_can_call_enqueue_job_without_a_dedupe_key(supabase_like: asyncpg.Connection) -> None:
    # regression: with the caller's rights, INSERT ... RETURNING needed the row to pass the enqueuer's
    # SELECT policy (dedupe-key rows only), so an enqueue without a key failed
    rows = await as_role(supabase_like, "jobrunner_enqueuer", "SELECT enqueue_job('rpc', '{\"a\": 1}') AS id")
    assert rows[0]["id"] is not None
    assert await supabase_like.fetchval("SELECT payload FROM background_jobs WHERE id = $1", rows[0]["id"]) == (
        '{"a": 1}'
    )


async def test_enqueuer_can_bulk_enqueue_without_dedupe_keys(supabase_like: asyncpg.Connection) -> None:
    # enqueue_many goes through enqueue_jobs(), SECURITY DEFINER like enqueue_job
    conn = supabase_like
    await conn.execute("SET ROLE jobrunner_enqueuer")
    try:
        ids = await AsyncClient(conn).enqueue_many([NewJob("bulk", {"n": n}) for n in range(3)])
    finally:
        await conn.execute("RESET ROLE")
    assert len(ids) == 3
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE job_type = 'bulk'") == 3


async def test_worker_role_sees_and_updates_every_job(supabase_like: asyncpg.Connection) -> None:
    conn = supabase_like
    role = "jobrunner_worker"
    assert len(await as_role(conn, role, "SELECT payload FROM background_jobs")) == 2
    updated = await as_role(conn, role, "UPDATE background_jobs SET priority = 1 RETURNING id")
    assert len(updated) == 2
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(conn, role, "DROP TABLE background_jobs")
