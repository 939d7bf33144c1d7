"""The daemon end to end: a real in-process Daemon against this test's own database."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from jobrunner import JobContext, PermanentError, RetryLater, RetryPolicy, handler
from jobrunner.daemon.daemon import Daemon
from jobrunner.dsn import parse_database_url
from jobrunner.registry import HandlerRegistry
from tests.support import job_row, make_settings, running_daemon, url_with_query, wait_for, wait_until

STATUS = "SELECT status FROM background_jobs WHERE id = $1"
UNFINISHED = "SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'running')"


async def insert_job(conn: asyncpg.Connection, job_type: str, payload: Any = None, **columns: Any) -> int:
    """A job the way an app adds one with plain SQL."""
    names = ["job_type", "payload", *columns]
    values = [job_type, json.dumps(payload or {}), *columns.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    job_id: int = await conn.fetchval(
        f"INSERT INTO background_jobs ({', '.join(names)}) VALUES ({placeholders}) RETURNING id", *values
    )
    return job_id


async def db_now(conn: asyncpg.Connection) -> Any:
    return await conn.fetchval("SELECT clock_timestamp()")


@handler("noop")
async def noop(ctx: JobContext[dict[str, Any]]) -> str:
    return "done"


# -- claim order and scheduling ------------------------------------------------------------


async def test_claims_by_priority_then_scheduled_at(db_url: str, conn: asyncpg.Connection) -> None:
    ran: list[str] = []

    @handler("record")
    async def record(ctx: JobContext[dict[str, str]]) -> None:
        ran.append(ctx.payload["name"])

    # (name, priority, seconds ago): the expected order is priority first, then oldest scheduled_at
    jobs = [("low-old", 0, 30), ("high-new", 10, 1), ("mid-new", 5, 2), ("high-old", 10, 20), ("low-new", 0, 5)]
    for name, priority, ago in jobs:
        await insert_job(
            conn,
            "record",
            {"name": name},
            priority=priority,
            scheduled_at=await db_now(conn) - timedelta(seconds=ago),
        )
    async with running_daemon(db_url, [record], concurrency=1, batch_size=1):
        await wait_for(conn, UNFINISHED, expect=0, timeout=5)
    assert ran == ["high-old", "high-new", "mid-new", "low-old", "low-new"]


async def test_delayed_job_does_not_run_before_its_time(db_url: str, conn: asyncpg.Connection) -> None:
    delayed = await insert_job(conn, "noop", scheduled_at=await db_now(conn) + timedelta(seconds=1.0))
    async with running_daemon(db_url, [noop]):
        now_job = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, now_job, expect="completed", timeout=5)
        # the daemon has been claiming for a while: the delayed job is still waiting
        assert await conn.fetchval(STATUS, delayed) == "pending"
        await wait_for(conn, STATUS, delayed, expect="completed", timeout=5)
    row = await job_row(conn, delayed)
    assert row["started_at"] >= row["scheduled_at"]
    assert row["attempts"] == 1


# -- retries -------------------------------------------------------------------------------


async def test_retries_follow_the_backoff_then_the_job_is_dead(db_url: str, conn: asyncpg.Connection) -> None:
    policy = RetryPolicy(base_delay=0.2, factor=2.0, max_delay=0.5, jitter=False)
    # attempt -> (scheduled_at it ran for, database time at which it failed)
    seen: dict[int, tuple[Any, Any]] = {}

    @handler("always_fails", retry=policy)
    async def always_fails(ctx: JobContext[dict[str, Any]]) -> None:
        failed_at = await ctx.pool.fetchval("SELECT clock_timestamp()")
        seen[ctx.attempt] = (ctx.job.scheduled_at, failed_at)
        raise RuntimeError(f"boom on attempt {ctx.attempt}")

    job_id = await insert_job(conn, "always_fails", max_attempts=4)
    async with running_daemon(db_url, [always_fails]) as daemon:
        await wait_for(conn, STATUS, job_id, expect="dead", timeout=10)

    assert sorted(seen) == [1, 2, 3, 4]
    for attempt in (1, 2, 3):
        _, failed_at = seen[attempt]
        scheduled_next, _ = seen[attempt + 1]
        pushed = (scheduled_next - failed_at).total_seconds()
        ceiling = policy.ceiling_for(attempt)  # 0.2, 0.4, then capped at 0.5
        assert ceiling <= pushed < ceiling + 0.15, (attempt, pushed, ceiling)
    row = await job_row(conn, job_id)
    assert row["attempts"] == 4
    assert row["last_error"] == "RuntimeError: boom on attempt 4"
    assert "boom on attempt 4" in row["last_error_traceback"]
    assert "always_fails" in row["last_error_traceback"]
    assert row["finished_at"] is not None
    assert row["lease_expires_at"] is None
    assert daemon.stats.retried == 3
    assert daemon.stats.dead == 1


async def test_error_and_traceback_are_kept_between_attempts(db_url: str, conn: asyncpg.Connection) -> None:
    @handler("fails_once", retry=RetryPolicy(base_delay=30, jitter=False))
    async def fails_once(ctx: JobContext[dict[str, Any]]) -> None:
        raise ValueError("upstream said no")

    job_id = await insert_job(conn, "fails_once")
    async with running_daemon(db_url, [fails_once]):
        await wait_for(conn, "SELECT attempts = 1 AND status = 'pending' FROM background_jobs WHERE id = $1", job_id)
    row = await job_row(conn, job_id)
    assert row["last_error"] == "ValueError: upstream said no"
    assert "Traceback" in row["last_error_traceback"]
    assert "fails_once" in row["last_error_traceback"]
    assert row["worker_id"] == "test-worker"
    waits = (row["scheduled_at"] - row["started_at"]).total_seconds()
    assert 30 <= waits < 31


async def test_retry_later_pushes_scheduled_at_by_its_seconds(db_url: str, conn: asyncpg.Connection) -> None:
    @handler("rate_limited", retry=RetryPolicy(base_delay=0, jitter=False))
    async def rate_limited(ctx: JobContext[dict[str, Any]]) -> None:
        raise RetryLater(42, "429 from upstream")

    job_id = await insert_job(conn, "rate_limited")
    async with running_daemon(db_url, [rate_limited]):
        await wait_for(conn, "SELECT attempts = 1 AND status = 'pending' FROM background_jobs WHERE id = $1", job_id)
        written_by = await db_now(conn)
    row = await job_row(conn, job_id)
    assert row["started_at"] + timedelta(seconds=42) <= row["scheduled_at"] <= written_by + timedelta(seconds=42)
    assert row["last_error"] == "RetryLater: 429 from upstream"


async def test_permanent_error_fails_after_one_attempt(db_url: str, conn: asyncpg.Connection) -> None:
    calls = 0

    @handler("refuses")
    async def refuses(ctx: JobContext[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("account was deleted")

    job_id = await insert_job(conn, "refuses")
    async with running_daemon(db_url, [refuses]) as daemon:
        await wait_for(conn, STATUS, job_id, expect="failed", timeout=5)
    row = await job_row(conn, job_id)
    assert calls == 1
    assert row["attempts"] == 1
    assert row["max_attempts"] == 5
    assert row["last_error"] == "PermanentError: account was deleted"
    assert "refuses" in row["last_error_traceback"]
    assert daemon.stats.failed == 1


# -- bad input -----------------------------------------------------------------------------


class Item(BaseModel):
    name: str = Field(max_length=50)
    count: int = Field(ge=0)


@handler("item", payload_model=Item)
async def item_handler(ctx: JobContext[Item]) -> dict[str, Any]:
    return {"name": ctx.payload.name, "count": ctx.payload.count}


async def test_bad_payload_and_unknown_type_fail_and_the_daemon_goes_on(db_url: str, conn: asyncpg.Connection) -> None:
    bad_payload = await insert_job(conn, "item", {"name": "widget", "count": "many"})
    unknown = await insert_job(conn, "no_such_type", {"x": 1})
    async with running_daemon(db_url, [item_handler, noop]) as daemon:
        await wait_for(conn, STATUS, bad_payload, expect="failed", timeout=5)
        await wait_for(conn, STATUS, unknown, expect="failed", timeout=5)
        good = await insert_job(conn, "item", {"name": "widget", "count": 3})
        await wait_for(conn, STATUS, good, expect="completed", timeout=5)

    row = await job_row(conn, bad_payload)
    assert row["attempts"] == 1
    assert row["last_error"].startswith("invalid payload for item: ")
    assert "count" in row["last_error"]
    assert "name" not in row["last_error"]  # only the field that is wrong
    row = await job_row(conn, unknown)
    assert row["attempts"] == 1
    assert "'no_such_type'" in row["last_error"]
    assert "item" in row["last_error"] and "noop" in row["last_error"]  # lists the known types
    assert json.loads((await job_row(conn, good))["result"]) == {"name": "widget", "count": 3}
    assert daemon.stats.failed == 2
    assert daemon.stats.completed == 1


_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=60)
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["name", "count"]) | _text
_payloads = st.dictionaries(_keys, _json, max_size=4) | st.fixed_dictionaries(
    {"name": _json | _text, "count": _json | st.integers()}
)


def generated_payloads(count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @hypothesis_settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(_payloads)
    def collect(payload: dict[str, Any]) -> None:
        found.append(payload)

    collect()
    return found


def valid_item(payload: Any) -> bool:
    try:
        Item.model_validate(payload)
    except ValidationError:
        return False
    return True


async def test_arbitrary_json_payloads_end_failed_or_completed(db_url: str, conn: asyncpg.Connection) -> None:
    payloads = [
        *generated_payloads(60),
        {"name": "ok", "count": 10**40},
        {"name": "x" * 51, "count": 1},
        {"name": "", "count": -1},
        {"name": None, "count": None},
        {"name": "ok", "count": 1.5},
        {"name": "ok", "count": "7"},
        {"name": ["ok"], "count": {"n": 1}},
    ]
    texts = [json.dumps(p) for p in payloads]
    ids = await conn.fetchval(
        "WITH added AS (INSERT INTO background_jobs (job_type, payload)"
        " SELECT 'item', p FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(p, n) ORDER BY n RETURNING id)"
        " SELECT array_agg(id ORDER BY id) FROM added",
        texts,
    )
    assert len(ids) == len(payloads)
    async with running_daemon(db_url, [item_handler, noop], concurrency=20) as daemon:
        await wait_for(conn, UNFINISHED, expect=0, timeout=15)
        after = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, after, expect="completed", timeout=5)

    rows = await conn.fetch(
        "SELECT id, payload::text AS payload, status, attempts, last_error FROM background_jobs"
        " WHERE job_type = 'item' ORDER BY id"
    )
    assert len(rows) == len(payloads)
    for row in rows:
        # the payload as the daemon read it back from jsonb
        expected = "completed" if valid_item(json.loads(row["payload"])) else "failed"
        assert (row["status"], row["attempts"]) == (expected, 1), dict(row)
        if expected == "failed":
            assert row["last_error"].startswith("invalid payload for item: "), dict(row)
    assert daemon.stats.failed + daemon.stats.completed == len(payloads) + 1


# -- handler options -----------------------------------------------------------------------


async def test_handler_timeout_fails_the_attempt(db_url: str, conn: asyncpg.Connection) -> None:
    cancelled = asyncio.Event()

    @handler("sleepy", timeout=0.2, retry=RetryPolicy(base_delay=60, jitter=False))
    async def sleepy(ctx: JobContext[dict[str, Any]]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = await insert_job(conn, "sleepy")
    started = time.monotonic()
    async with running_daemon(db_url, [sleepy]):
        await wait_for(conn, "SELECT attempts = 1 AND status = 'pending' FROM background_jobs WHERE id = $1", job_id)
    assert cancelled.is_set()
    assert time.monotonic() - started < 5
    row = await job_row(conn, job_id)
    assert "timed out after 0.2s" in row["last_error"]
    assert row["last_error_traceback"]


async def test_a_burst_drain_ends_without_waiting_for_a_poll_after_its_last_short_claim(
    db_url: str, conn: asyncpg.Connection
) -> None:
    @handler("quick")
    async def quick(ctx: JobContext[dict[str, Any]]) -> None:
        return None

    # concurrency 10: claims of 10, 10, then 5 (short): the queue ran dry with jobs still held
    await conn.execute("INSERT INTO background_jobs (job_type) SELECT 'quick' FROM generate_series(1, 25)")
    settings = make_settings(db_url, concurrency=10, poll_interval=60.0)
    daemon = Daemon(settings, HandlerRegistry([quick]), parse_database_url(db_url), burst=True)
    # a whole poll interval (60 s) after the short claim would blow this bound
    stats = await asyncio.wait_for(daemon.run(), 20)
    assert stats.completed == 25


async def test_an_infinite_handler_timeout_means_no_deadline(db_url: str, conn: asyncpg.Connection) -> None:
    # timeout=inf is how one handler opts out of JOBRUNNER_DEFAULT_TIMEOUT
    @handler("unhurried", timeout=math.inf)
    async def unhurried(ctx: JobContext[dict[str, Any]]) -> str:
        await asyncio.sleep(0)
        return "done"

    job_id = await insert_job(conn, "unhurried")
    async with running_daemon(db_url, [unhurried]):
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)


async def test_follow_up_job_exists_only_if_the_handler_transaction_commits(
    db_url: str, conn: asyncpg.Connection
) -> None:
    @handler("child")
    async def child(ctx: JobContext[dict[str, str]]) -> str:
        return ctx.payload["from"]

    @handler("parent_commits")
    async def parent_commits(ctx: JobContext[dict[str, Any]]) -> None:
        async with ctx.transaction() as tx:
            await tx.execute("SELECT 1")
            await ctx.enqueue("child", {"from": "committed"}, connection=tx)

    @handler("parent_rolls_back")
    async def parent_rolls_back(ctx: JobContext[dict[str, Any]]) -> None:
        async with ctx.transaction() as tx:
            await ctx.enqueue("child", {"from": "rolled back"}, connection=tx)
            raise PermanentError("changed my mind")

    good = await insert_job(conn, "parent_commits")
    bad = await insert_job(conn, "parent_rolls_back")
    async with running_daemon(db_url, [child, parent_commits, parent_rolls_back]):
        await wait_for(conn, UNFINISHED, expect=0, timeout=5)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM background_jobs WHERE job_type = 'child' AND status = 'completed'"
            )
            == 1
        )
    assert (await job_row(conn, good))["status"] == "completed"
    assert (await job_row(conn, bad))["status"] == "failed"
    children = await conn.fetch(
        "SELECT payload->>'from' AS origin, result FROM background_jobs WHERE job_type = 'child'"
    )
    assert [(r["origin"], r["result"]) for r in children] == [("committed", '"committed"')]


async def test_max_concurrency_per_handler(db_url: str, conn: asyncpg.Connection) -> None:
    running = 0
    peak = 0

    @handler("limited", max_concurrency=2)
    async def limited(ctx: JobContext[dict[str, Any]]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            for _ in range(3):
                await asyncio.sleep(0.02)  # stands for the handler's work
        finally:
            running -= 1

    for _ in range(8):
        await insert_job(conn, "limited")
    async with running_daemon(db_url, [limited], concurrency=6):
        await wait_for(conn, UNFINISHED, expect=0, timeout=5)
    assert peak == 2
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 8


async def test_jobs_over_max_concurrency_do_not_take_slots_from_other_types(
    db_url: str, conn: asyncpg.Connection
) -> None:
    gate = asyncio.Event()

    @handler("one_at_a_time", max_concurrency=1)
    async def one_at_a_time(ctx: JobContext[dict[str, Any]]) -> None:
        await gate.wait()

    for _ in range(5):
        await insert_job(conn, "one_at_a_time")
    async with running_daemon(db_url, [one_at_a_time, noop], concurrency=3):
        await wait_for(conn, "SELECT count(*) > 0 FROM background_jobs WHERE status = 'running'", timeout=5)
        other = await insert_job(conn, "noop")
        try:
            # two slots are free in principle: the other type should run now
            await wait_for(conn, STATUS, other, expect="completed", timeout=2)
        finally:
            gate.set()


async def test_claims_only_as_many_as_free_slots(db_url: str, conn: asyncpg.Connection) -> None:
    gate = asyncio.Event()
    inside = 0

    @handler("blocked")
    async def blocked(ctx: JobContext[dict[str, Any]]) -> None:
        nonlocal inside
        inside += 1
        await gate.wait()

    for _ in range(10):
        await insert_job(conn, "blocked")
    running_sql = "SELECT count(*) FROM background_jobs WHERE status = 'running'"
    async with running_daemon(db_url, [blocked], concurrency=3) as daemon:
        await wait_for(conn, running_sql, expect=3, timeout=5)
        await wait_until(lambda: inside == 3, timeout=5, what="3 handlers running")
        assert await conn.fetchval(running_sql) == 3
        assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'pending'") == 7
        gate.set()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=10, timeout=5)
    assert daemon.stats.claimed == 10


# -- waking up -----------------------------------------------------------------------------


async def test_listen_wakes_an_idle_daemon(db_url: str, conn: asyncpg.Connection) -> None:
    async with running_daemon(db_url, [noop], poll_interval=30) as daemon:
        listener = daemon.listener
        assert listener is not None
        await wait_until(lambda: listener.listening, timeout=5, what="LISTEN")
        for _ in range(2):
            started = time.monotonic()
            job_id = await insert_job(conn, "noop")
            await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, f"took {elapsed:.2f}s: woken by polling, not by NOTIFY"


async def test_listen_ignores_other_queues(db_url: str, conn: asyncpg.Connection) -> None:
    # a NOTIFY for another queue must not wake the fetcher; its own queue's must
    async with running_daemon(db_url, [noop], poll_interval=30, queues=["mine"]) as daemon:
        listener = daemon.listener
        assert listener is not None
        await wait_until(lambda: listener.listening, timeout=5, what="LISTEN")
        theirs = await insert_job(conn, "noop", queue="theirs")
        mine = await insert_job(conn, "noop", queue="mine")
        await wait_for(conn, STATUS, mine, expect="completed", timeout=5)
    assert await conn.fetchval(STATUS, theirs) == "pending"


async def test_poll_only_mode_runs_jobs(db_url: str, conn: asyncpg.Connection) -> None:
    async with running_daemon(db_url, [noop], listen=False, poll_interval=0.05) as daemon:
        assert daemon.listener is None
        job_id = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)


async def test_pgbouncer_url_polls_without_statement_cache(db_url: str, conn: asyncpg.Connection) -> None:
    async with running_daemon(url_with_query(db_url, "pgbouncer=true"), [noop], poll_interval=0.05) as daemon:
        assert daemon.database_url.behind_pooler
        assert "pgbouncer" not in daemon.database_url.url
        assert daemon.listener is None
        job_id = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)
        assert daemon.store is not None
        pool = daemon.store.pool
        async with pool.acquire() as daemon_conn:
            for _ in range(3):
                await daemon_conn.fetchval("SELECT 1")
            # a cached (named) prepared statement would be missing on the pooler's next server connection
            assert await daemon_conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0


# -- leases --------------------------------------------------------------------------------


async def test_heartbeat_keeps_the_lease_of_a_long_job(db_url: str, conn: asyncpg.Connection) -> None:
    @handler("long")
    async def long(ctx: JobContext[dict[str, Any]]) -> None:
        await asyncio.sleep(2.5)  # the work: longer than two leases

    job_id = await insert_job(conn, "long")
    async with running_daemon(db_url, [long], lease_seconds=1, rescue_interval=0.1) as daemon:
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=10)
    row = await job_row(conn, job_id)
    assert row["attempts"] == 1
    assert row["last_error"] is None
    assert daemon.stats.lost_leases == 0
    assert daemon.stats.completed == 1


async def test_rescuer_requeues_a_job_whose_worker_died(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(
        conn,
        "noop",
        status="running",
        attempts=1,
        worker_id="dead-worker",
        lease_expires_at=await db_now(conn) - timedelta(seconds=5),
    )
    async with running_daemon(db_url, [noop]):
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)
    row = await job_row(conn, job_id)
    assert row["attempts"] == 2
    assert row["worker_id"] == "test-worker"
    assert "lease expired" in row["last_error"]
    assert "dead-worker" in row["last_error"]


async def test_rescuer_buries_a_job_on_its_last_attempt(db_url: str, conn: asyncpg.Connection) -> None:
    calls = 0

    @handler("never_again")
    async def never_again(ctx: JobContext[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1

    job_id = await insert_job(
        conn,
        "never_again",
        status="running",
        attempts=3,
        max_attempts=3,
        worker_id="dead-worker",
        lease_expires_at=await db_now(conn) - timedelta(seconds=5),
    )
    async with running_daemon(db_url, [never_again]):
        await wait_for(conn, STATUS, job_id, expect="dead", timeout=5)
    row = await job_row(conn, job_id)
    assert calls == 0
    assert row["attempts"] == 3
    assert row["finished_at"] is not None
    assert row["lease_expires_at"] is None
    assert row["last_error"] == "lease expired: worker dead-worker stopped heartbeating during attempt 3"


TAKE_LEASE = (
    "UPDATE background_jobs SET attempts = attempts + 1, worker_id = 'other-worker', started_at = now(),"
    " lease_expires_at = now() + interval '1 hour' WHERE id = $1"
)


async def test_outcome_of_a_lost_lease_is_not_written(db_url: str, conn: asyncpg.Connection) -> None:
    started = asyncio.Event()
    gate = asyncio.Event()

    @handler("fenced")
    async def fenced(ctx: JobContext[dict[str, Any]]) -> str:
        started.set()
        await gate.wait()
        return "first worker"

    job_id = await insert_job(conn, "fenced")
    async with running_daemon(db_url, [fenced]) as daemon:
        await asyncio.wait_for(started.wait(), 5)
        await conn.execute(TAKE_LEASE, job_id)  # another worker re-claimed it meanwhile
        gate.set()
    # leaving the block waited for the outcome to be written (or refused)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("running", 2, "other-worker")
    assert row["result"] is None
    assert row["finished_at"] is None
    assert daemon.stats.lost_leases == 1
    assert daemon.stats.completed == 0


async def test_heartbeat_cancels_a_handler_whose_lease_was_taken(db_url: str, conn: asyncpg.Connection) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @handler("stuck")
    async def stuck(ctx: JobContext[dict[str, Any]]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = await insert_job(conn, "stuck")
    async with running_daemon(db_url, [stuck], lease_seconds=1) as daemon:
        await asyncio.wait_for(started.wait(), 5)
        await conn.execute(TAKE_LEASE, job_id)
        await asyncio.wait_for(cancelled.wait(), 3)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["worker_id"], row["release_count"]) == (
        "running",
        2,
        "other-worker",
        0,
    )
    assert daemon.stats.lost_leases == 1
    assert daemon.stats.released == 0


# -- the database goes away ----------------------------------------------------------------

CUT_CONNECTIONS = (
    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS cut"
)


async def test_daemon_survives_its_connections_being_cut(db_url: str, conn: asyncpg.Connection) -> None:
    started = asyncio.Event()
    gate = asyncio.Event()

    @handler("in_flight")
    async def in_flight(ctx: JobContext[dict[str, Any]]) -> str:
        started.set()
        await gate.wait()
        return "survived"

    async with running_daemon(db_url, [in_flight, noop]) as daemon:
        # cut while idle
        assert await conn.fetchval(CUT_CONNECTIONS) >= 1
        after_idle_cut = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, after_idle_cut, expect="completed", timeout=10)

        # cut while a job runs
        running = await insert_job(conn, "in_flight")
        await asyncio.wait_for(started.wait(), 5)
        assert await conn.fetchval(CUT_CONNECTIONS) >= 1
        gate.set()
        await wait_for(conn, STATUS, running, expect="completed", timeout=10)
        later = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, later, expect="completed", timeout=10)
    row = await job_row(conn, running)
    assert row["attempts"] == 1
    assert row["result"] == '"survived"'
    assert daemon.stats.completed == 3
    assert daemon.stats.lost_leases == 0


# -- shutdown ------------------------------------------------------------------------------


async def test_stop_lets_a_running_job_finish_within_the_grace(db_url: str, conn: asyncpg.Connection) -> None:
    started = asyncio.Event()
    gate = asyncio.Event()

    @handler("finishing")
    async def finishing(ctx: JobContext[dict[str, Any]]) -> str:
        started.set()
        await gate.wait()
        return "finished"

    job_id = await insert_job(conn, "finishing")
    async with running_daemon(db_url, [finishing, noop], shutdown_grace=5) as daemon:
        await asyncio.wait_for(started.wait(), 5)
        daemon.request_stop()
        not_claimed = await insert_job(conn, "noop")
        gate.set()
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)
    row = await job_row(conn, job_id)
    assert row["attempts"] == 1
    assert row["result"] == '"finished"'
    assert row["release_count"] == 0
    assert await conn.fetchval(STATUS, not_claimed) == "pending"  # stopping: nothing new is claimed


async def test_stop_hands_back_a_job_that_outlives_the_grace(db_url: str, conn: asyncpg.Connection) -> None:
    started = asyncio.Event()

    @handler("forever")
    async def forever(ctx: JobContext[dict[str, Any]]) -> None:
        started.set()
        await asyncio.Event().wait()

    job_id = await insert_job(conn, "forever")
    begun = time.monotonic()
    async with running_daemon(db_url, [forever], shutdown_grace=0.2) as daemon:
        await asyncio.wait_for(started.wait(), 5)
    assert time.monotonic() - begun < 5
    row = await job_row(conn, job_id)
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert row["release_count"] == 1
    assert row["lease_expires_at"] is None
    assert daemon.stats.released == 1


# -- outcomes that the database cannot store -----------------------------------------------


async def test_outcome_with_a_nul_character_does_not_wedge_the_completer(db_url: str, conn: asyncpg.Connection) -> None:
    @handler("nul_result")
    async def nul_result(ctx: JobContext[dict[str, Any]]) -> dict[str, str]:
        return {"raw": "bytes\x00from a device"}

    @handler("nul_error", retry=RetryPolicy(base_delay=60, jitter=False))
    async def nul_error(ctx: JobContext[dict[str, Any]]) -> None:
        raise ValueError("unexpected byte \x00 in reply")

    for job_type in ("nul_result", "nul_error"):
        await insert_job(conn, job_type)
    async with running_daemon(db_url, [nul_result, nul_error, noop], shutdown_grace=0):
        settled = "SELECT count(*) FROM background_jobs WHERE attempts = 0 OR status = 'running'"
        await wait_for(conn, settled, expect=0, timeout=3)
        later = await insert_job(conn, "noop")
        await wait_for(conn, STATUS, later, expect="completed", timeout=3)
    statuses = await conn.fetch("SELECT job_type, status FROM background_jobs ORDER BY id")
    assert [tuple(r) for r in statuses] == [
        ("nul_result", "completed"),
        ("nul_error", "pending"),
        ("noop", "completed"),
    ]
