"""Job flows (migration 0004_flows.sql): dependents wait blocked, outside every claim, until their
parents finish; the parents' outcome writes release them in the same transaction, whichever path
writes the outcome (the completer's record_outcomes, the rescuer, cancel_job, a DELETE); a failed
parent cancels its dependents unless they run anyway; enqueue_dependent_job's checks and who may
depend on which job; the clients' depends_on, enqueue_group and parents; a real daemon running a
group and its callback; `jobrunner status --job`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest

from jobrunner import AsyncClient, Client, InvalidJob, JobContext, NewJob, handler
from jobrunner.limits import GlobalLimits, QueueLimits
from jobrunner.sql_files import Queries
from jobrunner.store import ClaimPlan, JobStore, LimitedType
from tests.support import running_daemon, url_as

Q = Queries("public")
STATUS = "SELECT id, status FROM background_jobs WHERE id = ANY($1::bigint[]) ORDER BY id"


async def statuses(conn: asyncpg.Connection, *ids: int) -> list[str]:
    rows = await conn.fetch(STATUS, list(ids))
    by_id = {row["id"]: row["status"] for row in rows}
    return [by_id[i] for i in ids]


async def start(conn: asyncpg.Connection, *ids: int) -> None:
    """Put jobs in the state a claim leaves them in: running, attempt 1, leased."""
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, started_at = now(), "
        "lease_expires_at = now() + interval '1 minute', worker_id = 'test' WHERE id = ANY($1::bigint[])",
        list(ids),
    )


async def complete(conn: asyncpg.Connection, *ids: int) -> list[int]:
    """The completer's write of plain completions (sql/functions/record_outcomes.sql)."""
    rows = await conn.fetch(Q.record_outcomes, list(ids), [1] * len(ids), [], [], [], [], [], [], [], [])
    return [row["id"] for row in rows]


async def end(conn: asyncpg.Connection, job_id: int, status: str, result: Any = None) -> None:
    """The completer's write of one other outcome (failed, dead, or completed with a result)."""
    written = await conn.fetch(
        Q.record_outcomes,
        [],
        [],
        [job_id],
        [1],
        [status],
        [0.0],
        [None if status == "completed" else "boom"],
        [None],
        [None if result is None else json.dumps(result)],
        [False],
    )
    assert [row["id"] for row in written] == [job_id]


async def dependent(conn: asyncpg.Connection, parents: list[int], job_type: str = "child", **kwargs: Any) -> int:
    named = "".join(f", {name} => ${i}" for i, name in enumerate(kwargs, start=3))
    job_id: int = await conn.fetchval(
        f"SELECT enqueue_dependent_job($1::bigint[], $2{named})", parents, job_type, *kwargs.values()
    )
    return job_id


async def enqueue(conn: asyncpg.Connection, job_type: str = "parent") -> int:
    job_id: int = await conn.fetchval("SELECT enqueue_job($1)", job_type)
    return job_id


# -- release at the parents' outcome -----------------------------------------------------------


async def test_a_dependent_is_blocked_until_its_last_parent_completes(conn: asyncpg.Connection) -> None:
    a, b, c = [await enqueue(conn) for _ in range(3)]
    child = await dependent(conn, [a, b, c])
    row = await conn.fetchrow("SELECT * FROM background_jobs WHERE id = $1", child)
    assert (row["status"], row["depends_on"], row["waiting_on"], row["parents_failed"]) == ("blocked", [a, b, c], 3, 0)
    assert row["on_parent_failure"] == "cancel"
    assert await conn.fetchval("SELECT count(*) FROM jobrunner_job_dependencies WHERE job_id = $1", child) == 3

    await start(conn, a, b, c)
    # two completions in one batch, as the completer writes them
    assert sorted(await complete(conn, a, b)) == [a, b]
    assert await statuses(conn, child) == ["blocked"]
    assert await conn.fetchval("SELECT waiting_on FROM background_jobs WHERE id = $1", child) == 1
    await complete(conn, c)
    assert await statuses(conn, child) == ["pending"]
    # the dependency rows go with their parents' outcomes
    assert await conn.fetchval("SELECT count(*) FROM jobrunner_job_dependencies") == 0


