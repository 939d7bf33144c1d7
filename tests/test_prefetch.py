"""JOBRUNNER_PREFETCH: jobs claimed ahead of free slots wait in the process, start in claim
order, and are handed back untouched at shutdown or after prefetch_ttl, or cancelled without
running; `auto` claims ahead for short jobs only."""

from __future__ import annotations

import asyncio

import asyncpg

from jobrunner import AsyncClient, GlobalLimits, JobContext, NewJob, handler
from jobrunner.daemon.daemon import Daemon
from jobrunner.daemon.in_flight import StopReason
from jobrunner.dsn import parse_database_url
from jobrunner.registry import HandlerRegistry
from tests.support import make_settings, running_daemon, wait_for, wait_until

started: list[int] = []
release = asyncio.Event()


@handler("held")
async def held(ctx: JobContext[dict[str, object]]) -> None:
    started.append(ctx.job.id)
    await release.wait()


async def test_prefetched_jobs_wait_for_a_slot_and_go_back_untouched_at_shutdown(
    db_url: str, conn: asyncpg.Connection
) -> None:
    started.clear()
    release.clear()
    ids = await AsyncClient(conn).enqueue_many([NewJob("held", priority=10 - i) for i in range(10)])
    async with running_daemon(db_url, [held], concurrency=2, prefetch=6, prefetch_ttl=60) as daemon:
        # 2 slots + 6 ahead: 8 claimed, 2 running, the other 2 left for someone else
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=8)
        await wait_until(lambda: len(started) == 2, what="two handlers started")
        assert started == ids[:2]
        assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'pending'") == 2
        # a freed slot goes to the next waiting job in claim order
        release.set()
        await wait_until(lambda: len(started) == 10, what="every job started")
        release.clear()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=10)
        assert started == ids

        more = await AsyncClient(conn).enqueue_many([NewJob("held") for _ in range(5)])
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=5)
        await wait_until(lambda: len(started) == 12, what="two more handlers started")
        daemon.request_stop()
        # the three that never started are back at once, their attempt not spent
        await wait_for(
            conn,
            "SELECT count(*) FROM background_jobs WHERE status = 'pending' AND attempts = 0 AND release_count = 1",
            expect=3,
        )
        release.set()
    rows = await conn.fetch("SELECT id, status FROM background_jobs WHERE id = ANY($1::bigint[]) ORDER BY id", more)
    assert [r["status"] for r in rows] == ["completed", "completed", "pending", "pending", "pending"]
    assert started[10:] == more[:2]


async def test_a_prefetched_job_cancelled_before_it_starts_never_runs(db_url: str, conn: asyncpg.Connection) -> None:
    started.clear()
    release.clear()
    first, waiting = await AsyncClient(conn).enqueue_many([NewJob("held", priority=1), NewJob("held")])
    async with running_daemon(db_url, [held], concurrency=1, prefetch=1, prefetch_ttl=60) as daemon:
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=2)
        assert await conn.fetchval("SELECT cancel_job($1)", waiting) == "cancelling"
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", waiting, expect="cancelled")
        await wait_until(lambda: daemon.stats.cancelled == 1, what="the cancel counted")
        release.set()
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", first, expect="completed")
    assert started == [first]


async def test_a_prefetched_job_whose_lease_is_lost_is_dropped_and_claimed_afresh(
    db_url: str, conn: asyncpg.Connection
) -> None:
    started.clear()
    release.clear()
    first, waiting = await AsyncClient(conn).enqueue_many([NewJob("held", priority=1), NewJob("held")])
    async with running_daemon(
        db_url, [held], concurrency=1, prefetch=1, heartbeat_interval=0.1, prefetch_ttl=60
    ) as daemon:
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'running'", expect=2)
        # another replica's rescuer took it back (as after an expired lease)
        await conn.execute(
            "UPDATE background_jobs SET status = 'pending', worker_id = NULL, lease_expires_at = NULL,"
            " scheduled_at = now() + interval '1 hour' WHERE id = $1",
            waiting,
        )
        await wait_until(lambda: daemon.stats.lost_leases == 1, what="the lost lease noticed")
        assert daemon.in_flight.get(waiting) is None
        release.set()
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", first, expect="completed")
    assert started == [first]  # the taken-back job never ran here
    assert await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", waiting) == "pending"


