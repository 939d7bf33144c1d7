"""Snooze: a handler asks to run again later without spending an attempt (raise Snooze), up to
its max_snoozes; past it, the snooze is a failed attempt. The outcome (Snoozed) is written by
record_outcomes one way: pending after the delay, attempt given back, snoozes + 1; cancelled
when a cancel was requested while it ran.

The real CLI daemon for the whole path; the store against the real table for the SQL mapping.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from jobrunner import JobContext, Snooze, handler
from jobrunner.outcomes import Snoozed
from jobrunner.store import JobStore
from tests import test_processes
from tests.support import job_row, running_daemon, wait_for
from tests.test_processes import Children, insert_job

children = test_processes.children

RUN = ("run", "--handlers", "tests.snooze_process_handlers")
STATUS = "SELECT status FROM background_jobs WHERE id = $1"


@handler("always_snoozes", max_snoozes=2)
async def always_snoozes(_ctx: JobContext[dict[str, Any]]) -> None:
    raise Snooze(0, "the webhook has not arrived")


@handler("snoozes_for_an_hour")
async def snoozes_for_an_hour(_ctx: JobContext[dict[str, Any]]) -> None:
    raise Snooze(3600)


async def test_a_snoozing_job_runs_again_without_spending_attempts(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "wait_for_upstream", {"times": 3}, max_attempts=1)
    daemon = children.start(db_url, *RUN)
    await wait_for(conn, STATUS, job_id, expect="completed", timeout=60)
    row = await job_row(conn, job_id)
    # one attempt allowed, four runs: three snoozes gave theirs back
    assert (row["attempts"], row["snoozes"], row["last_error"]) == (1, 3, None)
    assert json.loads(row["result"]) == {"snoozes": 3, "attempt": 1}
    daemon.send(15)
    assert await daemon.wait(30) == 0
    stopped = [e for e in daemon.events() if e.get("event") == "daemon stopped"][-1]
    assert (stopped["snoozed"], stopped["completed"]) == (3, 1)
    assert sum(e.get("event") == "job snoozed" for e in daemon.events()) == 3


async def test_past_max_snoozes_a_snooze_is_a_failed_attempt(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(conn, "always_snoozes", max_attempts=1)
    async with running_daemon(db_url, [always_snoozes]):
        await wait_for(conn, STATUS, job_id, expect="dead")
    row = await job_row(conn, job_id)
    assert (row["attempts"], row["snoozes"]) == (1, 2)
    assert row["last_error"] == (
        "snoozed 2 times, the most a job of always_snoozes may (max_snoozes=2): this snooze counts as a"
        " failed attempt (it asked: the webhook has not arrived)"
    )


async def test_the_daemons_max_snoozes_holds_where_the_handler_sets_none(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(conn, "wait_for_upstream", {"times": 5}, max_attempts=2)
    from tests.snooze_process_handlers import wait_for_upstream

    async with running_daemon(db_url, [wait_for_upstream], max_snoozes=1):
        await wait_for(conn, STATUS, job_id, expect="dead")
    row = await job_row(conn, job_id)
    # one snooze, then two failed attempts (each snooze past the limit spends one)
    assert (row["attempts"], row["snoozes"]) == (2, 1)
    assert "(max_snoozes=1)" in row["last_error"]


async def test_a_snooze_waits_its_delay(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await insert_job(conn, "snoozes_for_an_hour")
    async with running_daemon(db_url, [snoozes_for_an_hour]):
        await wait_for(conn, "SELECT snoozes FROM background_jobs WHERE id = $1", job_id, expect=1)
    row = await conn.fetchrow(
        "SELECT status, attempts, finished_at, lease_expires_at, scheduled_at - now() AS wait"
        " FROM background_jobs WHERE id = $1",
        job_id,
    )
    assert (row["status"], row["attempts"], row["finished_at"], row["lease_expires_at"]) == ("pending", 0, None, None)
    assert 3500 < row["wait"].total_seconds() <= 3600


async def test_a_process_handler_snoozes_across_the_pickle(db_url: str, conn: asyncpg.Connection) -> None:
    from tests.snooze_process_handlers import snooze_in_process

    job_id = await insert_job(conn, "snooze_in_process", max_attempts=1)
    async with running_daemon(db_url, [snooze_in_process], blocking_processes=1):
        await wait_for(conn, STATUS, job_id, expect="dead", timeout=60)
    row = await job_row(conn, job_id)
    assert (row["attempts"], row["snoozes"]) == (1, 1)
    assert "(max_snoozes=1)" in row["last_error"]


# -- the SQL mapping --------------------------------------------------------------------------


async def _running(conn: asyncpg.Connection, *, cancel_requested: bool = False) -> int:
    job_id = await insert_job(conn, "t")
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, started_at = now(),"
        " lease_expires_at = now() + interval '30 seconds', last_error = 'an earlier failure',"
        " cancel_requested_at = CASE WHEN $2 THEN now() END WHERE id = $1",
        job_id,
        cancel_requested,
    )
    return job_id


@pytest.mark.parametrize("cancel_requested", [False, True])
async def test_record_outcomes_writes_a_snooze_one_way(
    conn: asyncpg.Connection, pool: asyncpg.Pool, cancel_requested: bool
) -> None:
    job_id = await _running(conn, cancel_requested=cancel_requested)
    store = JobStore(pool, "public")
    assert await store.snoozes(job_id, 1) == 0
    assert await store.record_outcomes([Snoozed(job_id, 1, "t", "default", 60.0, "later")]) == {job_id}
    row = await conn.fetchrow(
        "SELECT status, attempts, snoozes, last_error, finished_at IS NULL AS unfinished,"
        " extract(epoch FROM scheduled_at - now()) AS wait FROM background_jobs WHERE id = $1",
        job_id,
    )
    if cancel_requested:
        assert (row["status"], row["attempts"], row["snoozes"], row["unfinished"]) == ("cancelled", 0, 0, False)
    else:
        assert (row["status"], row["attempts"], row["snoozes"], row["unfinished"]) == ("pending", 0, 1, True)
        assert 59 < row["wait"] <= 60
    assert row["last_error"] == "an earlier failure"  # a snooze is not an error
    # fenced like every outcome: the attempt is no longer running
    assert await store.snoozes(job_id, 1) is None
    assert await store.record_outcomes([Snoozed(job_id, 1, "t", "default", 60.0)]) == set()


def test_a_snooze_needs_a_delay() -> None:
    with pytest.raises(ValueError, match="0 seconds or more"):
        Snooze(-1)
    with pytest.raises(ValueError, match="0 seconds or more"):
        Snooze(float("nan"))
