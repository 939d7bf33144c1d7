"""One schema, whichever way a database got it: a fresh install (baselines and function files at
once) equals the migration path a deployed database takes, compared on the whole catalog
(tests/schema_catalog.py), as procrastinate's migration test does. And `jobrunner migrate --sql`
prints exactly what `migrate` would apply.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from jobrunner.migrate import (
    MigrationSet,
    discover_migration_sets,
    migrate,
    migration_script,
    pending_migrations,
    plan_migrations,
)
from jobrunner.sql_files import FunctionFile, Migration
from tests.schema_catalog import Snapshot, schema_differences, schema_snapshot
from tests.support import database_url_for, quote

NewDatabase = Callable[[], Awaitable[asyncpg.Connection]]
URLS: dict[int, str] = {}
# the number the core's next numbered migration takes
NEXT = max(m.version for m in MigrationSet.core().items) + 1


def url_of(conn: asyncpg.Connection) -> str:
    return URLS[id(conn)]


@pytest.fixture
async def new_database(admin_url: str) -> AsyncIterator[NewDatabase]:
    """Connections to fresh, empty databases of this test's own (dropped afterwards)."""
    created: list[tuple[str, asyncpg.Connection]] = []

    async def create() -> asyncpg.Connection:
        name = f"jobrunner_s_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f"CREATE DATABASE {quote(name)}")
        finally:
            await admin.close()
        url = database_url_for(admin_url, name)
        conn = await asyncpg.connect(url)
        created.append((name, conn))
        URLS[id(conn)] = url
        return conn

    yield create
    admin = await asyncpg.connect(admin_url)
    try:
        for name, conn in created:
            URLS.pop(id(conn), None)
            await conn.close()
            await admin.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
    finally:
        await admin.close()


async def migrated(conn: asyncpg.Connection, *runs: list[MigrationSet]) -> Snapshot:
    """The schema after one `migrate` run per item of `runs`, in order."""
    for sets in runs:
        await migrate(conn, "public", sets)
    return await schema_snapshot(conn)


def assert_same_schema(fresh: Snapshot, path: Snapshot) -> None:
    differences = schema_differences(fresh, path, ("the fresh install", "the migrated database"))
    assert differences == [], "\n".join(differences)


async def one_schema_differences(
    new_database: NewDatabase, sets: list[MigrationSet], *path: list[MigrationSet]
) -> list[str]:
    """How the ways of building `sets` disagree: a fresh install; the migration path (one run per
    item of `path`, then `sets`); and the fresh install with every function file applied again,
    which must change nothing (a migration after a file's marker line could otherwise leave a
    function other than its file, in a fresh install and a migrated database alike)."""
    fresh_conn = await new_database()
    fresh = await migrated(fresh_conn, sets)
    migrated_path = await migrated(await new_database(), *path, sets)
    await fresh_conn.execute("DELETE FROM jobrunner_migrations WHERE version IS NULL")
    reapplied = await migrated(fresh_conn, sets)
    return schema_differences(fresh, migrated_path, ("the fresh install", "the migrated database")) + (
        schema_differences(fresh, reapplied, ("the fresh install", "the function files applied again"))
    )


def up_to(sets: list[MigrationSet], version: int) -> list[MigrationSet]:
    """Each set as it was when its numbered migrations went up to `version` (function files as now)."""
    return [dataclasses.replace(s, items=[m for m in s.items if m.version <= version]) for s in sets]


def with_change(
    migration_set: MigrationSet, migrations: list[Migration], functions: dict[str, str] | None = None
) -> MigrationSet:
    """`migration_set` with more numbered migrations and some function files' text replaced."""
    replaced = functions or {}
    return dataclasses.replace(
        migration_set,
        items=[*migration_set.items, *migrations],
        functions=[FunctionFile(f.name, replaced.get(f.name, f.text)) for f in migration_set.functions],
    )


def function_text(migration_set: MigrationSet, name: str) -> str:
    return next(f.text for f in migration_set.functions if f.name == name)


async def test_a_fresh_install_equals_the_migration_path(new_database: NewDatabase) -> None:
    """Every numbered migration applied in a run of its own (as deployed databases get them, one
    release after another) equals everything applied at once, and the function files are the
    functions' text."""
    sets = discover_migration_sets()
    last = max(m.version for s in sets for m in s.items)
    differences = await one_schema_differences(new_database, sets, *(up_to(sets, v) for v in range(1, last + 1)))
    assert differences == [], "\n".join(differences)
    fresh = await migrated(await new_database(), sets)
    assert {r[1] for r in fresh["relations"]} >= {"background_jobs", "jobrunner_migrations"}
    assert {r[1] for r in fresh["functions"]} >= {f.name for f in MigrationSet.core().functions}