limited_gate = asyncio.Semaphore(0)
limited_gate_started: list[int] = []


@handler("limited_gated", limits=GlobalLimits(max_running=3))
async def limited_gated(ctx: JobContext[dict[str, object]]) -> None:
    limited_gate_started.append(ctx.job.id)
    await limited_gate.acquire()


@handler("limited_and_held", limits=GlobalLimits(max_running=3))
async def limited_and_held(ctx: JobContext[dict[str, object]]) -> None:
    started.append(ctx.job.id)
    await release.wait()


async def test_prefetch_never_takes_a_global_limit_slot_it_cannot_start(db_url: str, conn: asyncpg.Connection) -> None:
    limited_gate_started.clear()
    client = AsyncClient(conn)
    await client.enqueue_many([NewJob("limited_gated") for _ in range(5)])
    async with running_daemon(db_url, [limited_gated], concurrency=1, prefetch=5, prefetch_ttl=60, poll_interval=60):
        for ran in range(1, 6):
            await wait_until(lambda ran=ran: len(limited_gate_started) == ran, what=f"limited job {ran} started")  # type: ignore[misc]
            running_limited = await conn.fetch(
                "SELECT id FROM background_jobs WHERE job_type = 'limited_gated' AND status = 'running'"
            )
            # every one claimed has started (the one before may not have its outcome written
            # yet): none waits in the process, holding a global slot it cannot start
            assert {row["id"] for row in running_limited} <= set(limited_gate_started)
            limited_gate.release()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=5)


async def test_limited_jobs_of_a_claim_start_before_the_jobs_it_took_ahead(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A limited job claimed for a free slot must run now: waiting, it would hold the limit's
    slot (it is `running`) and the token it spent."""
    started.clear()
    release.clear()
    client = AsyncClient(conn)
    limited = await client.enqueue_many([NewJob("limited_and_held", priority=0) for _ in range(2)])
    await client.enqueue_many([NewJob("held", priority=10) for _ in range(10)])
    async with running_daemon(db_url, [limited_and_held, held], concurrency=2, prefetch=5, prefetch_ttl=60) as daemon:
        # the first claim goes limited side first: 2 limited jobs for the 2 free slots, then 5
        # higher-priority unlimited ones ahead; sorted by priority together, those 5 took the slots
        await wait_until(lambda: len(started) == 2, what="two handlers started")
        assert sorted(started) == sorted(limited)
        assert all(job.job_type == "held" for job in daemon.in_flight.waiting_jobs())
        release.set()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=12)


async def test_a_job_task_cancelled_before_its_first_step_is_still_settled(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A cancel (NOTIFY, lost lease, second SIGTERM) can reach a job whose task was created in
    the same loop step and never ran; the job must still end, not stay running under our heartbeat."""
    started.clear()
    job_id = await AsyncClient(conn).enqueue("held", queue="elsewhere")  # not a queue the daemon claims from
    async with running_daemon(db_url, [held]) as daemon:
        assert daemon.store is not None and daemon.executor is not None
        [job] = await daemon.store.claim_batch(["elsewhere"], daemon.worker_id, 1, 30.0)
        claimed = daemon.in_flight.hold(job, asyncio.get_running_loop().time())
        daemon.executor.start(claimed)
        # cancelled (as a cancel request does) before the task's first step
        assert daemon.executor.stop(claimed, StopReason.CANCEL_REQUESTED)
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="cancelled")
        # the daemon lets go of it once it sees the write committed, a moment after the test does
        await wait_until(lambda: daemon.in_flight.get(job.id) is None, what="the job let go")
        assert daemon.in_flight.running == 0
    assert started == []