async def test_a_blocked_job_is_never_claimed(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    plan = ClaimPlan(
        ["default", "limited_q"],
        20,
        limited_limit=20,
        limited_types=[LimitedType("capped", None, GlobalLimits(max_running=10))],
        limited_queues={"limited_q": QueueLimits(max_running=10)},
    )
    store = JobStore(pool, "public")

    async def claimed() -> list[int]:
        return sorted(job.id for job in (await store.claim("w", 30.0, plan)).all)

    parent = await enqueue(conn)
    # every part of the claim: the unlimited walk, a limited type's, a limited queue's
    children = [
        await dependent(conn, [parent]),
        await dependent(conn, [parent], "capped"),
        await dependent(conn, [parent], queue="limited_q"),
    ]
    assert await claimed() == [parent]
    assert await claimed() == []
    await complete(conn, parent)
    assert await claimed() == children


async def test_the_release_wakes_idle_daemons(db_url: str, conn: asyncpg.Connection) -> None:
    parent = await enqueue(conn)
    await dependent(conn, [parent], queue="flows")
    await start(conn, parent)
    listener = await asyncpg.connect(db_url)
    heard: list[str] = []
    try:
        await listener.add_listener("jobrunner_public", lambda *args: heard.append(args[3]))
        await complete(conn, parent)
        # a round trip on the listening connection delivers what was sent before it
        await listener.execute("SELECT 1")
    finally:
        await listener.close()
    assert "flows" in heard


async def test_a_failed_parent_cancels_its_dependents_with_the_reason_and_theirs_in_turn(
    conn: asyncpg.Connection,
) -> None:
    a, b = await enqueue(conn), await enqueue(conn)
    child = await dependent(conn, [a, b])
    grandchild = await dependent(conn, [child])
    callback = await dependent(conn, [a, b], "callback", on_parent_failure="run")
    await start(conn, a, b)
    await end(conn, a, "failed")
    assert await statuses(conn, child, grandchild, callback) == ["cancelled", "cancelled", "blocked"]
    errors = await conn.fetch(
        "SELECT last_error, finished_at IS NOT NULL AS finished FROM background_jobs"
        " WHERE id = ANY($1::bigint[]) ORDER BY id",
        [child, grandchild],
    )
    assert [r["last_error"] for r in errors] == [
        f"cancelled: parent job {a} ended failed",
        f"cancelled: parent job {child} ended cancelled",
    ]
    assert all(r["finished"] for r in errors)
    # the callback runs anyway once the other parent finished, and knows how many failed
    await complete(conn, b)
    row = await conn.fetchrow("SELECT status, waiting_on, parents_failed FROM background_jobs WHERE id = $1", callback)
    assert tuple(row) == ("pending", 0, 1)


async def test_a_parent_that_dies_in_the_rescuer_releases_its_dependents(conn: asyncpg.Connection) -> None:
    parent = await enqueue(conn)
    await conn.execute("UPDATE background_jobs SET max_attempts = 1 WHERE id = $1", parent)
    child = await dependent(conn, [parent])
    await start(conn, parent)
    await conn.execute(
        "UPDATE background_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", parent
    )
    rescued = await conn.fetch(Q.rescue_expired_leases, 10)
    assert [(r["id"], r["status"]) for r in rescued] == [(parent, "dead")]
    assert await statuses(conn, child) == ["cancelled"]


async def test_cancelling_a_parent_or_a_blocked_job(conn: asyncpg.Connection) -> None:
    parent = await enqueue(conn)
    child = await dependent(conn, [parent])
    runs_anyway = await dependent(conn, [parent], on_parent_failure="run")
    other = await dependent(conn, [await enqueue(conn)])
    assert await conn.fetchval(Q.cancel_job, parent) == "cancelled"
    assert await statuses(conn, child, runs_anyway) == ["cancelled", "pending"]
    # a blocked job is cancelled at once, as a pending one
    assert await conn.fetchval(Q.cancel_job, other) == "cancelled"


async def test_deleting_an_unfinished_parent_counts_as_a_failure(conn: asyncpg.Connection) -> None:
    parent = await enqueue(conn)
    child = await dependent(conn, [parent])
    runs_anyway = await dependent(conn, [parent], on_parent_failure="run")
    await conn.fetch(Q.dashboard_delete_jobs, [parent])
    assert await statuses(conn, child, runs_anyway) == ["cancelled", "pending"]
    assert await conn.fetchval("SELECT last_error FROM background_jobs WHERE id = $1", child) == (
        f"cancelled: parent job {parent} ended deleted"
    )


async def test_a_parent_released_once_however_its_status_changes_later(conn: asyncpg.Connection) -> None:
    a, b = await enqueue(conn), await enqueue(conn)
    child = await dependent(conn, [a, b], on_parent_failure="run")
    await start(conn, a)
    await end(conn, a, "dead")
    # the operator retries it and it completes: the child is not counted down a second time
    await conn.fetch(Q.retry_job, a)
    await start(conn, a)
    await complete(conn, a)
    row = await conn.fetchrow("SELECT status, waiting_on, parents_failed FROM background_jobs WHERE id = $1", child)
    assert tuple(row) == ("blocked", 1, 1)


async def test_parents_already_finished_at_enqueue(conn: asyncpg.Connection) -> None:
    done, dead = await enqueue(conn), await enqueue(conn)
    await start(conn, done, dead)
    await complete(conn, done)
    await end(conn, dead, "dead")
    assert await statuses(conn, await dependent(conn, [done])) == ["pending"]
    cancelled = await dependent(conn, [done, dead])
    assert await conn.fetchval("SELECT last_error FROM background_jobs WHERE id = $1", cancelled) == (
        f"cancelled: parent job {dead} ended dead"
    )
    runs = await dependent(conn, [dead, done, dead], on_parent_failure="run")
    row = await conn.fetchrow("SELECT status, depends_on, parents_failed FROM background_jobs WHERE id = $1", runs)
    # duplicates count once
    assert tuple(row) == ("pending", sorted([done, dead]), 1)


# -- enqueue_dependent_job's checks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("enqueue_dependent_job(ARRAY[]::bigint[], 'x')", "non-empty array"),
        ("enqueue_dependent_job(NULL, 'x')", "non-empty array"),
        ("enqueue_dependent_job(ARRAY[NULL]::bigint[], 'x')", "without NULLs"),
        ("enqueue_dependent_job(ARRAY[[1]]::bigint[], 'x')", "non-empty array"),
        ("enqueue_dependent_job(ARRAY[1], 'x', NULL)", "not NULL"),
        ("enqueue_dependent_job(ARRAY[1], 'x', on_parent_failure => 'ignore')", "'cancel' or 'run'"),
        ("enqueue_dependent_job(ARRAY[1], 'x', on_parent_failure => NULL)", "'cancel' or 'run'"),
        ("enqueue_dependent_job(ARRAY[424242], 'x')", "there is no job 424242"),
    ],
)
async def test_enqueue_dependent_job_refuses_bad_arguments(conn: asyncpg.Connection, call: str, message: str) -> None:
    await enqueue(conn)
    with pytest.raises(asyncpg.PostgresError, match=message):
        await conn.fetchval(f"SELECT {call}")
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 1


