"""Payload size: refused by the database on every path, and claims bounded in bytes.

A limit checked only in the Python clients lets a plain INSERT hand the daemons payloads of any
size. background_jobs refuses a payload whose JSON text is over the limit (default 1 MiB, the
owner sets another with set_payload_limit), whatever the path, and a claim stops adding jobs
once their payloads pass JOBRUNNER_CLAIM_MAX_BYTES (at least one).
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest

from jobrunner import AsyncClient, Client, GlobalLimits, InvalidJob, JobContext, handler
from jobrunner.store import ClaimPlan, JobStore, LimitedType
from tests.support import running_daemon, wait_for
from tests.test_security import as_user, login_role

__all__ = ["login_role"]  # a fixture, imported to be used here

MIB = 1024 * 1024
LIMIT_MESSAGE = "the limit is 1048576 bytes"
# {"blob": "x…x"}: the JSON text of this payload, as PostgreSQL prints jsonb, is 2 MiB
TWO_MIB = {"blob": "x" * (2 * MIB - len('{"blob": ""}'))}


def json_of(payload: dict[str, Any]) -> str:
    return json.dumps(payload)


@pytest.mark.parametrize("path", ["insert", "enqueue_job", "enqueue_jobs", "copy"])
async def test_a_2_mib_payload_is_refused_by_every_path(db_url: str, login_role: Any, path: str) -> None:
    # as the enqueuer, the role the app enqueues with
    user = await login_role("jobrunner_enqueuer")
    conn = await asyncpg.connect(as_user(db_url, user))
    try:
        with pytest.raises(asyncpg.CheckViolationError, match=LIMIT_MESSAGE) as refused:
            if path == "insert":
                await conn.execute(
                    "INSERT INTO background_jobs (job_type, payload) VALUES ('big', $1::jsonb)", json_of(TWO_MIB)
                )
            elif path == "enqueue_job":
                await conn.execute("SELECT enqueue_job('big', $1::jsonb)", json_of(TWO_MIB))
            elif path == "enqueue_jobs":
                await conn.execute(
                    "SELECT enqueue_jobs(ARRAY['small', 'big'], ARRAY['{}', $1]::jsonb[], ARRAY['default', 'default'],"
                    " ARRAY[0, 0], ARRAY[NULL, NULL]::timestamptz[], ARRAY[5, 5], ARRAY[NULL, NULL]::text[],"
                    " ARRAY[NULL, NULL]::text[])",
                    json_of(TWO_MIB),
                )
            else:  # COPY is refused under row level security: the owner's path
                line = json_of(TWO_MIB).replace("\\", "\\\\") + "\n"
                owner = await asyncpg.connect(db_url)
                try:
                    await owner.copy_to_table(
                        "background_jobs", source=io.BytesIO(b"big\t" + line.encode()), columns=["job_type", "payload"]
                    )
                finally:
                    await owner.close()
        assert "2097152 bytes" in str(refused.value)
        assert refused.value.constraint_name == "background_jobs_payload_size_check"
    finally:
        await conn.close()
    admin = await asyncpg.connect(db_url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM background_jobs") == 0
    finally:
        await admin.close()


async def test_a_payload_at_the_limit_is_stored(conn: asyncpg.Connection) -> None:
    at_limit = {"blob": "x" * (MIB - len('{"blob": ""}'))}
    await conn.execute("INSERT INTO background_jobs (job_type, payload) VALUES ('at', $1::jsonb)", json_of(at_limit))
    assert await conn.fetchval("SELECT octet_length(payload::text) FROM background_jobs") == MIB


@pytest.fixture
async def both_clients(db_url: str) -> AsyncIterator[list[Any]]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    sync = psycopg.connect(db_url, autocommit=True)
    try:

        async def via_async(*args: Any) -> int:
            return await AsyncClient(pool).enqueue(*args)

        async def via_sync(*args: Any) -> int:
            return await asyncio.to_thread(Client(sync).enqueue, *args)

        yield [via_async, via_sync]
    finally:
        sync.close()
        await pool.close()


async def test_the_clients_and_the_database_refuse_alike(both_clients: list[Any]) -> None:
    # over the limit in the client's own measure: refused before it is sent
    too_big = {"blob": "x" * MIB}
    # under it in compact JSON, over it as PostgreSQL prints it (", " and ": " between the
    # 50,000 keys): the database refuses, and the client says so the same way
    spaced = {f"{i:05}": 1 for i in range(100_000)}
    assert len(json.dumps(spaced, separators=(",", ":"))) < MIB < len(json.dumps(spaced))
    for enqueue in both_clients:
        for payload in (too_big, spaced):
            with pytest.raises(InvalidJob, match=LIMIT_MESSAGE):
                await enqueue("big", payload)


async def test_the_owner_sets_another_limit_and_no_one_else_may(db_url: str, login_role: Any) -> None:
    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute("SELECT set_payload_limit(4096)")
        with pytest.raises(asyncpg.CheckViolationError, match="the limit is 4096 bytes"):
            await admin.execute("SELECT enqueue_job('big', $1::jsonb)", json_of({"blob": "x" * 5000}))
        for bad in (0, -1, 2**31 - 1):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="payload limit"):
                await admin.execute("SELECT set_payload_limit($1)", bad)
        await admin.execute("SELECT set_payload_limit(2 * 1048576)")
        await admin.execute("SELECT enqueue_job('big', $1::jsonb)", json_of(TWO_MIB))
        for group in ("jobrunner_worker", "jobrunner_enqueuer"):
            user = await login_role(group)
            conn = await asyncpg.connect(as_user(db_url, user))
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("SELECT set_payload_limit(1000000000)")
            finally:
                await conn.close()
    finally:
        await admin.close()


async def test_a_client_follows_the_limit_the_owner_set(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    # lowered: the client's own check passes, the database refuses, the client says why
    await conn.execute("SELECT set_payload_limit(4096)")
    with pytest.raises(InvalidJob, match="payload is 5012 bytes of JSON; the limit is 4096 bytes"):
        await AsyncClient(pool).enqueue("big", {"blob": "x" * 5000})
    # raised: a client told so sends what the database now takes
    await conn.execute("SELECT set_payload_limit(4 * 1048576)")
    with pytest.raises(InvalidJob, match=LIMIT_MESSAGE):
        await AsyncClient(pool).enqueue("big", TWO_MIB)
    assert await AsyncClient(pool, max_payload_bytes=4 * MIB).enqueue("big", TWO_MIB) > 0


# -- claims bounded in bytes -----------------------------------------------------------------

# JSON text of each job's payload, as the claim counts it: {"blob": "…"} of 1,000,000 bytes
JOB_BYTES = 1_000_000
BIG_JOB = {"blob": "x" * (JOB_BYTES - len('{"blob": ""}'))}


# the same size in UTF-8 bytes, written with three-byte characters: a third as many characters
WIDE_BIG_JOB = {"blob": "漢" * ((JOB_BYTES - len('{"blob": ""}')) // 3)}


async def enqueue_big(
    conn: asyncpg.Connection, jobs: int, job_type: str = "big", payload: dict[str, str] = BIG_JOB
) -> None:
    await conn.execute(
        "INSERT INTO background_jobs (job_type, payload) SELECT $1, $2::jsonb FROM generate_series(1, $3)",
        job_type,
        json_of(payload),
        jobs,
    )


@pytest.mark.parametrize("claim", ["unlimited", "one type", "within limits", "per key"])
async def test_a_claim_takes_only_as_many_jobs_as_fit_the_byte_budget(conn: asyncpg.Connection, claim: str) -> None:
    await enqueue_big(conn, 12)
    await conn.execute("INSERT INTO background_jobs (job_type, payload, priority) VALUES ('big', '{}', -1)")
    store = JobStore(conn, "public", claim_max_bytes=5 * JOB_BYTES + 10)  # type: ignore[arg-type]

    async def take(limit: int) -> list[int]:
        if claim == "unlimited":
            jobs = await store.claim_batch(["default"], "w", limit, 30.0)
        else:
            room, limits = {
                "one type": (100, None),
                "within limits": (None, GlobalLimits(max_running=100)),
                "per key": (None, GlobalLimits(per_key_max_running=100)),
            }[claim]
            plan = ClaimPlan(["default"], limit, limited_limit=limit, limited_types=[LimitedType("big", room, limits)])
            jobs = (await store.claim("w", 30.0, plan)).limited
        return [len(job.payload_json) for job in jobs]

    assert await take(100) == [JOB_BYTES] * 5
    assert await take(3) == [JOB_BYTES] * 3  # the row limit still holds
    # a budget smaller than one job still claims one: nothing could ever run otherwise
    store = JobStore(conn, "public", claim_max_bytes=100)  # type: ignore[arg-type]
    assert await take(100) == [JOB_BYTES]
    store = JobStore(conn, "public", claim_max_bytes=100 * JOB_BYTES)  # type: ignore[arg-type]
    assert await take(100) == [JOB_BYTES] * 3 + [2]  # the rest, and the small one last


@handler("big")
async def big(ctx: JobContext[dict[str, Any]]) -> int:
    return len(ctx.payload["blob"])


@pytest.mark.parametrize("payload", [BIG_JOB, WIDE_BIG_JOB], ids=["ascii", "three-byte-characters"])
async def test_a_daemon_drains_big_jobs_under_a_small_budget(
    db_url: str, conn: asyncpg.Connection, payload: dict[str, str]
) -> None:
    await enqueue_big(conn, 12, payload=payload)
    # a claim cut short by the budget is no sign that the queue ran dry: the daemon claims again
    # at once, not after a poll interval (nothing NOTIFYs: the jobs were there before it started)
    async with running_daemon(db_url, [big], concurrency=10, claim_max_bytes=3 * JOB_BYTES, poll_interval=60):
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=12, timeout=15)
    # no claim took more than the budget: at most 3 jobs started within one claim (same started_at)
    assert (
        await conn.fetchval("SELECT max(n) FROM (SELECT count(*) AS n FROM background_jobs GROUP BY started_at) s") <= 3
    )


async def test_a_role_outside_the_queues_groups_may_insert_and_meets_the_same_limit(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A role the queue's migrations do not know (an operator's, a platform's service role that
    bypasses row security) with a plain INSERT grant: the size check must not need a privilege of
    its own, or every insert by that role fails, small payloads included."""
    role = f"jr_test_outsider_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE ROLE {role} LOGIN BYPASSRLS")
    try:
        await conn.execute(f"GRANT INSERT ON background_jobs TO {role}")
        outsider = await asyncpg.connect(as_user(db_url, role))
        try:
            await outsider.execute("INSERT INTO background_jobs (job_type, payload) VALUES ('small', '{}')")
            with pytest.raises(asyncpg.CheckViolationError, match=LIMIT_MESSAGE):
                await outsider.execute(
                    "INSERT INTO background_jobs (job_type, payload) VALUES ('big', $1::jsonb)", json_of(TWO_MIB)
                )
        finally:
            await outsider.close()
        assert await conn.fetchval("SELECT array_agg(job_type) FROM background_jobs") == ["small"]
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
