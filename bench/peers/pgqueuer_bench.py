"""pgqueuer's side of bench/compare.py (run with bench/.venv-peers/bin/python -m bench.peers.pgqueuer_bench).

Driven through its documented API on the asyncpg driver: `Queries.install()` for the schema,
`Queries.enqueue` with lists (one statement) for bulk and with scalars for one by one, and a
`PgQueuer` on one asyncpg connection (its documented setup) with `run(mode=drain)`: the worker
returns once the queue is empty and its tasks have finished.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries
from pgqueuer.domain.types import QueueExecutionMode

from bench.peers.harness import IdleWorker, Peer, main, sql_count

_started: dict[int, float] = {}

# pickup: the worker waits on LISTEN; dequeue_timeout is the fallback poll, 30 s like jobrunner's
# pick-up run (also pgqueuer's default), so a sample can only be served by the notification
PICKUP_POLL = timedelta(seconds=30)
PICKUP_CONCURRENCY = 10


def batch_size_for(concurrency: int) -> int:
    # pgqueuer refuses max_concurrent_tasks < 2 * batch_size: the largest batch it allows at this
    # concurrency (jobrunner claims up to min(free slots, 100) per query)
    return max(1, concurrency // 2)


async def install(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def enqueue_bulk(url: str, jobs: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await Queries(AsyncpgDriver(conn)).enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)
    finally:
        await conn.close()


def _worker(conn: asyncpg.Connection) -> PgQueuer:
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    @pgq.entrypoint("pickup")
    async def pickup(job: Job) -> None:
        _started[job.id] = time.perf_counter()

    return pgq


async def drain(url: str, jobs: int, concurrency: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        # max_concurrent_tasks is the worker-wide cap, the counterpart of jobrunner's concurrency;
        # everything else (heartbeat, log aggregation, the scheduler) as pgqueuer ships it
        await _worker(conn).run(
            mode=QueueExecutionMode.drain,
            batch_size=batch_size_for(concurrency),
            max_concurrent_tasks=concurrency,
        )
    finally:
        await conn.close()


async def count_done(url: str) -> int:
    # pgqueuer deletes a finished job from its queue table and logs the outcome in pgqueuer_log
    left = await sql_count(url, "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'noop'")
    done = await sql_count(url, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful' AND entrypoint = 'noop'")
    return done if left == 0 else -left


async def enqueue_single(url: str, jobs: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        for _ in range(jobs):
            await queries.enqueue("noop", None)
    finally:
        await conn.close()


@asynccontextmanager
async def idle_worker(url: str) -> AsyncIterator[IdleWorker]:
    worker_conn = await asyncpg.connect(url)
    client_conn = await asyncpg.connect(url)
    pgq = _worker(worker_conn)
    worker = asyncio.create_task(
        pgq.run(
            dequeue_timeout=PICKUP_POLL,
            batch_size=batch_size_for(PICKUP_CONCURRENCY),
            max_concurrent_tasks=PICKUP_CONCURRENCY,
        )
    )
    queries = Queries(AsyncpgDriver(client_conn))

    async def enqueue_one() -> int:
        (job_id,) = await queries.enqueue("pickup", None)
        return int(job_id)

    try:
        # pgqueuer has no public "listening" signal: give the worker time to LISTEN
        await asyncio.sleep(1.0)
        yield enqueue_one, worker
    finally:
        pgq.shutdown.set()  # the documented graceful stop
        await worker
        await client_conn.close()
        await worker_conn.close()


SETTINGS: dict[str, Any] = {
    "driver": "PgQueuer.from_asyncpg_connection: one asyncpg connection per worker",
    "worker": "run(mode=drain, max_concurrent_tasks=C, batch_size=C//2: the largest it accepts)",
    "completion": "pgqueuer's buffered status log (deletes the job row, logs to pgqueuer_log)",
    "bulk_enqueue": "Queries.enqueue with lists (one statement)",
    "single_enqueue": "Queries.enqueue with scalars (one commit each)",
    "pickup": f"continuous mode, max_concurrent_tasks={PICKUP_CONCURRENCY}, dequeue_timeout=30s",
    "event_loop": "asyncio's default loop in every system's bench process (pgqueuer's CLI would pick uvloop)",
}

PEER = Peer(
    name="pgqueuer",
    version=importlib.metadata.version("pgqueuer"),
    database="bench_pgqueuer",
    install=install,
    enqueue_bulk=enqueue_bulk,
    drain=drain,
    count_done=count_done,
    enqueue_single=enqueue_single,
    idle_worker=idle_worker,
    started=_started,
    settings=SETTINGS,
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
