"""The core's own objects, as an attacker with Supabase's default privileges finds them.

- Sequences: Supabase's `ALTER DEFAULT PRIVILEGES ... GRANT ALL ON SEQUENCES TO anon,
  authenticated` hands them every new sequence; `setval('background_jobs_id_seq', max)` by anon
  would stop every enqueue. Every sequence a core table owns grants nothing to anyone but its
  owner (identity columns need no sequence privilege to insert).
- search_path: every core function that runs with the owner's rights (SECURITY DEFINER), or
  that another role may call, pins `search_path = pg_catalog, pg_temp`, so that objects a
  caller puts on its search_path cannot stand in for the ones the function means.

Every check logs in as a real LOGIN role (tests/test_security.py's fixtures).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from jobrunner import AsyncClient
from jobrunner.migrate import MigrationSet, migrate
from tests.test_migrations import ENSURE_SUPABASE_ROLES
from tests.test_security import as_user, login_role, supabase_db

__all__ = ["login_role", "supabase_db"]  # fixtures, imported to be used here

PINNED = "search_path=pg_catalog, pg_temp"
BIGGEST = 9_223_372_036_854_775_807

# the sequences the core tables own (identity or serial columns), with their owner and ACL
CORE_SEQUENCES = """
SELECT s.oid::regclass::text AS sequence, pg_get_userbyid(s.relowner) AS owner,
       coalesce((SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                                  || ':' || a.privilege_type ORDER BY 1)
                 FROM aclexplode(s.relacl) AS a WHERE a.grantee <> s.relowner), '{}') AS granted
FROM pg_class AS s
JOIN pg_depend AS d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
JOIN pg_class AS t ON t.oid = d.refobjid
WHERE s.relkind = 'S' AND t.relnamespace = $1::regnamespace
  AND (t.relname = 'background_jobs' OR t.relname LIKE 'jobrunner\\_%')
ORDER BY 1
"""


# where the migration put the core (its queue table): the checks below look there, not at a
# schema they assume
CORE_SCHEMA = """
SELECT c.relnamespace::regnamespace::text FROM pg_class AS c
WHERE c.relname = 'background_jobs' AND c.relkind IN ('r', 'p')
"""


async def core_schema(conn: asyncpg.Connection) -> str:
    schemas = [row[0] for row in await conn.fetch(CORE_SCHEMA)]
    assert len(schemas) == 1, f"the core's queue table in {schemas!r}"
    return str(schemas[0])


@pytest.mark.parametrize("group", ["anon", "authenticated"])
async def test_supabase_roles_cannot_move_the_queue_sequence(supabase_db: str, login_role: Any, group: str) -> None:
    user = await login_role(group)
    conn = await asyncpg.connect(as_user(supabase_db, user))
    try:
        for attack in (
            f"SELECT setval('background_jobs_id_seq', {BIGGEST})",
            "SELECT nextval('background_jobs_id_seq')",
            "ALTER SEQUENCE background_jobs_id_seq RESTART WITH 1",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(attack)
    finally:
        await conn.close()
    enqueuer = await login_role("jobrunner_enqueuer")
    conn = await asyncpg.connect(as_user(supabase_db, enqueuer))
    try:
        # the identity column needs no sequence privilege: plain INSERT and enqueue_job still work
        await conn.execute("INSERT INTO background_jobs (job_type) VALUES ('plain')")
        assert await AsyncClient(conn).enqueue("after") > 0
    finally:
        await conn.close()


async def test_every_core_sequence_grants_nothing_beyond_its_owner(supabase_db: str) -> None:
    conn = await asyncpg.connect(supabase_db)
    try:
        rows = await conn.fetch(CORE_SEQUENCES, await core_schema(conn))
    finally:
        await conn.close()
    assert "background_jobs_id_seq" in {row["sequence"] for row in rows}
    assert {row["sequence"]: row["granted"] for row in rows if row["granted"]} == {}


async def test_a_sequence_added_later_is_locked_down_by_the_core_step(supabase_db: str) -> None:
    # the step the migrations run after creating a sequence: a core table added by a later
    # migration (serial, so default privileges apply) gets the same treatment
    conn = await asyncpg.connect(supabase_db)
    try:
        schema = await core_schema(conn)
        await conn.execute("CREATE TABLE jobrunner_later (id bigserial PRIMARY KEY)")
        granted = {
            row["sequence"]: row["granted"] for row in await conn.fetch(CORE_SEQUENCES, schema) if row["granted"]
        }
        assert list(granted) == ["jobrunner_later_id_seq"]
        await conn.execute("SELECT jobrunner_revoke_sequence_privileges()")
        assert {
            row["sequence"]: row["granted"] for row in await conn.fetch(CORE_SEQUENCES, schema) if row["granted"]
        } == {}
    finally:
        await conn.close()


@pytest.fixture
async def core_only_db(empty_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The core's migrations alone (no plugin), with Supabase's roles and default privileges."""
    conn = await asyncpg.connect(empty_db_url)
    try:
        await conn.execute(ENSURE_SUPABASE_ROLES)
        await conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated;"
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated"
        )
        await migrate(conn, "public", [MigrationSet.core()])
        yield conn
    finally:
        await conn.close()