async def test_the_next_change_migrated_equals_its_fresh_install(new_database: NewDatabase) -> None:
    """A change of the kind the next release brings: a numbered migration that changes a table,
    and a function file whose text changes. A database of this release migrated to it equals a
    fresh install of it."""
    release = discover_migration_sets()
    core = release[0]
    sampler = function_text(core, "sample_queue_depth")
    next_core = with_change(
        core,
        [Migration(NEXT, "jobs_note", "ALTER TABLE {schema}.background_jobs ADD COLUMN note text;")],
        {"sample_queue_depth": sampler.replace("SELECT b.queue, 'running'::text", "SELECT b.queue, 'running'")},
    )
    assert function_text(next_core, "sample_queue_depth") != sampler
    upgraded = await new_database()
    await migrated(upgraded, release)
    assert await migrate(upgraded, "public", [next_core, *release[1:]]) == [
        f"jobrunner/{NEXT:04d}_jobs_note",
        "jobrunner/functions/sample_queue_depth",
    ]
    fresh = await migrated(await new_database(), [next_core, *release[1:]])
    assert_same_schema(fresh, await schema_snapshot(upgraded))
    # the new column comes last (its number moves with every column a release adds)
    jobs_columns = sorted(r[2:5] for r in fresh["columns"] if r[1] == "background_jobs")
    assert jobs_columns[-1][1:] == ("note", "text")


@pytest.mark.parametrize(
    "function",
    [
        # applied after the migrations: the migrated database keeps the migration's text, the fresh
        # install gets the file's
        "cancel_job(job_id bigint) RETURNS text",
        # applied at the baseline's marker line: both keep the migration's text, and applying the
        # file again changes it
        "set_payload_limit(max_bytes integer) RETURNS void",
    ],
)
async def test_a_migration_that_disagrees_with_a_function_file_fails_the_comparison(
    new_database: NewDatabase, function: str
) -> None:
    """A numbered migration that redefines a function with other text than its file."""
    sets = discover_migration_sets()
    stray = Migration(
        NEXT,
        "stray_function",
        f"CREATE OR REPLACE FUNCTION {{schema}}.{function}\n"
        "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ BEGIN RAISE NOTICE 'stray'; END $$;",
    )
    differences = await one_schema_differences(new_database, [with_change(sets[0], [stray]), *sets[1:]], sets)
    name = function.split("(")[0]
    assert differences
    assert all(line.startswith("functions: ") and name in line for line in differences), differences


# -- jobrunner migrate --sql ---------------------------------------------------------------


def jobrunner_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", "migrate", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def apply_by_hand(conn: asyncpg.Connection, url: str, script: str, tmp_path: Path) -> None:
    """As a user would: psql running the file, or (without psql) the script as one simple query."""
    psql = shutil.which("psql")
    if psql is None:
        await conn.execute(script)
        return
    path = tmp_path / "migrate.sql"
    path.write_text(script)
    process = await asyncio.create_subprocess_exec(
        psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()


async def test_the_printed_sql_applied_by_hand_leaves_migrate_nothing_to_do(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    by_hand = await new_database()
    printed = jobrunner_cli(url_of(by_hand), "--sql")
    assert printed.returncode == 0, printed.stderr
    assert "BEGIN;" in printed.stdout and printed.stdout.rstrip().endswith("COMMIT;")
    assert "pg_advisory_xact_lock" in printed.stdout
    assert await by_hand.fetchval("SELECT to_regclass('public.jobrunner_migrations')") is None  # printed only

    await apply_by_hand(by_hand, url_of(by_hand), printed.stdout, tmp_path)
    assert await pending_migrations(by_hand, "public") == []
    assert await migrate(by_hand, "public") == []
    assert_same_schema(await migrated(await new_database(), discover_migration_sets()), await schema_snapshot(by_hand))

    up_to_date = jobrunner_cli(url_of(by_hand), "--sql")
    assert up_to_date.returncode == 0
    assert "nothing to apply" in up_to_date.stdout and "BEGIN" not in up_to_date.stdout


async def test_the_printed_sql_of_a_next_change_applies_only_the_change(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    release = discover_migration_sets()
    core = release[0]
    next_sets = [
        with_change(
            core,
            [Migration(NEXT, "jobs_note", "ALTER TABLE {schema}.background_jobs ADD COLUMN note text;")],
            {"cancel_job": function_text(core, "cancel_job").replace("'cancelling'", "'cancelling'::text")},
        ),
        *release[1:],
    ]
    conn = await new_database()
    await migrate(conn, "public", release)
    steps = await plan_migrations(conn, "public", next_sets)
    assert [s.name for s in steps] == [f"jobrunner/{NEXT:04d}_jobs_note", "jobrunner/functions/cancel_job"]
    await apply_by_hand(conn, url_of(conn), migration_script("public", steps), tmp_path)
    assert await migrate(conn, "public", next_sets) == []
    assert_same_schema(await migrated(await new_database(), next_sets), await schema_snapshot(conn))


def test_the_sql_for_an_empty_database_needs_no_server() -> None:
    nowhere = "postgresql://postgres@127.0.0.1:1/nowhere"
    printed = jobrunner_cli(nowhere, "--sql", "--empty")
    assert printed.returncode == 0, printed.stderr
    assert "-- == jobrunner/0001_baseline" in printed.stdout
    assert "-- == jobrunner/functions/claim_jobs =" in printed.stdout

    unreachable = jobrunner_cli(nowhere, "--sql")
    assert unreachable.returncode == 2
    assert "cannot connect to the database" in unreachable.stderr
    assert "--sql --empty" in unreachable.stderr
    assert unreachable.stdout == ""
