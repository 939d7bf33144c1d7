"""Handlers for the daemons that tests/test_processes.py starts as child processes
(`jobrunner run --handlers tests.process_handlers`).

They report what they did through the test's own database (tables the test creates), never
through memory: the test and the daemon are different processes.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jobrunner import JobContext, PermanentError, RetryLater, RetryPolicy, handler

# retries the tests can wait for: at most a few tens of milliseconds between attempts
QUICK_RETRY = RetryPolicy(base_delay=0.01, factor=2.0, max_delay=0.05)


def _worker() -> str:
    return os.environ.get("JOBRUNNER_WORKER_ID", f"pid-{os.getpid()}")


@handler("record_run", retry=QUICK_RETRY)
async def record_run(ctx: JobContext[dict[str, Any]]) -> str:
    """Record this execution in `handler_runs`, then sleep `sleep_first_attempt` seconds on attempt 1.

    The insert commits before the sleep, so the test can see that the handler started. With a
    unique constraint on `handler_runs.job_id` a second execution of the same job fails loudly.
    """
    async with ctx.transaction() as conn:
        await conn.execute(
            "INSERT INTO handler_runs (job_id, worker_id, attempt, started_at) VALUES ($1, $2, $3, clock_timestamp())",
            ctx.job.id,
            _worker(),
            ctx.attempt,
        )
    if ctx.attempt == 1:
        await asyncio.sleep(float(ctx.payload.get("sleep_first_attempt", 0)))
    return _worker()


@handler("sleep")
async def sleep(ctx: JobContext[dict[str, Any]]) -> None:
    """Sleep `seconds` (cancellable: this is what a graceful shutdown hands back)."""
    await asyncio.sleep(float(ctx.payload["seconds"]))


@handler("noop")
async def noop(_ctx: JobContext[dict[str, Any]]) -> None:
    return None


@handler("fail_permanently")
async def fail_permanently(_ctx: JobContext[dict[str, Any]]) -> None:
    raise PermanentError("this job can never succeed")


@handler("flaky", retry=QUICK_RETRY)
async def flaky(ctx: JobContext[dict[str, Any]]) -> int:
    """Fail with an ordinary exception until attempt `succeed_on`."""
    if ctx.attempt < int(ctx.payload["succeed_on"]):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return ctx.attempt


@handler("touch_db", retry=QUICK_RETRY)
async def touch_db(ctx: JobContext[dict[str, Any]]) -> None:
    """A little database work and a little waiting, like a real handler."""
    await ctx.pool.fetchval("SELECT pg_sleep(0.005)")
    await asyncio.sleep(0.005)


@handler("retry_later")
async def retry_later(ctx: JobContext[dict[str, Any]]) -> int:
    """Ask for a retry `delay` seconds later until attempt `succeed_on`."""
    if ctx.attempt < int(ctx.payload["succeed_on"]):
        raise RetryLater(float(ctx.payload["delay"]), f"not yet on attempt {ctx.attempt}")
    return ctx.attempt
