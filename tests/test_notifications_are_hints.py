"""A NOTIFY is only a hint to look: any role that can log in may send one on any channel.

A forged `jobrunner_cancel_<schema>` notification cancels nothing (the daemon asks the table
whether `cancel_job()` flagged the job), a flood of them costs a bounded number of queries, a
flood on the wake-up channel `jobrunner_<schema>` cannot turn into a claim storm, and a forged
wake-up naming a paused queue starts none of its jobs (the pause is a row that every claim reads,
which the attacker cannot write), while real jobs, real cancel requests and a real resume are
still acted on at once.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest

from jobrunner import AsyncClient
from jobrunner.audit import Actor
from jobrunner.operator_statements import OperatorStatements
from jobrunner.queue_pauses import pause_queue, resume_queue
from jobrunner.store import Claimed
from tests import test_processes, test_security
from tests.process_handlers import sleep
from tests.support import job_row, running_daemon, wait_for, wait_until
from tests.test_migrations import ENSURE_SUPABASE_ROLES
from tests.test_processes import Children, daemon_env, insert_job
from tests.test_security import as_user

children = test_processes.children
login_role = test_security.login_role

RUN = ("run", "--handlers", "tests.process_handlers")
STATUS = "SELECT status FROM background_jobs WHERE id = $1"


async def _attacker(conn: asyncpg.Connection, db_url: str, login_role: Any) -> asyncpg.Connection:
    """A login role with nothing but Supabase's `authenticated` membership: it cannot touch the queue."""
    await conn.execute(ENSURE_SUPABASE_ROLES)
    name = await login_role("authenticated")
    attacker = await asyncpg.connect(as_user(db_url, name))
    assert await attacker.fetchval("SELECT has_table_privilege('background_jobs', 'UPDATE')") is False
    return attacker


async def test_a_forged_cancel_notification_cancels_nothing(
    db_url: str, conn: asyncpg.Connection, children: Children, login_role: Any
) -> None:
    target = await insert_job(conn, "sleep", {"seconds": 600})
    witness = await insert_job(conn, "sleep", {"seconds": 600})
    # polling every 30 s: within this test only a notification can make the daemon look
    daemon = children.start(db_url, *RUN, env=daemon_env(concurrency=2, cancel_poll_interval=30))
    await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=2, timeout=30)
    attacker = await _attacker(conn, db_url, login_role)
    try:
        for _ in range(50):
            await attacker.execute("SELECT pg_notify('jobrunner_cancel_public', $1)", str(target))
        await attacker.execute("SELECT pg_notify('jobrunner_cancel_public', g::text) FROM generate_series(1, 500) g")
        await attacker.execute("SELECT pg_notify('jobrunner_cancel_public', repeat('9', 7000))")
    finally:
        await attacker.close()
    # a real request after the forged ones: notifications arrive in commit order, so once the
    # witness is cancelled the daemon has seen (and judged) every forged one
    assert await conn.fetchval("SELECT cancel_job($1)", witness) == "cancelling"
    await wait_for(conn, STATUS, witness, expect="cancelled", timeout=5)
    row = await job_row(conn, target)
    assert (row["status"], row["cancel_requested_at"]) == ("running", None)
    # and a real request for the target still stops it promptly
    asked = time.monotonic()
    assert await conn.fetchval("SELECT cancel_job($1)", target) == "cancelling"
    await wait_for(conn, STATUS, target, expect="cancelled", timeout=5)
    assert time.monotonic() - asked < 2.0
    assert daemon.proc.poll() is None


