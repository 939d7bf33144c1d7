"""Handlers the daemon stopped waiting for (they ignored their cancellation): what they still
hold, how many may pile up, how their jobs end. In-process daemons; each stubborn handler is
let go at the end of its test so no task outlives it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from jobrunner import AsyncClient, JobContext, handler
from jobrunner.daemon.daemon import Daemon
from tests.support import job_row, running_daemon, wait_for, wait_until

STATUS = "SELECT status FROM background_jobs WHERE id = $1"
# a stubborn handler ignores every cancellation until the test lets it go
let_go = asyncio.Event()
# set when a handler saw its first cancellation (the deadline's)
first_cancel = asyncio.Event()


@pytest.fixture(autouse=True)
async def _release_stubborn_handlers() -> AsyncIterator[None]:
    let_go.clear()
    first_cancel.clear()
    yield
    let_go.set()


async def _ignore_cancellation_until_let_go() -> None:
    while not let_go.is_set():
        try:
            await let_go.wait()
        except asyncio.CancelledError:
            first_cancel.set()


@handler("stubborn_limited", timeout=0.2, max_concurrency=1)
async def stubborn_limited(_ctx: JobContext[dict[str, Any]]) -> None:
    await _ignore_cancellation_until_let_go()


@handler("stubborn", timeout=0.2)
async def stubborn(_ctx: JobContext[dict[str, Any]]) -> None:
    await _ignore_cancellation_until_let_go()


@handler("stops_at_second_cancel", timeout=0.2)
async def stops_at_second_cancel(_ctx: JobContext[dict[str, Any]]) -> None:
    """Swallows the deadline's cancellation, not the next one (a shutdown's)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        first_cancel.set()
    await asyncio.Event().wait()


@handler("stops_when_cancelled", timeout=0.2)
async def stops_when_cancelled(_ctx: JobContext[dict[str, Any]]) -> None:
    await asyncio.Event().wait()


@handler("noop")
async def noop(_ctx: JobContext[dict[str, Any]]) -> None:
    return None


def _live_abandoned(daemon: Daemon) -> int:
    return daemon.in_flight.left_behind


async def test_an_abandoned_handler_keeps_its_types_slot_and_no_job_is_claimed_into_it(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """max_concurrency=1 and the one handler of the type was abandoned (it still holds the
    type's slot): the next job of the type must stay in the table, not be claimed to wait
    `running` and heartbeated for a slot that may never free."""
    client = AsyncClient(conn)
    first = await client.enqueue("stubborn_limited", max_attempts=1)
    async with running_daemon(
        db_url, [stubborn_limited, noop], concurrency=2, cancel_grace=0.2, max_abandoned_handlers=5
    ) as daemon:
        await wait_for(conn, STATUS, first, expect="dead", timeout=10)
        second = await client.enqueue("stubborn_limited", max_attempts=1)
        other = await client.enqueue("noop")
        # a claim made after both were enqueued (the noop ran) left the limited one alone
        await wait_for(conn, STATUS, other, expect="completed", timeout=10)
        assert await conn.fetchval(STATUS, second) == "pending"
        # once the abandoned handler really ends, its type's slot is free again
        let_go.set()
        await wait_for(conn, STATUS, second, expect="completed", timeout=10)
        await wait_until(lambda: _live_abandoned(daemon) == 0, what="no handler left behind")


async def test_abandoned_handlers_are_bounded_claiming_stops_and_the_daemon_reports_unhealthy(
    db_url: str, conn: asyncpg.Connection
) -> None:
    client = AsyncClient(conn)
    first = await client.enqueue("stubborn", max_attempts=1)
    async with running_daemon(db_url, [stubborn, noop], concurrency=1, prefetch=0, cancel_grace=0.2) as daemon:
        assert daemon.is_healthy()
        # JOBRUNNER_MAX_ABANDONED_HANDLERS defaults to concurrency (1): one handler left behind
        await wait_until(lambda: not daemon.is_healthy(), timeout=10, what="the daemon reports unhealthy")
        assert daemon.ops_server is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.ops_server.port}") as http:
            assert (await http.get("/healthz")).status_code == 503
        await wait_for(conn, STATUS, first, expect="dead", timeout=10)
        assert "jobrunner_handlers_abandoned 1.0" in daemon.metrics.exposition().decode()
        later = await client.enqueue("noop")
        # the fetch loop stays parked: the slot the abandon freed takes no job
        assert daemon.fetcher is not None and daemon.fetcher.free_slots(0) == 0
        assert await conn.fetchval(STATUS, later) == "pending"
        let_go.set()
        await wait_for(conn, STATUS, later, expect="completed", timeout=10)
        await wait_until(daemon.is_healthy, what="healthy again")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.ops_server.port}") as http:
            assert (await http.get("/healthz")).status_code == 200
        assert "jobrunner_handlers_abandoned 0.0" in daemon.metrics.exposition().decode()


