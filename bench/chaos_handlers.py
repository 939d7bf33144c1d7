"""Handlers of the chaos run (`jobrunner run --handlers bench.chaos_handlers`).

Every execution is recorded in the `executions` table of the chaos database: a row committed in
its own transaction when the handler starts (so the executions of a worker killed a moment later
are counted too), and its end (time and outcome) written when the handler returns, raises or is
cancelled. Both writes retry through connection cuts and a server restart; the end time is taken
when the handler ends, not when the write finally gets through.

Job types (the payload's `ms` / `seconds` say how long the work takes):
- chaos_quick      sleeps a few milliseconds and completes (also used for delayed jobs)
- chaos_flaky      raises until attempt `succeed_on`, then completes (quick retries)
- chaos_doomed     always raises: ends `dead` after max_attempts
- chaos_permanent  raises PermanentError: ends `failed` after one attempt
- chaos_long       sleeps longer than the lease: only heartbeats keep it
- chaos_limited    GlobalLimits(max_running=3) across every daemon
- chaos_callback   a flow's callback (bench/chaos_flows.py): records, in `callback_checks`, how
                   its parents stood when it started (ctx.parents), then completes
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from jobrunner import GlobalLimits, JobContext, PermanentError, RetryPolicy, handler

QUICK_RETRY = RetryPolicy(base_delay=0.05, factor=2.0, max_delay=0.5)
LIMITED_MAX_RUNNING = 3

# errors after which the same write may succeed once the server or the connection is back
_RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# long enough to outlast a PostgreSQL restart
_WRITE_BUDGET_SECONDS = 30.0


def _worker() -> str:
    return os.environ.get("JOBRUNNER_WORKER_ID", f"pid-{os.getpid()}")


async def _write(ctx: JobContext[Any], sql: str, *args: Any) -> None:
    deadline = time.monotonic() + _WRITE_BUDGET_SECONDS
    delay = 0.05
    while True:
        try:
            async with ctx.pool.acquire() as conn:
                await conn.execute(sql, *args)
            return
        except _RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


async def _started(ctx: JobContext[Any]) -> None:
    # idempotent: a retried insert whose first try did commit adds nothing
    await _write(
        ctx,
        "INSERT INTO executions (job_id, attempt, job_type, worker, started_at)"
        " VALUES ($1, $2, $3, $4, clock_timestamp()) ON CONFLICT (job_id, attempt, worker) DO NOTHING",
        ctx.job.id,
        ctx.attempt,
        ctx.job.job_type,
        _worker(),
    )


async def _ended(ctx: JobContext[Any], outcome: str, ended_at: datetime) -> None:
    await _write(
        ctx,
        "UPDATE executions SET ended_at = $4, outcome = $5 WHERE job_id = $1 AND attempt = $2 AND worker = $3",
        ctx.job.id,
        ctx.attempt,
        _worker(),
        ended_at,
        outcome,
    )


async def _execute(ctx: JobContext[dict[str, Any]], seconds: float, fail: type[Exception] | None = None) -> str:
    await _started(ctx)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        # lease lost (heartbeat found the job rescued) or shutdown: record it, stay cancelled
        await asyncio.shield(_ended(ctx, "cancelled", datetime.now(UTC)))
        raise
    ended_at = datetime.now(UTC)
    if fail is not None:
        await _ended(ctx, "permanent" if fail is PermanentError else "error", ended_at)
        raise fail(f"chaos: {ctx.job.job_type} fails on attempt {ctx.attempt}")
    await _ended(ctx, "ok", ended_at)
    return _worker()


@handler("chaos_quick", retry=QUICK_RETRY)
async def chaos_quick(ctx: JobContext[dict[str, Any]]) -> str:
    return await _execute(ctx, float(ctx.payload.get("ms", 0)) / 1000)


@handler("chaos_flaky", retry=QUICK_RETRY)
async def chaos_flaky(ctx: JobContext[dict[str, Any]]) -> str:
    failing = ctx.attempt < int(ctx.payload["succeed_on"])
    return await _execute(ctx, float(ctx.payload.get("ms", 0)) / 1000, RuntimeError if failing else None)


@handler("chaos_doomed", retry=QUICK_RETRY)
async def chaos_doomed(ctx: JobContext[dict[str, Any]]) -> str:
    return await _execute(ctx, float(ctx.payload.get("ms", 0)) / 1000, RuntimeError)


@handler("chaos_permanent", retry=QUICK_RETRY)
async def chaos_permanent(ctx: JobContext[dict[str, Any]]) -> str:
    return await _execute(ctx, float(ctx.payload.get("ms", 0)) / 1000, PermanentError)


@handler("chaos_long", retry=QUICK_RETRY)
async def chaos_long(ctx: JobContext[dict[str, Any]]) -> str:
    return await _execute(ctx, float(ctx.payload["seconds"]))


@handler("chaos_limited", retry=QUICK_RETRY, limits=GlobalLimits(max_running=LIMITED_MAX_RUNNING))
async def chaos_limited(ctx: JobContext[dict[str, Any]]) -> str:
    return await _execute(ctx, float(ctx.payload.get("ms", 0)) / 1000)


@handler("chaos_callback", retry=QUICK_RETRY)
async def chaos_callback(ctx: JobContext[dict[str, Any]]) -> str:
    """What a flow's callback sees of its parents when it starts: every one must have finished.
    One row per execution (the table is bench/chaos_flows.py's)."""
    parents = await ctx.parents()
    unfinished = sum(1 for p in parents if p.status not in ("completed", "failed", "dead", "cancelled"))
    completed = sum(1 for p in parents if p.status == "completed")
    await _write(
        ctx,
        "INSERT INTO callback_checks (job_id, attempt, worker, parents, unfinished, completed, checked_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp()) ON CONFLICT (job_id, attempt, worker) DO NOTHING",
        ctx.job.id,
        ctx.attempt,
        _worker(),
        len(parents),
        unfinished,
        completed,
    )
    return await _execute(ctx, float(ctx.payload.get("ms", 0)) / 1000)