async def test_every_core_security_definer_function_pins_its_search_path(core_only_db: asyncpg.Connection) -> None:
    rows = await core_only_db.fetch(
        "SELECT p.oid::regprocedure::text AS function, p.proconfig FROM pg_proc AS p"
        " WHERE p.pronamespace = $1::regnamespace AND p.prosecdef ORDER BY 1",
        await core_schema(core_only_db),
    )
    assert {row["function"].split("(")[0] for row in rows} >= {"enqueue_job", "enqueue_jobs"}
    assert [r["function"] for r in rows if PINNED not in (r["proconfig"] or [])] == []


async def test_every_core_function_another_role_may_call_pins_its_search_path(
    core_only_db: asyncpg.Connection,
) -> None:
    # SECURITY INVOKER functions too: run by the worker or the owner, a function that resolves
    # names through the caller's search_path runs whatever a less-privileged role placed there
    schema = await core_schema(core_only_db)
    rows = await core_only_db.fetch(
        "SELECT p.oid::regprocedure::text AS function, p.proconfig,"
        "       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a"
        "               WHERE a.grantee <> p.proowner) AS callable_by_others,"
        "       p.prorettype = 'trigger'::regtype AS is_trigger"
        " FROM pg_proc AS p WHERE p.pronamespace = $1::regnamespace ORDER BY 1",
        schema,
    )
    exposed = [r for r in rows if r["callable_by_others"] or r["is_trigger"]]
    assert len(exposed) >= 8, [r["function"] for r in rows]
    assert [r["function"] for r in exposed if PINNED not in (r["proconfig"] or [])] == []
    # and none is callable by Supabase's API roles or PUBLIC, but the payload size check's error,
    # which every role that writes a job evaluates and which only raises
    open_to_api = await core_only_db.fetch(
        "SELECT DISTINCT p.oid::regprocedure::text FROM pg_proc AS p,"
        " aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a"
        " WHERE p.pronamespace = $1::regnamespace AND a.privilege_type = 'EXECUTE'"
        " AND (a.grantee = 0 OR a.grantee IN ('anon'::regrole, 'authenticated'::regrole))",
        schema,
    )
    assert [r[0] for r in open_to_api] == ["refuse_large_payload(integer,integer)"]


async def test_enqueue_jobs_refuses_arrays_of_different_lengths(conn: asyncpg.Connection) -> None:
    # unnest pads the shorter arrays with NULLs: two job types with one payload made two jobs,
    # the second with a default payload nobody asked for
    with pytest.raises(asyncpg.InvalidParameterValueError, match="one element per job"):
        await conn.fetch(
            "SELECT enqueue_jobs(ARRAY['a', 'b'], ARRAY['{\"x\": 1}']::jsonb[], ARRAY['default', 'default'],"
            " ARRAY[0, 0], ARRAY[NULL, NULL]::timestamptz[], ARRAY[5, 5], ARRAY[NULL, NULL]::text[],"
            " ARRAY[NULL, NULL]::text[])"
        )
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 0
    ids = await conn.fetch("SELECT enqueue_jobs('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')")
    assert ids == []


async def test_enqueue_jobs_reads_a_null_column_array_as_the_columns_default(conn: asyncpg.Connection) -> None:
    ids = await conn.fetchval(
        "SELECT array_agg(id) FROM enqueue_jobs(ARRAY['a', 'b'], ARRAY['{\"x\": 1}', '{}']::jsonb[],"
        " NULL, NULL, NULL, NULL, NULL, NULL) AS id"
    )
    rows = await conn.fetch(
        "SELECT queue, priority, max_attempts, dedupe_key, concurrency_key, scheduled_at <= now() AS due"
        " FROM background_jobs WHERE id = ANY($1) ORDER BY id",
        ids,
    )
    assert [tuple(r) for r in rows] == [("default", 0, 5, None, None, True)] * 2
    # an array that is there must still have one element per job
    with pytest.raises(asyncpg.InvalidParameterValueError, match="one element per job"):
        await conn.fetch(
            "SELECT enqueue_jobs(ARRAY['a', 'b'], ARRAY['{}', '{}']::jsonb[], NULL, ARRAY[1], NULL, NULL, NULL, NULL)"
        )
