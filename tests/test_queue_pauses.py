"""Paused queues (jobrunner_queue_pauses): no claim takes their jobs, on any replica, from the
next claim on; resuming lets them run. The table is the truth: nothing is told to the daemons."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from jobrunner import AsyncClient, JobContext, handler
from jobrunner.audit import Actor
from jobrunner.limits import GlobalLimits, QueueLimits
from jobrunner.operator_statements import OperatorStatements
from jobrunner.queue_pauses import InvalidQueueName, pause_queue, queue_pauses, resume_queue
from jobrunner.store import ClaimPlan, JobStore, LimitedType
from tests.support import REPO_ROOT, running_daemon, wait_for

STATEMENTS = OperatorStatements("public")
OPERATOR = Actor("tester", "test")


@handler("noop")
async def noop(_ctx: JobContext[dict[str, Any]]) -> None:
    pass


async def _claimed_queues(pool: asyncpg.Pool, plan: ClaimPlan) -> list[str]:
    claimed = await JobStore(pool, "public").claim("w", 30.0, plan)
    return sorted(job.queue for job in claimed.all)


async def test_a_claim_leaves_a_paused_queue_out_of_every_part(conn: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    client = AsyncClient(conn)
    for queue in ("a", "b", "limited_q"):
        await client.enqueue("plain", queue=queue)
        await client.enqueue("capped", queue=queue)
    await pause_queue(conn, STATEMENTS, "a", OPERATOR, "upstream down")
    await pause_queue(conn, STATEMENTS, "limited_q", OPERATOR)
    plan = ClaimPlan(
        ["a", "b"],
        20,
        limited_limit=20,
        limited_types=[LimitedType("capped", None, GlobalLimits(max_running=10))],
        limited_queues={"limited_q": QueueLimits(max_running=10)},
    )
    # the unlimited part, the limited type's walk and the limited queue's parts all skip them
    assert await _claimed_queues(pool, plan) == ["b", "b"]
    assert await _claimed_queues(pool, plan) == []

    assert await resume_queue(conn, STATEMENTS, "a", OPERATOR)
    assert await resume_queue(conn, STATEMENTS, "limited_q", OPERATOR)
    assert await _claimed_queues(pool, plan) == ["a", "a", "limited_q", "limited_q"]


async def test_pause_and_resume_say_whether_they_changed_anything_and_are_audited(conn: asyncpg.Connection) -> None:
    assert await pause_queue(conn, STATEMENTS, "emails", OPERATOR, "  provider outage  ")
    assert not await pause_queue(conn, STATEMENTS, "emails", OPERATOR)
    [pause] = await queue_pauses(conn, STATEMENTS)
    assert (pause.queue, pause.paused_by, pause.reason) == ("emails", "tester", "provider outage")
    assert await resume_queue(conn, STATEMENTS, "emails", OPERATOR)
    assert not await resume_queue(conn, STATEMENTS, "emails", OPERATOR)
    assert await queue_pauses(conn, STATEMENTS) == []
    rows = await conn.fetch("SELECT actor, via, action, target, affected, finished_at FROM jobrunner_audit ORDER BY id")
    assert [(r["action"], json.loads(r["target"]), r["affected"]) for r in rows] == [
        ("pause_queue", {"queue": "emails"}, 1),
        ("pause_queue", {"queue": "emails"}, 0),
        ("resume_queue", {"queue": "emails"}, 1),
        ("resume_queue", {"queue": "emails"}, 0),
    ]
    assert all(r["actor"] == "tester" and r["via"] == "test" and r["finished_at"] is not None for r in rows)
    with pytest.raises(InvalidQueueName):
        await pause_queue(conn, STATEMENTS, "", OPERATOR)
    with pytest.raises(InvalidQueueName):
        await pause_queue(conn, STATEMENTS, "q" * 201, OPERATOR)


async def test_a_running_daemon_starts_no_job_of_a_paused_queue_until_it_is_resumed(
    db_url: str, conn: asyncpg.Connection
) -> None:
    client = AsyncClient(conn)
    async with running_daemon(db_url, [noop], queues=["default", "held"]) as _daemon:
        await pause_queue(conn, STATEMENTS, "held", OPERATOR)
        held = [await client.enqueue("noop", queue="held") for _ in range(3)]
        # enqueued after the held jobs: once it has run, the daemon has claimed since the pause
        marker = await client.enqueue("noop")
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", marker, expect="completed")
        statuses = await conn.fetch("SELECT status, attempts FROM background_jobs WHERE id = ANY($1)", held)
        assert [(r["status"], r["attempts"]) for r in statuses] == [("pending", 0)] * 3

        await resume_queue(conn, STATEMENTS, "held", OPERATOR)
        await wait_for(
            conn, "SELECT count(*) FROM background_jobs WHERE id = ANY($1) AND status = 'completed'", held, expect=3
        )


async def test_a_burst_daemon_does_not_wait_for_a_paused_queue(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    await pause_queue(conn, STATEMENTS, "held", OPERATOR)
    held = await client.enqueue("noop", queue="held")
    done = await client.enqueue("noop")
    async with running_daemon(db_url, [noop], burst=True, queues=["default", "held"]):
        pass  # returns once the daemon stopped by itself
    assert await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", done) == "completed"
    assert await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", held) == "pending"


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "USER": "ops"}
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_pause_and_resume_commands(db_url: str, conn: asyncpg.Connection) -> None:
    paused = _cli(db_url, "pause", "emails", "--reason", "provider outage")
    assert (paused.returncode, paused.stdout) == (0, "paused queue emails\n"), paused.stderr
    listed = _cli(db_url, "pause")
    assert listed.returncode == 0 and listed.stdout.startswith("emails: paused ")
    assert listed.stdout.rstrip().endswith("(provider outage)"), listed.stdout
    assert _cli(db_url, "pause", "emails").stdout == "queue emails was already paused\n"
    assert _cli(db_url, "resume", "emails").stdout == "resumed queue emails\n"
    assert _cli(db_url, "resume", "emails").stdout == "queue emails was not paused\n"
    refused = _cli(db_url, "pause", "")
    assert refused.returncode == 2 and "queue name" in refused.stderr
    actions = await conn.fetch("SELECT actor, via, action, affected FROM jobrunner_audit ORDER BY id")
    assert [(r["via"], r["action"], r["affected"]) for r in actions] == [
        ("cli", "pause_queue", 1),
        ("cli", "pause_queue", 0),
        ("cli", "resume_queue", 1),
        ("cli", "resume_queue", 0),
    ]
    assert all(r["actor"].startswith("cli:") for r in actions)