async def test_a_flood_of_cancel_hints_costs_a_bounded_number_of_checks(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await AsyncClient(conn).enqueue("sleep", {"seconds": 600})
    async with running_daemon(db_url, [sleep], cancel_poll_interval=30.0, notify_min_interval=0.05) as daemon:
        await wait_for(conn, STATUS, job_id, expect="running")
        assert daemon.store is not None
        checks: list[float] = []
        real_check = daemon.store.cancel_requested

        async def counted(job_ids: Any) -> set[int]:
            checks.append(time.monotonic())
            return await real_check(job_ids)

        daemon.store.cancel_requested = counted  # type: ignore[method-assign]
        flooder = await asyncpg.connect(db_url)
        try:
            started = time.monotonic()
            for n in range(1500):
                # the held job, and ids this daemon does not hold (those cost no query at all)
                payload = str(job_id) if n % 2 else str(10**9 + n)
                await flooder.execute("SELECT pg_notify('jobrunner_cancel_public', $1)", payload)
            await flooder.execute("SELECT pg_notify('jobrunner_cancel_public', $1)", str(job_id))
            flooded_for = time.monotonic() - started
        finally:
            await flooder.close()
        await wait_until(lambda: bool(checks) and time.monotonic() - checks[-1] > 0.1, what="the last check")
        print(f"{len(checks)} checks for 1,500 hints over {flooded_for:.2f}s")
        # one per interval (the unbounded version cancelled on each notification, no check at all)
        assert 1 <= len(checks) <= flooded_for / 0.05 + 5
        assert (await job_row(conn, job_id))["status"] == "running"
        assert daemon.stats.cancelled == 0


async def test_a_flood_of_wakeups_is_no_claim_storm_and_real_jobs_still_start_at_once(
    db_url: str, conn: asyncpg.Connection
) -> None:
    # polling every 30 s: every claim in this test is one a notification triggered
    async with running_daemon(db_url, [sleep], poll_interval=30.0, notify_min_interval=0.05) as daemon:
        assert daemon.store is not None
        claims: list[float] = []
        real_claim = daemon.store.claim

        async def counted(*args: Any, **kwargs: Any) -> Claimed:
            claims.append(time.monotonic())
            return await real_claim(*args, **kwargs)

        daemon.store.claim = counted  # type: ignore[method-assign]
        flooder = await asyncpg.connect(db_url)
        client = AsyncClient(conn)
        try:
            started = time.monotonic()
            job_id: int | None = None
            while time.monotonic() - started < 1.0:
                await flooder.execute("SELECT pg_notify('jobrunner_public', 'default')")
                if job_id is None and time.monotonic() - started > 0.5:
                    job_id = await client.enqueue("sleep", {"seconds": 0})
            flooded_for = time.monotonic() - started
        finally:
            await flooder.close()
        assert job_id is not None
        await wait_for(conn, STATUS, job_id, expect="completed", timeout=5)
        row = await job_row(conn, job_id)
        picked_up_after = (row["started_at"] - row["created_at"]).total_seconds()
        print(f"{len(claims)} claims in a {flooded_for:.2f}s flood; the real job started after {picked_up_after:.3f}s")
        # one claim per interval, plus two unspaced ones at the start and after the real job's
        assert 1 <= len(claims) <= flooded_for / 0.05 + 8
        # well within the 30 s poll (the only other way it could start): the notification of
        # the real insert was acted on. Loose on purpose: a loaded machine delays the claim.
        assert picked_up_after < 30.0 / 6


async def test_a_forged_wakeup_for_a_paused_queue_starts_none_of_its_jobs(
    db_url: str, conn: asyncpg.Connection, children: Children, login_role: Any
) -> None:
    statements, operator = OperatorStatements("public"), Actor("ops", "test")
    assert await pause_queue(conn, statements, "held", operator)
    held = [await insert_job(conn, "sleep", {"seconds": 0}, queue="held") for _ in range(3)]
    # polling every 30 s: within this test only a notification can make the daemon claim
    children.start(db_url, *RUN, env=daemon_env(queues="default,held", poll_interval=30))
    first = await insert_job(conn, "sleep", {"seconds": 0})
    await wait_for(conn, STATUS, first, expect="completed", timeout=30)
    attacker = await _attacker(conn, db_url, login_role)
    try:
        await attacker.execute("SELECT pg_notify('jobrunner_public', 'held') FROM generate_series(1, 200)")
        # nor can it lift the pause the notification would have to get past
        for attack in ("DELETE FROM jobrunner_queue_pauses", "UPDATE jobrunner_queue_pauses SET queue = 'elsewhere'"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await attacker.execute(attack)
    finally:
        await attacker.close()
    # a real job after the forged hints: notifications arrive in commit order, so once it has run
    # the daemon has claimed after every forged one (each claim reads the pauses)
    marker = await insert_job(conn, "sleep", {"seconds": 0})
    await wait_for(conn, STATUS, marker, expect="completed", timeout=10)
    rows = await conn.fetch("SELECT status, attempts FROM background_jobs WHERE id = ANY($1)", held)
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 3
    # the real resume wakes the daemon itself (its notification): the jobs run well before a poll
    assert await resume_queue(conn, statements, "held", operator)
    await wait_for(
        conn,
        "SELECT count(*) FROM background_jobs WHERE id = ANY($1) AND status = 'completed'",
        held,
        expect=3,
        timeout=10,
    )