# -- who may depend on which job -------------------------------------------------------------------


@pytest.fixture
async def login(admin_url: str, db_url: str) -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """login(group) -> a connection of a new LOGIN role in that group; all dropped afterwards."""
    admin = await asyncpg.connect(admin_url)
    names: list[str] = []
    conns: list[asyncpg.Connection] = []

    async def make(group: str) -> asyncpg.Connection:
        name = f"jr_flow_{group}_{uuid.uuid4().hex[:8]}"
        await admin.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER IN ROLE {group}")
        names.append(name)
        conns.append(await asyncpg.connect(url_as(db_url, name)))
        return conns[-1]

    try:
        yield make
    finally:
        for c in conns:
            await c.close()
        for name in names:
            await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def test_an_enqueuer_may_depend_only_on_jobs_of_its_own_transaction(
    conn: asyncpg.Connection, login: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    committed = await enqueue(conn)
    enqueuer = await login("jobrunner_enqueuer")
    for foreign in (committed, 424242):
        # someone else's job and no job at all look the same
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"job {foreign} is not a job this transaction"):
            await dependent(enqueuer, [foreign])
    async with enqueuer.transaction():
        own = await enqueue(enqueuer)
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"job {committed} is not"):
            async with enqueuer.transaction():  # a savepoint, so that the transaction goes on
                await dependent(enqueuer, [own, committed])
        child = await dependent(enqueuer, [own])
    assert await statuses(conn, child) == ["blocked"]
    # the clients' group: the jobs and the callback in one transaction of the enqueuer's
    group = await AsyncClient(enqueuer).enqueue_group([NewJob("a"), NewJob("b")], NewJob("cb"))
    assert await statuses(conn, group.callback_id) == ["blocked"]
    # a job enqueued inside a savepoint carries the savepoint's transaction id
    async with enqueuer.transaction():
        await enqueue(enqueuer)
        async with enqueuer.transaction():
            nested = await enqueue(enqueuer)
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=f"job {nested} is not"):
            await dependent(enqueuer, [nested])


