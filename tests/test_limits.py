"""Global limits across replicas: max running, rate, fairness by key, upstream back-pressure."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import asyncpg

from jobrunner import AsyncClient, GlobalLimits, JobContext, NewJob, UpstreamRateLimited, handler
from tests.support import jobrunner_process, running_daemon, wait_for

RUNS_TABLE = """
CREATE TABLE limit_runs (job_id bigint PRIMARY KEY, concurrency_key text, started timestamptz, ended timestamptz)
"""
# the most runs whose [started, ended) intervals overlap at one instant
MAX_OVERLAP = """
SELECT coalesce(max(n), 0) FROM (
    SELECT (SELECT count(*) FROM limit_runs b
            WHERE b.started <= a.started AND coalesce(b.ended, 'infinity') > a.started) AS n
    FROM limit_runs a
) AS overlapping
"""


async def _max_overlap_of(conn: asyncpg.Connection, *, queue: str, job_type: str | None = None) -> int:
    """The most runs of this queue (and type) whose [started, ended) overlap at one instant."""
    runs = await conn.fetch(
        "SELECT r.started, r.ended FROM limit_runs AS r JOIN background_jobs AS j ON j.id = r.job_id"
        " WHERE j.queue = $1 AND ($2::text IS NULL OR j.job_type = $2)",
        queue,
        job_type,
    )
    return max(
        (
            sum(1 for o in runs if o["started"] <= r["started"] and (o["ended"] is None or o["ended"] > r["started"]))
            for r in runs
        ),
        default=0,
    )


def _replicas(db_url: str, count: int, *args: str, env: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    return [
        jobrunner_process(
            db_url,
            "run",
            "--burst",
            "--handlers",
            "tests.limit_process_handlers",
            *args,
            env={"JOBRUNNER_WORKER_ID": f"replica-{i}", "JOBRUNNER_CONCURRENCY": "10", **(env or {})},
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


async def _wait_all(processes: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    try:
        codes = [await asyncio.to_thread(p.wait, timeout) for p in processes]
        assert codes == [0] * len(processes)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


async def test_max_running_holds_across_racing_replicas(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(RUNS_TABLE)
    await AsyncClient(conn).enqueue_many([NewJob("at_most_two") for _ in range(40)])
    processes = _replicas(db_url, 3)
    # watch the running set from the database while they race
    seen_running = 0
    while any(p.poll() is None for p in processes):
        seen_running = max(
            seen_running,
            await conn.fetchval(
                "SELECT count(*) FROM background_jobs WHERE job_type = 'at_most_two' AND status = 'running'"
            ),
        )
        await asyncio.sleep(0.005)
    await _wait_all(processes)
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 40
    assert seen_running <= 2
    assert await conn.fetchval(MAX_OVERLAP) <= 2
    # and the limit was used: jobs did run two at a time
    assert await conn.fetchval(MAX_OVERLAP) == 2


async def test_rate_limit_holds_across_racing_replicas(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(RUNS_TABLE)
    await AsyncClient(conn).enqueue_many([NewJob("five_per_second") for _ in range(20)])
    await _wait_all(_replicas(db_url, 2))
    starts = [r["started"] for r in await conn.fetch("SELECT started FROM limit_runs ORDER BY started")]
    assert len(starts) == 20
    # a bucket of 5 refilled at 5/s: any one-second window holds at most 5 + 5 starts,
    # and 20 starts need at least (20 - 5) / 5 = 3 seconds
    for i, first in enumerate(starts):
        in_window = sum(1 for s in starts[i:] if (s - first).total_seconds() < 1.0)
        assert in_window <= 10
    assert (starts[-1] - starts[0]).total_seconds() >= 2.9


async def test_queue_limit_holds_across_racing_replicas_over_every_type(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(RUNS_TABLE)
    await AsyncClient(conn).enqueue_many(
        [NewJob("unlimited", queue="ai") for _ in range(24)]
        + [NewJob("at_most_two", queue="ai") for _ in range(8)]  # under its type's limit and its queue's
        + [NewJob("unlimited", queue="default") for _ in range(30)]
    )
    processes = _replicas(
        db_url,
        3,
        env={"JOBRUNNER_QUEUES": "ai,default", "JOBRUNNER_QUEUE_LIMITS": '{"ai": {"max_running": 3}}'},
    )
    seen_running = 0
    while any(p.poll() is None for p in processes):
        seen_running = max(
            seen_running,
            await conn.fetchval("SELECT count(*) FROM background_jobs WHERE queue = 'ai' AND status = 'running'"),
        )
        await asyncio.sleep(0.005)
    await _wait_all(processes)
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 62
    assert seen_running <= 3
    assert await _max_overlap_of(conn, queue="ai") == 3  # used, never exceeded
    assert await _max_overlap_of(conn, queue="ai", job_type="at_most_two") <= 2  # the type's limit holds too
    assert await _max_overlap_of(conn, queue="default") > 3  # the other queue is not held back


async def test_queue_rate_limit_holds_across_racing_replicas(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(RUNS_TABLE)
    await AsyncClient(conn).enqueue_many(
        [NewJob("unlimited", {"seconds": 0}, queue="slow") for _ in range(10)]
        + [NewJob("five_per_second", queue="slow") for _ in range(10)]
    )
    await _wait_all(
        _replicas(
            db_url,
            2,
            env={"JOBRUNNER_QUEUES": "slow", "JOBRUNNER_QUEUE_LIMITS": '{"slow": {"rate": 4, "per_seconds": 1}}'},
        )
    )
    starts = [r["started"] for r in await conn.fetch("SELECT started FROM limit_runs ORDER BY started")]
    assert len(starts) == 20
    # one bucket of 4 refilled at 4/s for every type in the queue: at most 4 + 4 starts in any
    # one-second window, and 20 starts need at least (20 - 4) / 4 = 4 seconds
    for i, first in enumerate(starts):
        in_window = sum(1 for s in starts[i:] if (s - first).total_seconds() < 1.0)
        assert in_window <= 8
    assert (starts[-1] - starts[0]).total_seconds() >= 3.9


async def test_a_killed_replica_does_not_keep_its_limit_slot(db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute(RUNS_TABLE)
    client = AsyncClient(conn)
    first = await client.enqueue("one_at_a_time", {"seconds": 600})
    holder = jobrunner_process(
        db_url,
        "run",
        "--handlers",
        "tests.limit_process_handlers",
        env={"JOBRUNNER_LEASE_SECONDS": "1"},
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(conn, "SELECT count(*) FROM limit_runs WHERE job_id = $1", first, expect=1)
        second = await client.enqueue("one_at_a_time", {"seconds": 0})
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        # the slot frees when the dead replica's lease expires and the rescuer returns the job
        await _wait_all(_replicas(db_url, 1), timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", second) == "completed"


calls: list[tuple[int, int]] = []


@handler("fair", limits=GlobalLimits(per_key_max_running=2))
async def fair(ctx: JobContext[dict[str, object]]) -> None:
    calls.append((ctx.job.id, ctx.attempt))
    await asyncio.sleep(0.02)


async def test_one_heavy_key_does_not_starve_the_light_keys(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    await client.enqueue_many([NewJob("fair", concurrency_key="heavy") for _ in range(60)])
    await client.enqueue_many([NewJob("fair", concurrency_key=f"light-{i}") for i in range(10)])
    async with running_daemon(db_url, [fair], burst=True, concurrency=4):
        pass
    rows = await conn.fetch("SELECT concurrency_key, started_at - created_at AS waited FROM background_jobs")
    heavy = sorted(r["waited"].total_seconds() for r in rows if r["concurrency_key"] == "heavy")
    light = [r["waited"].total_seconds() for r in rows if r["concurrency_key"] != "heavy"]
    print(f"light keys waited at most {max(light):.3f}s; the heavy key's last job waited {heavy[-1]:.3f}s")
    # every light job started before the heavy key's 6th: none waited for the heavy backlog
    assert max(light) < heavy[5]
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 70


pauses: list[int] = []


@handler("upstream", limits=None)
async def upstream(ctx: JobContext[dict[str, object]]) -> None:
    if ctx.payload.get("first") and ctx.attempt == 1:
        pauses.append(ctx.job.id)
        raise UpstreamRateLimited(1.0, "429 Too Many Requests, Retry-After: 1")


async def test_upstream_rate_limit_pauses_the_type_everywhere(db_url: str, conn: asyncpg.Connection) -> None:
    client = AsyncClient(conn)
    first = await client.enqueue("upstream", {"first": True}, priority=10)
    async with running_daemon(db_url, [upstream], concurrency=1):
        await wait_for(conn, "SELECT count(*) FROM jobrunner_limit_state WHERE paused_until > now()", expect=1)
        second = await client.enqueue("upstream", {})
        await wait_for(
            conn,
            "SELECT count(*) FROM background_jobs WHERE status = 'completed' AND id = ANY($1)",
            [first, second],
            expect=2,
        )
    paused_until = await conn.fetchval("SELECT paused_until FROM jobrunner_limit_state WHERE job_type = 'upstream'")
    second_start = await conn.fetchval("SELECT started_at FROM background_jobs WHERE id = $1", second)
    assert second_start >= paused_until
    assert pauses == [first]
