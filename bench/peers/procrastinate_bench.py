"""procrastinate's side of bench/compare.py (run with bench/.venv-peers/bin/python -m bench.peers.procrastinate_bench).

Driven through its documented API: an `App` on a `PsycopgConnector`, the schema from
`schema_manager.apply_schema_async()`, `batch_defer_async` (one statement) for bulk,
`defer_async` for one by one, and `run_worker_async(concurrency=C, wait=False)`, its burst mode:
the worker returns once a fetch finds nothing and its running jobs have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector

from bench.peers.harness import IdleWorker, Peer, main, sql_count

_started: dict[int, float] = {}

# pickup: the worker waits on LISTEN; the same fallback poll as jobrunner's pick-up run, so a
# sample can only be served by the notification (procrastinate's default poll is 5 s)
PICKUP_POLL_SECONDS = 30.0
PICKUP_CONCURRENCY = 10


def _app(url: str) -> App:
    # the connector's pool as procrastinate ships it (psycopg_pool's default: 4 connections);
    # delete_jobs keeps its default "never", so finished jobs stay as `succeeded` rows, as
    # jobrunner keeps `completed` rows, and the count below can see them
    app = App(connector=PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    @app.task(name="pickup", pass_context=True)
    async def pickup(context: JobContext) -> None:
        assert context.job.id is not None
        _started[context.job.id] = time.perf_counter()

    return app


async def install(url: str) -> None:
    app = _app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue_bulk(url: str, jobs: int) -> None:
    app = _app(url)
    async with app.open_async():
        await app.tasks["noop"].batch_defer_async(*({} for _ in range(jobs)))


async def drain(url: str, jobs: int, concurrency: int) -> None:
    app = _app(url)
    async with app.open_async():
        # listen_notify stays on (its default), like jobrunner's LISTEN; no signal handlers in a bench
        await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)


async def count_done(url: str) -> int:
    return await sql_count(
        url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND task_name = 'noop'"
    )


async def enqueue_single(url: str, jobs: int) -> None:
    app = _app(url)
    async with app.open_async():
        task = app.tasks["noop"]
        for _ in range(jobs):
            await task.defer_async()


@asynccontextmanager
async def idle_worker(url: str) -> AsyncIterator[IdleWorker]:
    app = _app(url)
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=PICKUP_CONCURRENCY,
                wait=True,
                install_signal_handlers=False,
                fetch_job_polling_interval=PICKUP_POLL_SECONDS,
            )
        )
        try:
            # procrastinate has no public "listening" signal: give the worker time to LISTEN
            await asyncio.sleep(1.0)
            yield app.tasks["pickup"].defer_async, worker
        finally:
            worker.cancel()  # procrastinate's documented way to stop run_worker_async: a graceful stop
            with contextlib.suppress(asyncio.CancelledError):
                await worker


SETTINGS: dict[str, Any] = {
    "connector": "PsycopgConnector, psycopg_pool defaults (4 connections)",
    "worker": "run_worker_async(concurrency=C, wait=False), listen_notify=True, delete_jobs='never'",
    "fetch": "one job per fetch query (procrastinate_fetch_job_v2), one finish query per job",
    "bulk_enqueue": "Task.batch_defer_async (one statement)",
    "single_enqueue": "Task.defer_async (one commit each)",
    "pickup": f"worker concurrency {PICKUP_CONCURRENCY}, fetch_job_polling_interval={PICKUP_POLL_SECONDS}s",
    "logging": "not configured: the standard library's WARNING, so its per-job INFO lines are dropped",
}

PEER = Peer(
    name="procrastinate",
    version=importlib.metadata.version("procrastinate"),
    database="bench_procrastinate",
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