async def test_a_worker_may_depend_on_any_job(
    conn: asyncpg.Connection, login: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    committed = await enqueue(conn)
    worker = await login("jobrunner_worker")
    child = await dependent(worker, [committed])
    assert await statuses(conn, child) == ["blocked"]
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="there is no job 424242"):
        await dependent(worker, [424242])


async def test_an_enqueuer_cannot_forge_a_blocked_job_or_a_dependency(
    conn: asyncpg.Connection, login: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    parent = await enqueue(conn)
    enqueuer = await login("jobrunner_enqueuer")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await enqueuer.execute("INSERT INTO background_jobs (job_type, depends_on) VALUES ('x', ARRAY[1])")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await enqueuer.execute("INSERT INTO background_jobs (job_type, status) VALUES ('x', 'blocked')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await enqueuer.execute(f"INSERT INTO jobrunner_job_dependencies VALUES ({parent}, {parent})")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await enqueuer.execute("DELETE FROM jobrunner_job_dependencies")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await enqueuer.execute("UPDATE background_jobs SET waiting_on = 0")


# -- the clients ---------------------------------------------------------------------------------


async def test_async_client_depends_on_group_and_parents(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    client = AsyncClient(pool)
    first = await client.enqueue("analyze", {"photo": 1})
    follow_up = await client.enqueue("recommend", {"photo": 1}, depends_on=[first])
    record = await client.get(follow_up)
    assert record is not None
    assert (record.status, record.depends_on, record.waiting_on, record.on_parent_failure) == (
        "blocked",
        [first],
        1,
        "cancel",
    )
    group = await client.enqueue_group(
        [NewJob("resize", {"size": s}) for s in (1, 2, 3)], NewJob("notify", {"done": True})
    )
    assert len(group.job_ids) == 3
    callback = await client.get(group.callback_id)
    assert callback is not None
    assert (callback.status, callback.depends_on, callback.on_parent_failure) == ("blocked", group.job_ids, "run")

    await start(conn, first)
    await end(conn, first, "completed", {"labels": ["cat"]})
    (parent,) = await client.parents(follow_up)
    assert (parent.id, parent.job_type, parent.status, parent.result) == (
        first,
        "analyze",
        "completed",
        {"labels": ["cat"]},
    )
    assert await client.parents(first) == []

    # inside the caller's transaction: nothing of the group exists if it rolls back
    async with pool.acquire() as c:
        tx = c.transaction()
        await tx.start()
        await client.enqueue_group([NewJob("resize")], NewJob("notify"), connection=c)
        await tx.rollback()
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depends_on": []}, "at least one job"),
        ({"depends_on": [1, "2"]}, "job ids"),
        ({"depends_on": [True]}, "job ids"),
        ({"depends_on": "12"}, "a list of job ids"),
        ({"depends_on": [1], "on_parent_failure": "ignore"}, "'cancel' or 'run'"),
        ({"depends_on": [1], "dedupe_key": "k"}, "cannot have a dedupe_key"),
    ],
)
async def test_the_clients_refuse_bad_flow_options(pool: asyncpg.Pool, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        await AsyncClient(pool).enqueue("x", **kwargs)


async def test_a_group_refuses_dedupe_keys_and_emptiness(pool: asyncpg.Pool) -> None:
    client = AsyncClient(pool)
    with pytest.raises(InvalidJob, match="at least one job"):
        await client.enqueue_group([], NewJob("cb"))
    with pytest.raises(InvalidJob, match="dedupe_key"):
        await client.enqueue_group([NewJob("a", dedupe_key="k")], NewJob("cb"))


@pytest.fixture
def pg(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


async def test_sync_client_depends_on_group_and_parents(pg: psycopg.Connection[Any], conn: asyncpg.Connection) -> None:
    client = Client(pg)
    first = client.enqueue("analyze")
    follow_up = client.enqueue("recommend", depends_on=[first], on_parent_failure="run")
    group = client.enqueue_group([NewJob("a"), NewJob("b")], NewJob("cb"))
    record = client.get(group.callback_id)
    assert record is not None and record.depends_on == group.job_ids and record.status == "blocked"
    await start(conn, first)
    await end(conn, first, "dead")
    assert await statuses(conn, follow_up) == ["pending"]
    assert [(p.id, p.status, p.result) for p in client.parents(follow_up)] == [(first, "dead", None)]
    # a connection not in autocommit mode: the caller's transaction, the commit is theirs
    pg.autocommit = False
    client.enqueue_group([NewJob("a")], NewJob("cb"))
    pg.rollback()
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 5


# -- a real daemon ------------------------------------------------------------------------------


async def test_a_daemon_runs_the_callback_once_after_the_whole_group(
    db_url: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    @handler("square")
    async def square(ctx: JobContext[dict[str, Any]]) -> int:
        if ctx.payload["n"] == 3:
            raise ValueError("three is right out")
        return int(ctx.payload["n"]) ** 2

    seen: list[tuple[int, list[tuple[str, Any]]]] = []

    @handler("total")
    async def total(ctx: JobContext[dict[str, Any]]) -> int:
        parents = await ctx.parents()
        seen.append((ctx.job.id, [(p.status, p.result) for p in parents]))
        return sum(p.result for p in parents if p.status == "completed")

    client = AsyncClient(pool)
    group = await client.enqueue_group(
        [NewJob("square", {"n": n}, max_attempts=1) for n in range(1, 6)], NewJob("total")
    )
    after = await client.enqueue("total", depends_on=[group.callback_id])
    async with running_daemon(db_url, [square, total], burst=True):
        pass
    assert [job_id for job_id, _ in seen] == [group.callback_id, after]
    assert sorted(seen[0][1], key=str) == sorted(
        [("completed", 1), ("completed", 4), ("dead", None), ("completed", 16), ("completed", 25)], key=str
    )
    row = await conn.fetchrow(
        "SELECT status, result, parents_failed FROM background_jobs WHERE id = $1", group.callback_id
    )
    assert (row["status"], json.loads(row["result"]), row["parents_failed"]) == ("completed", 46, 1)


# -- jobrunner status --job ------------------------------------------------------------------------


def jobrunner(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `jobrunner` command on the test's database."""
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args],
        env={"JOBRUNNER_DATABASE_URL": db_url, "COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_status_shows_the_parents_and_the_waiting_dependents(db_url: str, conn: asyncpg.Connection) -> None:
    parents = [await enqueue(conn) for _ in range(12)]
    child = await dependent(conn, parents, "gather", on_parent_failure="run")
    await start(conn, parents[0])
    await end(conn, parents[0], "dead")

    shown = jobrunner(db_url, "status", "--job", str(child))
    assert shown.returncode == 0, shown.stderr
    assert "blocked" in shown.stdout
    assert f"12 jobs: {', '.join(map(str, parents[:10]))}, …" in shown.stdout
    assert "parents dead" in shown.stdout and f"1 ({parents[0]})" in shown.stdout
    assert "parents pending" in shown.stdout and f"11 ({parents[1]}," in shown.stdout

    as_json = json.loads(jobrunner(db_url, "status", "--job", str(child), "--json").stdout)
    assert as_json["depends_on"] == parents and as_json["waiting_on"] == 11 and as_json["parents_failed"] == 1
    assert {p["status"]: p["jobs"] for p in as_json["flow"]["parents"]} == {"dead": 1, "pending": 11}

    waited_for = jobrunner(db_url, "status", "--job", str(parents[1]))
    assert f"{child} gather (blocked)" in waited_for.stdout


# -- the web dashboard's job page --------------------------------------------------------------------


async def test_the_dashboard_job_page_shows_the_flow(db_url: str, conn: asyncpg.Connection) -> None:
    from tests.test_web_dashboard import dashboard

    parents = [await enqueue(conn) for _ in range(3)]
    child = await dependent(conn, parents, "gather", on_parent_failure="run")
    await start(conn, parents[0])
    await end(conn, parents[0], "dead")
    async with dashboard(db_url) as (http, _app):
        page = (await http.get(f"/jobs/{child}")).text
        assert 'id="flow"' in page and "2 unfinished, 1 failed; on a failed parent: run" in page
        assert f'<a href="/jobs/{parents[0]}">{parents[0]}</a>' in page
        assert f'<a href="/jobs/{parents[2]}">{parents[2]}</a>' in page
        parent_page = (await http.get(f"/jobs/{parents[1]}")).text
        assert f'<a href="/jobs/{child}">{child}</a> gather (blocked)' in parent_page
        # filtered by the new status
        assert f'href="/jobs/{child}"' in (await http.get("/jobs?status=blocked")).text


async def test_jobrunner_cancel_cancels_a_blocked_job_and_says_so(db_url: str, conn: asyncpg.Connection) -> None:
    child = await dependent(conn, [await enqueue(conn)])
    cancelled = jobrunner(db_url, "cancel", str(child))
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, f"cancelled job {child} (it was blocked)")
    assert await statuses(conn, child) == ["cancelled"]


async def test_jobrunner_enqueue_depends_on(db_url: str, conn: asyncpg.Connection) -> None:
    a, b = await enqueue(conn), await enqueue(conn)
    made = jobrunner(db_url, "enqueue", "gather", "--depends-on", f"{a},{b}", "--on-parent-failure", "run")
    assert made.returncode == 0, made.stderr
    row = await conn.fetchrow(
        "SELECT status, depends_on, on_parent_failure FROM background_jobs WHERE id = $1", int(made.stdout)
    )
    assert tuple(row) == ("blocked", [a, b], "run")
    refused = jobrunner(db_url, "enqueue", "gather", "--depends-on", str(a), "--dedupe-key", "k")
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        "jobrunner: a job with depends_on cannot have a dedupe_key",
    )
    assert jobrunner(db_url, "enqueue", "gather", "--depends-on", "1,x").returncode == 2


async def test_jobrunner_status_counts_blocked_jobs_only_when_there_are_some(
    db_url: str, conn: asyncpg.Connection
) -> None:
    parent = await enqueue(conn)
    assert "blocked" not in jobrunner(db_url, "status").stdout
    await dependent(conn, [parent])
    assert "blocked" in jobrunner(db_url, "status").stdout
