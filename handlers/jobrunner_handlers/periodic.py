"""The app's periodic maintenance: every schedule the plugin declares, and the small job types.

SCHEDULES is the one list of the plugin's schedules (job type -> cron, UTC); CRON_SCHEDULES
declares them through the `jobrunner.schedules` entry point, and jobrunner's scheduler enqueues one
job per tick however many replicas run (docs/app/maintenance.md). The job types here each call one
SQL function; the larger ones live in partitions.py, cleanup.py and archive.py.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from jobrunner import JobContext, Schedule, handler
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import app_settings

# job type -> cron expression (UTC): hourly; daily at 02:00; Sundays at 03:00; and in their own
# modules: daily at 00:15 (partitions), daily at 03:30 (cleanup), the 1st of the month at 04:00 (archive)
SCHEDULES = {
    "refresh_user_statistics": "0 * * * *",
    "purge_expired_cache": "0 2 * * *",
    "cleanup_old_metrics": "0 3 * * 0",
    "maintain_partitions": "15 0 * * *",
    "cleanup_old_data": "30 3 * * *",
    "archive_old_analyses": "0 4 1 * *",
}
CACHE_BATCH = 5_000

# Registered through the `jobrunner.schedules` entry point: every replica declares them, the
# database makes sure each tick enqueues one job (JOBRUNNER_PLUGIN_SCHEDULES=false opts out).
CRON_SCHEDULES = [
    Schedule(name=f"app.{job_type}", cron=cron, job_type=job_type) for job_type, cron in SCHEDULES.items()
]


async def purge_cache(pool: asyncpg.Pool, max_batches: int) -> int:
    deleted = 0
    for _ in range(max_batches):
        batch: int = await pool.fetchval(sql("cleanup_expired_cache"), CACHE_BATCH)
        deleted += batch
        if batch < CACHE_BATCH:
            break
    return deleted


class NoPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: int | None = Field(default=None, ge=1)


@handler("refresh_user_statistics", payload_model=NoPayload, timeout=600, max_concurrency=1)
async def refresh_user_statistics(ctx: JobContext[NoPayload]) -> dict[str, Any]:
    """REFRESH MATERIALIZED VIEW CONCURRENTLY: readers of the view are never blocked."""
    await ctx.pool.execute(sql("refresh_user_statistics"))
    return {"users": await ctx.pool.fetchval(sql("user_statistics_rows"))}


@handler("purge_expired_cache", payload_model=NoPayload, timeout=600, max_concurrency=1)
async def purge_expired_cache(ctx: JobContext[NoPayload]) -> dict[str, Any]:
    return {"deleted": await purge_cache(ctx.pool, app_settings().cleanup_max_batches)}


@handler("cleanup_old_metrics", payload_model=MetricsPayload, timeout=600, max_concurrency=1)
async def cleanup_old_metrics(ctx: JobContext[MetricsPayload]) -> dict[str, Any]:
    settings = app_settings()
    retention = ctx.payload.retention_days or settings.metrics_retention_days
    removed = await ctx.pool.fetchval(sql("cleanup_old_metrics"), retention, settings.cleanup_batch_size * 100)
    result: dict[str, Any] = json.loads(removed)
    return result
