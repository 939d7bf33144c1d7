"""Every way a handler can end is an outcome of its job, and the daemon survives it: a
CancelledError jobrunner did not ask for, BaseExceptions (SystemExit, KeyboardInterrupt,
GeneratorExit, a library's own), and handlers that swallow cancellation (timeout, cancel
request, shutdown). Real daemon processes; handlers in tests/ending_process_handlers.py.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime

import asyncpg
import pytest

from tests import test_processes
from tests.support import job_row, wait_for
from tests.test_processes import Children, daemon_env, insert_job

children = test_processes.children

RUN = ("run", "--handlers", "tests.ending_process_handlers", "--handlers", "tests.process_handlers")
STATUS = "SELECT status FROM background_jobs WHERE id = $1"
# the tests that check the slot an abandoned handler frees allow two handlers left behind: at the
# default (concurrency, 1 here) the daemon would stop claiming (tests/test_abandoned_handlers.py)


@pytest.mark.parametrize("job_type", ["inner_task_cancelled", "cancels_own_task"])
async def test_a_cancelled_error_of_the_handlers_own_is_a_failed_attempt(
    db_url: str, conn: asyncpg.Connection, children: Children, job_type: str
) -> None:
    # a cancellation jobrunner did not ask for: not a hand-back (that hot-looped, attempts 0)
    job_id = await insert_job(conn, job_type, max_attempts=2)
    daemon = children.start(db_url, *RUN)
    await wait_for(conn, STATUS, job_id, expect="dead", timeout=10)
    row = await job_row(conn, job_id)
    assert (row["attempts"], row["release_count"]) == (2, 0)
    assert "CancelledError that jobrunner did not request" in row["last_error"]
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "HandlerOwnBaseException"])
async def test_a_base_exception_from_a_handler_fails_its_job_and_the_daemon_lives_on(
    db_url: str, conn: asyncpg.Connection, children: Children, kind: str
) -> None:
    job_id = await insert_job(conn, "raise_base_exception", {"kind": kind}, max_attempts=2)
    daemon = children.start(db_url, *RUN, env=daemon_env(concurrency=2))
    await wait_for(conn, STATUS, job_id, expect="dead", timeout=15)
    row = await job_row(conn, job_id)
    assert row["attempts"] == 2
    assert kind in row["last_error"]
    assert row["lease_expires_at"] is None
    # still working: a job enqueued afterwards runs
    later = await insert_job(conn, "noop")
    await wait_for(conn, STATUS, later, expect="completed", timeout=10)
    assert daemon.proc.poll() is None
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(15) == 0


async def test_sigterm_with_a_handler_that_swallows_cancellation(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "swallow_cancel")
    daemon = children.start(db_url, *RUN, env=daemon_env(shutdown_grace=0.5, cancel_grace=0.5))
    await wait_for(conn, STATUS, job_id, expect="running", timeout=30)
    signalled_at = time.monotonic()
    daemon.send(signal.SIGTERM)
    # a daemon waiting for the handler for ever would not exit at all
    assert await daemon.wait(30) == 0
    took = time.monotonic() - signalled_at
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["release_count"]) == ("pending", 0, 1)
    assert row["lease_expires_at"] is None
    # the daemon's own timeline, without the process's teardown: it waited the two graces it
    # was given (0.5 s each), not the default cancel grace (5 s) or longer
    at = {e["event"]: datetime.fromisoformat(e["timestamp"]) for e in daemon.events() if "timestamp" in e}
    gave_up_after = at["handler did not stop after it was cancelled"] - at["stopping: no new jobs will be claimed"]
    print(
        f"SIGTERM, a handler swallowing cancellation: gave up on it after {gave_up_after.total_seconds():.2f}s,"
        f" exit after {took:.2f}s"
    )
    assert 0.5 + 0.5 - 0.05 <= gave_up_after.total_seconds() < 0.5 + 0.5 + 4.0


async def test_a_timeout_that_the_handler_swallows_ends_the_attempt_and_frees_the_slot(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "swallow_cancel_with_timeout", max_attempts=1)
    daemon = children.start(db_url, *RUN, env=daemon_env(concurrency=1, max_abandoned_handlers=2, cancel_grace=0.5))
    await wait_for(conn, STATUS, job_id, expect="dead", timeout=15)
    row = await job_row(conn, job_id)
    assert row["last_error"].startswith("timed out after 0.5s (handler timeout)")
    assert "did not stop" in row["last_error"]
    # the only slot is free again although the leaked handler still runs
    later = await insert_job(conn, "noop")
    await wait_for(conn, STATUS, later, expect="completed", timeout=10)
    # the leaked handler is not heartbeated and writes nothing over the timeout outcome
    assert (await job_row(conn, job_id))["status"] == "dead"
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(10) == 0
    assert (await job_row(conn, job_id))["status"] == "dead"


async def test_a_cancel_request_that_the_handler_swallows_still_cancels_the_job(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "swallow_cancel")
    daemon = children.start(db_url, *RUN, env=daemon_env(concurrency=1, max_abandoned_handlers=2, cancel_grace=0.5))
    await wait_for(conn, STATUS, job_id, expect="running", timeout=30)
    assert await conn.fetchval("SELECT cancel_job($1)", job_id) == "cancelling"
    await wait_for(conn, STATUS, job_id, expect="cancelled", timeout=5)
    later = await insert_job(conn, "noop")
    await wait_for(conn, STATUS, later, expect="completed", timeout=10)
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(10) == 0


async def test_a_lost_lease_that_the_handler_swallows_frees_the_slot_and_writes_nothing(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "swallow_cancel")
    daemon = children.start(
        db_url, *RUN, env=daemon_env(concurrency=1, max_abandoned_handlers=2, cancel_grace=0.5, lease_seconds=1.5)
    )
    await wait_for(conn, STATUS, job_id, expect="running", timeout=30)
    # another worker took the job over (its next attempt): our next heartbeat finds it gone
    await conn.execute(
        "UPDATE background_jobs SET attempts = attempts + 1, worker_id = 'other',"
        " lease_expires_at = now() + interval '1 hour' WHERE id = $1",
        job_id,
    )
    later = await insert_job(conn, "noop")
    await wait_for(conn, STATUS, later, expect="completed", timeout=10)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("running", 2, "other")
    assert "handler did not stop after it was cancelled" in daemon.event_names()
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(10) == 0