async def test_a_job_that_waited_prefetch_ttl_is_handed_back_and_runs_once(
    db_url: str, conn: asyncpg.Connection
) -> None:
    started.clear()
    release.clear()
    first, *behind = await AsyncClient(conn).enqueue_many([NewJob("held", priority=1), NewJob("held"), NewJob("held")])
    async with running_daemon(db_url, [held], concurrency=1, prefetch=2, prefetch_ttl=0.2) as daemon:
        await wait_until(lambda: started == [first], what="the first job started")
        # the two behind it waited 0.2 s for the busy slot: back in the table, attempt not spent
        await wait_for(
            conn,
            "SELECT count(*) FROM background_jobs WHERE id = ANY($1::bigint[]) AND release_count = 1",
            behind,
            expect=2,
        )
        await wait_until(lambda: daemon.stats.released == 2, what="the hand-back counted")
        assert await conn.fetchval("SELECT release_count FROM background_jobs WHERE id = $1", first) == 0
        release.set()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=3)
    assert sorted(started) == sorted([first, *behind])  # each ran once
    attempts = await conn.fetch("SELECT attempts FROM background_jobs ORDER BY id")
    assert [r["attempts"] for r in attempts] == [1, 1, 1]


async def test_auto_prefetch_claims_nothing_ahead_of_a_slow_job(db_url: str, conn: asyncpg.Connection) -> None:
    started.clear()
    release.clear()
    ids = await AsyncClient(conn).enqueue_many([NewJob("held", priority=5 - i) for i in range(5)])
    async with running_daemon(db_url, [held], concurrency=1, prefetch="auto") as daemon:
        await wait_until(lambda: started == ids[:1], what="the first job started")
        # the fetch loop is parked until the slot frees: what it claimed is all it claims
        assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'running'") == 1
        assert daemon.in_flight.waiting == 0
        release.set()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=5)


waiting_seen: list[int] = []
draining: list[Daemon] = []


@handler("note_waiting")
async def note_waiting(ctx: JobContext[dict[str, object]]) -> None:
    waiting_seen.append(draining[0].in_flight.waiting)


async def test_auto_prefetch_claims_ahead_for_short_jobs(db_url: str, conn: asyncpg.Connection) -> None:
    waiting_seen.clear()
    draining.clear()
    await AsyncClient(conn).enqueue_many([NewJob("note_waiting") for _ in range(3_000)])
    settings = make_settings(db_url, concurrency=2, prefetch="auto")
    daemon = Daemon(settings, HandlerRegistry([note_waiting]), parse_database_url(db_url), burst=True)
    draining.append(daemon)
    stats = await asyncio.wait_for(daemon.run(), 60)
    assert stats.completed == 3_000
    # at 2 slots, no job would wait without a claim ahead; measured depths put many in line
    assert max(waiting_seen) >= 10
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 3_000


gate = asyncio.Semaphore(0)
finished_stepped: list[int] = []
limited_started: list[int] = []


@handler("stepped")
async def stepped(ctx: JobContext[dict[str, object]]) -> None:
    await gate.acquire()
    finished_stepped.append(ctx.job.id)


@handler("limited_quick", limits=GlobalLimits(max_running=3))
async def limited_quick(ctx: JobContext[dict[str, object]]) -> None:
    limited_started.append(ctx.job.id)


async def test_a_limited_job_is_not_starved_by_the_jobs_claimed_ahead(db_url: str, conn: asyncpg.Connection) -> None:
    """Under a backlog every slot is busy and the prefetch keeps the line full, so no claim ever
    finds a slot free now, which is all a limited part may take: the daemon stops claiming ahead
    while a limited job waits for room, and the next free slot is the limited job's."""
    finished_stepped.clear()
    limited_started.clear()
    client = AsyncClient(conn)
    await client.enqueue_many([NewJob("stepped") for _ in range(40)])
    async with running_daemon(db_url, [stepped, limited_quick], concurrency=2, prefetch=5, prefetch_ttl=60) as daemon:
        await wait_until(lambda: daemon.in_flight.waiting == 5, what="the line ahead filled")
        # first in claim order: a higher priority than the whole backlog
        limited = await client.enqueue("limited_quick", priority=10)
        while not limited_started and len(finished_stepped) < 40:
            done = len(finished_stepped)
            gate.release()  # one backlog job ends
            await wait_until(lambda done=done: len(finished_stepped) > done, what="a backlog job ended")  # type: ignore[misc]
        assert limited_started == [limited]
        # it waited for the line claimed before the daemon learned of it (2 running, 5 waiting,
        # plus what the refills claimed meanwhile, up to half the prefetch each), not for the
        # 40-job backlog (39 before the fix)
        assert len(finished_stepped) <= 15, f"the limited job started after {len(finished_stepped)} backlog jobs"
        for _ in range(40):
            gate.release()
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=41)
