"""Every function the app's callers may call, called as the role that calls it: the Edge Functions
and admin tools with the service key (`service_role`, NOINHERIT as on Supabase), the mobile app as
an `authenticated` user whose JWT names them. A function granted to either role by name must be
listed here, so that a new grant comes with a call that proves it works for that role; the other
API roles must be refused.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import asyncpg
import pytest

from handlers.tests.api_roles import ApiRoles
from handlers.tests.test_schema import ALICE


@dataclass(frozen=True)
class Rpc:
    signature: str  # as regprocedure prints it
    role: str  # the API role that calls it
    call: str  # one statement calling it (no parameters)

    def __str__(self) -> str:
        return f"{self.role}:{self.signature.split('(')[0]}"


ENQUEUE_PAYLOAD = json.dumps({"user_id": str(ALICE), "image": f"{ALICE}/selfie.jpg", "kind": "glow"})

RPCS = [
    # -- the Edge Functions (service key) -----------------------------------------------------
    Rpc(
        "enqueue_job(text,jsonb,text,integer,timestamp with time zone,integer,text,text)",
        "service_role",
        f"SELECT enqueue_job('analyze_image', '{ENQUEUE_PAYLOAD}'::jsonb, concurrency_key => '{ALICE}')",
    ),
    Rpc(
        "enqueue_jobs(text[],jsonb[],text[],integer[],timestamp with time zone[],integer[],text[],text[])",
        "service_role",
        "SELECT count(*) FROM enqueue_jobs(ARRAY['send_notification'], ARRAY['{}'::jsonb], ARRAY['default'], "
        "ARRAY[0], ARRAY[now()], ARRAY[5], ARRAY[NULL::text], ARRAY[NULL::text])",
    ),
    Rpc("check_rate_limit(uuid,text)", "service_role", f"SELECT check_rate_limit('{ALICE}', 'analysis')"),
    Rpc("api_rate_limit_refusals(interval)", "service_role", "SELECT count(*) FROM api_rate_limit_refusals()"),
    Rpc("record_user_activity(uuid[])", "service_role", f"SELECT record_user_activity(ARRAY['{ALICE}'::uuid])"),
    Rpc(
        "record_api_requests(jsonb)",
        "service_role",
        """SELECT record_api_requests('[{"endpoint": "analyze", "status_code": 200, "response_time_ms": 5}]')""",
    ),
    # the backend document's monitoring queries, for an admin dashboard with the service key
    Rpc(
        "api_endpoint_stats(interval,integer,boolean)",
        "service_role",
        "SELECT count(*) FROM api_endpoint_stats()",
    ),
    Rpc("api_slow_endpoints(interval,integer)", "service_role", "SELECT count(*) FROM api_slow_endpoints()"),
    Rpc("api_error_rates(interval)", "service_role", "SELECT count(*) FROM api_error_rates()"),
    Rpc("api_active_users(interval)", "service_role", "SELECT api_active_users()"),
    # -- maintenance an operator may run with the service key ----------------------------------
    Rpc("cleanup_expired_cache(integer)", "service_role", "SELECT cleanup_expired_cache(10)"),
    Rpc("cleanup_old_metrics(interval,integer)", "service_role", "SELECT cleanup_old_metrics('30 days', 10)"),
    Rpc(
        "create_month_partition(regclass,date,bigint)",
        "service_role",
        "SELECT * FROM create_month_partition('glow_analyses', '2031-01-01')",
    ),
    Rpc("create_upcoming_partitions(integer,date)", "service_role", "SELECT create_upcoming_partitions(1)"),
    Rpc(
        "drop_month_partition(regclass,regclass)",
        "service_role",
        "SELECT drop_month_partition('glow_analyses', "
        "('public.' || (SELECT partition_name FROM create_month_partition('glow_analyses', '2032-02-01')))::regclass)",
    ),
    Rpc("partitions_due(integer,timestamp with time zone)", "service_role", "SELECT count(*) FROM partitions_due(3)"),
    Rpc(
        "drop_month_partitions_before(regclass,timestamp with time zone)",
        "service_role",
        "SELECT drop_month_partitions_before('api_metrics', '2000-01-01')",
    ),
    Rpc(
        "partition_rows_page(regclass,timestamp with time zone,uuid,integer)",
        "service_role",
        "SELECT count(*) FROM partition_rows_page('glow_analyses_default', NULL, NULL, 10)",
    ),
    Rpc("protect_partition(regclass)", "service_role", "SELECT protect_partition('glow_analyses_default')"),
    Rpc("refresh_user_statistics_cache()", "service_role", "SELECT refresh_user_statistics_cache()"),
    Rpc("require_app_partition(regclass)", "service_role", "SELECT require_app_partition('glow_analyses_default')"),
    Rpc(
        "require_app_partitioned_table(regclass)",
        "service_role",
        "SELECT require_app_partitioned_table('glow_analyses')",
    ),
    Rpc("is_storage_path_of(uuid,text)", "service_role", f"SELECT is_storage_path_of('{ALICE}', '{ALICE}/a.jpg')"),
    # -- the mobile app (a user's JWT) ---------------------------------------------------------
    Rpc("get_my_statistics()", "authenticated", "SELECT count(*) FROM get_my_statistics()"),
    Rpc("check_rate_limit(text)", "authenticated", "SELECT check_rate_limit('analysis')"),
    Rpc("touch_my_last_active()", "authenticated", "SELECT touch_my_last_active()"),
    Rpc("require_request_user()", "authenticated", "SELECT require_request_user()"),
    Rpc(
        "get_my_analyses(text,timestamp with time zone,uuid,integer)",
        "authenticated",
        "SELECT count(*) FROM get_my_analyses()",
    ),
    Rpc(
        "get_my_progress_photos(timestamp with time zone,uuid,integer)",
        "authenticated",
        "SELECT count(*) FROM get_my_progress_photos()",
    ),
    Rpc("is_storage_path_of(uuid,text)", "authenticated", f"SELECT is_storage_path_of('{ALICE}', '{ALICE}/a.jpg')"),
]


async def connect_as(api: ApiRoles, role: str) -> asyncpg.Connection:
    if role == "service_role":
        return await api.service_role()
    if role == "authenticated":
        return await api.user(ALICE)
    assert role == "anon", role
    return await api.anon()


@pytest.mark.parametrize("rpc", RPCS, ids=str)
async def test_the_role_that_calls_it_may(api: ApiRoles, conn: asyncpg.Connection, rpc: Rpc) -> None:
    caller = await connect_as(api, rpc.role)
    assert await caller.fetchval("SELECT current_user") == rpc.role
    await caller.fetch(rpc.call)


@pytest.mark.parametrize("rpc", RPCS, ids=str)
async def test_the_other_api_roles_may_not(api: ApiRoles, rpc: Rpc) -> None:
    granted = {r.role for r in RPCS if r.signature == rpc.signature}
    for role in {"anon", "authenticated", "service_role"} - granted:
        caller = await connect_as(api, role)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for function"):
            await caller.fetch(rpc.call)


async def test_every_function_granted_to_an_api_role_is_listed(conn: asyncpg.Connection) -> None:
    granted = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature, r.rolname AS role "
        "FROM pg_proc AS p CROSS JOIN LATERAL aclexplode(p.proacl) AS a JOIN pg_roles AS r ON r.oid = a.grantee "
        "WHERE p.pronamespace = 'public'::regnamespace AND a.privilege_type = 'EXECUTE' "
        "AND r.rolname IN ('anon', 'authenticated', 'service_role')"
    )
    assert {(g["signature"], g["role"]) for g in granted} == {(r.signature, r.role) for r in RPCS}


async def test_service_role_enqueues_as_the_edge_functions_do(api: ApiRoles, conn: asyncpg.Connection) -> None:
    """The failure this was written for: service_role is NOINHERIT, so its membership in
    jobrunner_enqueuer gave it nothing and every enqueue from an Edge Function was refused."""
    edge = await api.service_role()
    job_id = await edge.fetchval(
        "SELECT enqueue_job('analyze_image', $1::jsonb, dedupe_key => $2, concurrency_key => $3)",
        ENQUEUE_PAYLOAD,
        f"analyze:{ALICE}:1",
        str(ALICE),
    )
    again = await edge.fetchval(
        "SELECT enqueue_job('analyze_image', $1::jsonb, dedupe_key => $2)", ENQUEUE_PAYLOAD, f"analyze:{ALICE}:1"
    )
    assert again == job_id
    row = await conn.fetchrow(
        "SELECT job_type, status, concurrency_key, payload FROM background_jobs WHERE id = $1", job_id
    )
    assert row is not None
    assert (row["job_type"], row["status"], row["concurrency_key"]) == ("analyze_image", "pending", str(ALICE))
    # the key grants the enqueue functions, not the queue: nothing to read or change there
    for statement in ("SELECT payload FROM background_jobs", "UPDATE background_jobs SET priority = 9"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await edge.execute(statement)
    assert uuid.UUID(json.loads(row["payload"])["user_id"]) == ALICE