async def test_a_timed_out_handler_still_in_its_cancel_grace_at_shutdown_spends_its_attempt(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """It hung past its timeout; a shutdown's cancel then stops it. Handed back as a shutdown
    (attempt not spent) it would retry for ever across rolling deploys."""
    job_id = await AsyncClient(conn).enqueue("stops_at_second_cancel", max_attempts=1)
    async with running_daemon(db_url, [stops_at_second_cancel], cancel_grace=60, shutdown_grace=0.1):
        await asyncio.wait_for(first_cancel.wait(), 10)
    row = await job_row(conn, job_id)
    assert (row["status"], row["release_count"]) == ("dead", 0)
    assert row["last_error"].startswith("timed out after 0.2s (handler timeout)")


async def test_a_timed_out_handler_whose_lease_is_then_lost_counts_one_lost_lease(
    db_url: str, conn: asyncpg.Connection
) -> None:
    job_id = await AsyncClient(conn).enqueue("stubborn", max_attempts=1)
    async with running_daemon(
        db_url, [stubborn], concurrency=1, cancel_grace=2.0, lease_seconds=1.5, max_abandoned_handlers=5
    ) as daemon:
        await asyncio.wait_for(first_cancel.wait(), 10)
        # another worker took the job over: our next heartbeat finds it gone
        await conn.execute(
            "UPDATE background_jobs SET attempts = attempts + 1, worker_id = 'other',"
            " lease_expires_at = now() + interval '1 hour' WHERE id = $1",
            job_id,
        )
        await wait_until(lambda: daemon.stats.lost_leases >= 1, timeout=10, what="the lost lease seen")
        await wait_until(
            lambda: _live_abandoned(daemon) == 1 and daemon.in_flight.get(job_id) is None, timeout=10, what="job let go"
        )
        assert daemon.stats.lost_leases == 1
    row = await job_row(conn, job_id)
    assert (row["status"], row["worker_id"]) == ("running", "other")


async def test_a_job_task_cancelled_before_its_first_step_by_someone_else_stores_no_fake_traceback(
    db_url: str, conn: asyncpg.Connection
) -> None:
    job_id = await AsyncClient(conn).enqueue("noop", queue="elsewhere", max_attempts=1)
    async with running_daemon(db_url, [noop]) as daemon:
        assert daemon.store is not None and daemon.executor is not None
        [job] = await daemon.store.claim_batch(["elsewhere"], daemon.worker_id, 1, 30.0)
        held = daemon.in_flight.hold(job, asyncio.get_running_loop().time())
        daemon.executor.start(held)
        assert held.task is not None
        held.task.cancel()  # not the daemon's cancel: no reason set
        await wait_for(conn, STATUS, job_id, expect="dead")
    row = await job_row(conn, job_id)
    assert "CancelledError that jobrunner did not request" in row["last_error"]
    assert row["last_error_traceback"] is None or "NoneType: None" not in row["last_error_traceback"]


async def test_the_grace_timer_of_a_handler_that_stopped_lets_go_of_its_job(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A handler that stops at its timeout: nothing keeps its job's record for cancel_grace."""
    job_id = await AsyncClient(conn).enqueue("stops_when_cancelled", max_attempts=1)
    async with running_daemon(db_url, [stops_when_cancelled], cancel_grace=3600) as daemon:
        await wait_until(lambda: daemon.in_flight.running == 1, timeout=10, what="the job running")
        record = weakref.ref(daemon.in_flight.get(job_id))
        await wait_for(conn, STATUS, job_id, expect="dead", timeout=10)
        await wait_until(lambda: daemon.in_flight.get(job_id) is None, what="the job let go")
        gc.collect()
        assert record() is None, "the job's record is still referenced (a grace timer holds it)"
