"""Handlers with global limits, for the multi-process limit tests (loaded with `run --handlers`).

Each records when it ran in `limit_runs` (the test creates it), by the database clock.
"""

from __future__ import annotations

import asyncio

from jobrunner import GlobalLimits, JobContext, handler


async def _record_run(ctx: JobContext[dict[str, object]], seconds: float) -> None:
    async with ctx.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO limit_runs (job_id, concurrency_key, started) VALUES ($1, $2, clock_timestamp())",
            ctx.job.id,
            ctx.payload.get("key"),
        )
    await asyncio.sleep(seconds)
    async with ctx.pool.acquire() as conn:
        await conn.execute("UPDATE limit_runs SET ended = clock_timestamp() WHERE job_id = $1", ctx.job.id)


@handler("at_most_two", limits=GlobalLimits(max_running=2))
async def at_most_two(ctx: JobContext[dict[str, object]]) -> None:
    await _record_run(ctx, 0.05)


@handler("five_per_second", limits=GlobalLimits(rate=5, per_seconds=1.0))
async def five_per_second(ctx: JobContext[dict[str, object]]) -> None:
    await _record_run(ctx, 0.0)


@handler("one_at_a_time", limits=GlobalLimits(max_running=1))
async def one_at_a_time(ctx: JobContext[dict[str, object]]) -> None:
    await _record_run(ctx, float(str(ctx.payload.get("seconds", 0))))


@handler("unlimited")
async def unlimited(ctx: JobContext[dict[str, object]]) -> None:
    """No limits of its own: only its queue's (JOBRUNNER_QUEUE_LIMITS) hold it back."""
    await _record_run(ctx, float(str(ctx.payload.get("seconds", 0.05))))
