"""Enqueueing: AsyncClient (asyncpg), Client (psycopg 3), the SQL function, and plain INSERTs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from jobrunner import AsyncClient, Client, InvalidJob, NewJob
from tests.support import job_row

COUNT = "SELECT count(*) FROM background_jobs"


@pytest.fixture
def pg(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as connection:
        yield connection


# -- AsyncClient ---------------------------------------------------------------------------


async def test_enqueue_returns_the_id_with_the_defaults(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    before = await conn.fetchval("SELECT now()")
    job_id = await client.enqueue("send_email", {"to": "a@example.com"})
    row = await job_row(conn, job_id)
    assert row["job_type"] == "send_email"
    assert json.loads(row["payload"]) == {"to": "a@example.com"}
    assert (row["queue"], row["priority"], row["max_attempts"]) == ("default", 0, 5)
    assert (row["status"], row["attempts"], row["release_count"]) == ("pending", 0, 0)
    assert row["dedupe_key"] is None
    assert before <= row["scheduled_at"] <= await conn.fetchval("SELECT clock_timestamp()")
    record = await client.get(job_id)
    assert record is not None
    assert (record.id, record.status, record.payload) == (job_id, "pending", {"to": "a@example.com"})
    assert await client.get(job_id + 1000) is None


async def test_enqueue_with_options(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    job_id = await client.enqueue("report", None, queue="reports", priority=-3, max_attempts=1)
    row = await job_row(conn, job_id)
    assert (row["queue"], row["priority"], row["max_attempts"], json.loads(row["payload"])) == (
        "reports",
        -3,
        1,
        {},
    )


async def test_enqueue_with_delay_and_run_at(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    start = datetime.now(UTC)
    delayed = await client.enqueue("later", delay=timedelta(minutes=10))
    delayed_float = await client.enqueue("later", delay=90.0)
    end = datetime.now(UTC)
    run_at = datetime(2031, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)
    at = await client.enqueue("later", run_at=run_at)

    scheduled = (await job_row(conn, delayed))["scheduled_at"]
    assert start + timedelta(minutes=10) <= scheduled <= end + timedelta(minutes=10)
    scheduled = (await job_row(conn, delayed_float))["scheduled_at"]
    assert start + timedelta(seconds=90) <= scheduled <= end + timedelta(seconds=90)
    assert (await job_row(conn, at))["scheduled_at"] == run_at
    with pytest.raises(InvalidJob, match="run_at or delay, not both"):
        await client.enqueue("later", run_at=run_at, delay=5)
    with pytest.raises(InvalidJob, match="delay must be a finite number"):
        await client.enqueue("later", delay=-1)


async def test_dedupe_key_returns_the_live_job_until_it_finishes(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    first = await client.enqueue("sync_user", {"user": 1}, dedupe_key="sync:1")
    again = await client.enqueue("sync_user", {"user": 1, "other": True}, dedupe_key="sync:1")
    other_key = await client.enqueue("sync_user", {"user": 2}, dedupe_key="sync:2")
    assert again == first
    assert other_key != first
    assert await conn.fetchval(COUNT) == 2
    assert json.loads((await job_row(conn, first))["payload"]) == {"user": 1}

    await conn.execute("UPDATE background_jobs SET status = 'running', attempts = 1 WHERE id = $1", first)
    assert await client.enqueue("sync_user", {"user": 1}, dedupe_key="sync:1") == first

    await conn.execute("UPDATE background_jobs SET status = 'completed', finished_at = now() WHERE id = $1", first)
    fresh = await client.enqueue("sync_user", {"user": 1}, dedupe_key="sync:1")
    assert fresh not in (first, other_key)
    assert await conn.fetchval(COUNT) == 3


async def test_enqueue_many_ten_thousand_in_one_call(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    jobs = [NewJob("bulk", {"n": n}, priority=n % 3) for n in range(10_000)]
    ids = await client.enqueue_many(jobs)
    assert len(ids) == len(set(ids)) == 10_000
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE job_type = 'bulk'") == 10_000
    assert await conn.fetchval("SELECT sum((payload->>'n')::int) FROM background_jobs") == sum(range(10_000))
    assert await client.enqueue_many([]) == []


async def test_enqueue_many_stores_each_jobs_options_and_returns_ids_in_order(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    # a column every job of a batch leaves at its default is sent as NULL: batches where none,
    # one or all of the jobs set an option must store the same as one job at a time
    client = AsyncClient(pool)
    run_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    option_sets: list[dict[str, Any]] = [
        {},
        {"queue": "q2"},
        {"priority": -4},
        {"run_at": run_at},
        {"max_attempts": 1},
        {"dedupe_key": "d1"},
        {"concurrency_key": "user:1"},
        {"queue": "q3", "priority": 7, "max_attempts": 9, "dedupe_key": "d2", "concurrency_key": "user:2"},
    ]
    batches = [
        [NewJob("plain", {"n": n}) for n in range(3)],
        *([NewJob("mixed", {"n": 0}), NewJob("mixed", {"n": 1}, **options)] for options in option_sets),
        [NewJob("all", {"n": n}, **option_sets[-1] | {"dedupe_key": f"all{n}"}) for n in range(3)],
    ]
    for jobs in batches:
        ids = await client.enqueue_many(jobs)
        assert len(ids) == len(jobs)
        for job_id, job in zip(ids, jobs, strict=True):
            row = await job_row(conn, job_id)
            assert json.loads(row["payload"]) == job.payload
            assert (row["job_type"], row["queue"], row["priority"], row["max_attempts"]) == (
                job.job_type,
                job.queue,
                job.priority,
                job.max_attempts,
            )
            assert (row["dedupe_key"], row["concurrency_key"]) == (job.dedupe_key, job.concurrency_key)
            if job.run_at is not None:
                assert row["scheduled_at"] == job.run_at
            else:
                assert row["scheduled_at"] <= await conn.fetchval("SELECT now()")


async def test_enqueue_many_skips_live_dedupe_keys(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    held = await client.enqueue("bulk", dedupe_key="taken")
    ids = await client.enqueue_many(
        [NewJob("bulk", dedupe_key="taken"), NewJob("bulk", dedupe_key="free"), NewJob("bulk", dedupe_key="free")]
    )
    assert len(ids) == 1
    assert held not in ids
    assert await conn.fetchval(COUNT) == 2


async def test_enqueue_many_validates_every_job_before_writing(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    with pytest.raises(InvalidJob, match="priority"):
        await client.enqueue_many([NewJob("ok"), NewJob("bad", priority=2**40)])
    assert await conn.fetchval(COUNT) == 0


async def test_async_enqueue_follows_the_callers_transaction(db_url: str, conn: asyncpg.Connection) -> None:
    app = await asyncpg.connect(db_url)
    try:
        client = AsyncClient(app)
        with pytest.raises(RuntimeError, match="app failed"):
            async with app.transaction():
                rolled_back = await client.enqueue("welcome", {"user": 1}, connection=app)
                raise RuntimeError("app failed")
        assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE id = $1", rolled_back) == 0

        async with app.transaction():
            committed = await client.enqueue("welcome", {"user": 2}, connection=app)
            # not visible to others before the commit
            assert await conn.fetchval(COUNT) == 0
        assert (await job_row(conn, committed))["status"] == "pending"
        assert await conn.fetchval(COUNT) == 1
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload": [1, 2, 3]}, "payload must be a JSON object (a dict), not list"),
        ({"payload": "text"}, "payload must be a JSON object (a dict), not str"),
        ({"payload": {"x": float("nan")}}, "payload is not JSON-serialisable"),
        ({"payload": {"x": float("inf")}}, "payload is not JSON-serialisable"),
        ({"payload": {"x": object()}}, "payload is not JSON-serialisable"),
        ({"payload": {"x": "a\x00b"}}, "NUL character"),
        ({"payload": {"a\x00": 1}}, "NUL character"),
        ({"payload": {"blob": "x" * 1_048_577}}, "the limit is 1048576 bytes"),
        ({"priority": 2**31}, "priority must be an integer that fits in 32 bits"),
        ({"priority": 1.5}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"max_attempts": 0}, "max_attempts must be an integer from 1 to 1000"),
        ({"max_attempts": 1001}, "max_attempts must be an integer from 1 to 1000"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at must be timezone-aware"),
        ({"dedupe_key": "k" * 501}, "dedupe_key must be a string of at most 500"),
        ({"job_type": ""}, "job_type must be a non-empty string"),
        ({"job_type": "t" * 201}, "job_type must be a non-empty string of at most 200"),
        ({"queue": ""}, "queue must be a non-empty string"),
    ],
)
async def test_invalid_jobs_are_refused_with_a_clear_message(
    pool: asyncpg.Pool, conn: asyncpg.Connection, kwargs: dict[str, Any], message: str
) -> None:
    args = {"job_type": "checked", "payload": {}, **kwargs}
    job_type, payload = args.pop("job_type"), args.pop("payload")
    with pytest.raises(InvalidJob) as raised:
        await AsyncClient(pool).enqueue(job_type, payload, **args)
    assert message in str(raised.value)
    with pytest.raises(InvalidJob):
        NewJob(job_type, payload, **args).validated()
    assert await conn.fetchval(COUNT) == 0


@pytest.mark.parametrize("field", ["job_type", "queue", "dedupe_key"])
async def test_nul_in_text_arguments_is_invalid_job(pool: asyncpg.Pool, field: str) -> None:
    args: dict[str, Any] = {"job_type": "checked", field: "bad\x00value"}
    job_type = args.pop("job_type")
    with pytest.raises(InvalidJob, match="NUL"):
        await AsyncClient(pool).enqueue(job_type, {}, **args)


async def test_largest_payload_under_the_limit_is_accepted(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    overhead = len('{"blob":""}')
    job_id = await AsyncClient(pool).enqueue("big", {"blob": "x" * (1_000_000 - overhead)})
    assert await conn.fetchval("SELECT length(payload->>'blob') FROM background_jobs WHERE id = $1", job_id) == (
        1_000_000 - overhead
    )


async def test_cancel_a_pending_job_and_retry_a_dead_one(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    pending = await client.enqueue("cancellable")
    assert await client.cancel(pending) == "cancelled"
    row = await job_row(conn, pending)
    assert row["status"] == "cancelled"
    assert row["finished_at"] is not None
    assert await client.cancel(pending) == "cancelled"  # as it already was
    assert await client.cancel(pending + 1000) is None  # no such job

    running = await client.enqueue("busy")
    await conn.execute("UPDATE background_jobs SET status = 'running', attempts = 1 WHERE id = $1", running)
    assert await client.cancel(running) == "cancelling"
    assert (await job_row(conn, running))["status"] == "running"  # its worker stops it

    done = await client.enqueue("done")
    await conn.execute("UPDATE background_jobs SET status = 'completed', finished_at = now() WHERE id = $1", done)
    assert await client.cancel(done) == "completed"
    assert (await job_row(conn, done))["status"] == "completed"

    dead = await client.enqueue("fragile", max_attempts=2)
    await conn.execute(
        "UPDATE background_jobs SET status = 'dead', attempts = 2, finished_at = now(), last_error = 'boom'"
        " WHERE id = $1",
        dead,
    )
    assert await client.retry(dead) is True
    row = await job_row(conn, dead)
    assert (row["status"], row["attempts"], row["finished_at"]) == ("pending", 0, None)
    assert row["scheduled_at"] <= await conn.fetchval("SELECT now()")
    assert await client.retry(dead) is False  # pending: nothing to retry
    assert await client.retry(running) is False
    assert await client.retry(pending) is True  # a cancelled job can be retried too
    assert (await job_row(conn, pending))["status"] == "pending"


JSON_COLUMNS = {"payload": {"n": [1, 2.5, None, "é"]}, "result": [{"ok": True}], "progress": 0.25}


async def test_a_record_holds_its_json_columns_as_python_values(conn: asyncpg.Connection, db_url: str) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, status, attempts, result, progress, finished_at)"
        " VALUES ('report', $1::jsonb, 'completed', 1, $2::jsonb, $3::jsonb, now()) RETURNING id",
        *(json.dumps(value) for value in JSON_COLUMNS.values()),
    )
    bare = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('report') RETURNING id")
    record = await AsyncClient(conn).get(job_id)
    with psycopg.connect(db_url) as pg:
        sync_record = Client(pg).get(job_id)
        sync_bare = Client(pg).get(bare)
    async_bare = await AsyncClient(conn).get(bare)
    for got in (record, sync_record):
        assert got is not None
        assert (got.payload, got.result, got.progress) == tuple(JSON_COLUMNS.values())
    for got in (async_bare, sync_bare):
        assert got is not None
        assert (got.payload, got.result, got.progress) == ({}, None, None)


# -- Client (psycopg 3) --------------------------------------------------------------------


def test_sync_enqueue_with_defaults_and_options(pg: psycopg.Connection[Any]) -> None:
    client = Client(pg)
    job_id = client.enqueue("send_email", {"to": "b@example.com"})
    run_at = datetime(2032, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = client.enqueue("send_email", {"to": "c@example.com"}, queue="mail", priority=7, run_at=run_at)
    pg.commit()
    record = client.get(job_id)
    assert record is not None
    assert (record.queue, record.priority, record.max_attempts, record.status) == ("default", 0, 5, "pending")
    assert record.payload == {"to": "b@example.com"}
    record = client.get(later)
    assert record is not None
    assert (record.queue, record.priority, record.scheduled_at) == ("mail", 7, run_at)
    assert client.get(later + 1000) is None


def test_sync_enqueue_follows_the_callers_transaction(db_url: str, pg: psycopg.Connection[Any]) -> None:
    client = Client(pg)
    rolled_back = client.enqueue("welcome", {"user": 1})
    pg.rollback()
    committed = client.enqueue("welcome", {"user": 2})
    with psycopg.connect(db_url) as other:
        # uncommitted: nobody else sees it
        assert other.execute(COUNT).fetchone() == (0,)
        pg.commit()
        assert other.execute(COUNT).fetchone() == (1,)
        assert other.execute("SELECT id FROM background_jobs").fetchone() == (committed,)
    assert client.get(rolled_back) is None


def test_sync_dedupe_cancel_retry_and_enqueue_many(pg: psycopg.Connection[Any]) -> None:
    client = Client(pg)
    first = client.enqueue("sync_user", dedupe_key="user:9")
    assert client.enqueue("sync_user", dedupe_key="user:9") == first
    pg.execute("UPDATE background_jobs SET status = 'completed' WHERE id = %s", (first,))
    assert client.enqueue("sync_user", dedupe_key="user:9") != first

    ids = client.enqueue_many([NewJob("bulk", {"n": n}) for n in range(500)])
    assert len(ids) == 500
    assert client.enqueue_many([]) == []

    assert client.cancel(ids[0]) == "cancelled"
    assert client.get(ids[0]).status == "cancelled"  # type: ignore[union-attr]
    assert client.cancel(ids[-1] + 1000) is None
    pg.execute("UPDATE background_jobs SET status = 'dead', attempts = 5 WHERE id = %s", (ids[1],))
    assert client.retry(ids[1]) is True
    record = client.get(ids[1])
    assert record is not None
    assert (record.status, record.attempts) == ("pending", 0)
    pg.commit()
    assert pg.execute("SELECT count(*) FROM background_jobs WHERE job_type = 'bulk'").fetchone() == (500,)


def test_sync_invalid_job(pg: psycopg.Connection[Any]) -> None:
    client = Client(pg)
    with pytest.raises(InvalidJob, match="timezone-aware"):
        client.enqueue("x", run_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidJob, match="JSON object"):
        client.enqueue("x", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidJob, match="NUL"):
        client.enqueue("x", {"s": "\x00"})
    assert pg.execute(COUNT).fetchone() == (0,)


def test_sync_payload_with_a_percent_sign(pg: psycopg.Connection[Any]) -> None:
    # our SQL is rewritten to psycopg's %(name)s style: a literal % must survive
    client = Client(pg)
    job_id = client.enqueue("fmt", {"template": "100% of %(name)s and %s"})
    record = client.get(job_id)
    assert record is not None
    assert record.payload == {"template": "100% of %(name)s and %s"}


# -- SQL: the function and plain INSERT ----------------------------------------------------


async def test_enqueue_job_function_with_named_arguments(conn: asyncpg.Connection) -> None:
    # the way Supabase RPC / PostgREST calls it
    job_id = await conn.fetchval(
        "SELECT enqueue_job(job_type => 'rpc', payload => $1::jsonb, priority => 4, dedupe_key => 'rpc:1')",
        '{"from": "rpc"}',
    )
    row = await job_row(conn, job_id)
    assert (row["job_type"], json.loads(row["payload"]), row["priority"], row["queue"], row["max_attempts"]) == (
        "rpc",
        {"from": "rpc"},
        4,
        "default",
        5,
    )
    assert await conn.fetchval("SELECT enqueue_job(job_type => 'rpc', dedupe_key => 'rpc:1')") == job_id
    minimal = await conn.fetchval("SELECT enqueue_job('rpc')")
    assert minimal != job_id
    row = await job_row(conn, minimal)
    assert (json.loads(row["payload"]), row["queue"], row["priority"], row["status"]) == ({}, "default", 0, "pending")
    nulls = await conn.fetchval(
        "SELECT enqueue_job(job_type => 'rpc', queue => NULL, priority => NULL, max_attempts => NULL)"
    )
    row = await job_row(conn, nulls)
    assert (json.loads(row["payload"]), row["queue"], row["priority"], row["max_attempts"]) == ({}, "default", 0, 5)
    await conn.execute("UPDATE background_jobs SET status = 'failed' WHERE id = $1", job_id)
    assert await conn.fetchval("SELECT enqueue_job(job_type => 'rpc', dedupe_key => 'rpc:1')") not in (job_id, None)


async def test_enqueue_job_function_rejects_a_non_object_payload(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="payload_check"):
        await conn.fetchval("SELECT enqueue_job('rpc', '[1, 2]'::jsonb)")
    assert await conn.fetchval(COUNT) == 0


@pytest.mark.parametrize(
    "call",
    [
        "SELECT enqueue_job('rpc', NULL)",
        "SELECT enqueue_job(job_type => 'rpc', payload => NULL)",
        "SELECT enqueue_jobs(ARRAY['rpc', 'rpc'], ARRAY['{}', NULL]::jsonb[], ARRAY['default', 'default'],"
        " ARRAY[0, 0], ARRAY[NULL, NULL]::timestamptz[], ARRAY[5, 5], ARRAY[NULL, NULL]::text[],"
        " ARRAY[NULL, NULL]::text[])",
    ],
    ids=["positional", "named", "bulk"],
)
async def test_enqueue_functions_refuse_a_null_payload(conn: asyncpg.Connection, call: str) -> None:
    # a NULL (a missing value in the caller's code) is not the empty object: leaving the argument
    # out is how to ask for {}
    with pytest.raises(asyncpg.NullValueNotAllowedError, match="payload must be a JSON object, not NULL"):
        await conn.fetchval(call)
    assert await conn.fetchval(COUNT) == 0


async def test_plain_insert_gets_the_documented_defaults(conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload) VALUES ('plain', '{\"k\": 1}') RETURNING id"
    )
    row = await job_row(conn, job_id)
    now = await conn.fetchval("SELECT now()")
    assert row["queue"] == "default"
    assert row["priority"] == 0
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert row["max_attempts"] == 5
    assert row["release_count"] == 0
    assert row["scheduled_at"] <= now and row["created_at"] <= now
    assert now - row["scheduled_at"] < timedelta(seconds=5)
    for column in ("dedupe_key", "started_at", "finished_at", "lease_expires_at", "worker_id", "last_error", "result"):
        assert row[column] is None, column
