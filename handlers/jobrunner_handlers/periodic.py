"""The app's periodic maintenance as job types, each calling one of the SQL functions its docs name.

Whoever runs the clock enqueues them: jobrunner's scheduler when it exists, or pg_cron today::

    SELECT cron.schedule('refresh-user-statistics', '0 * * * *',
        $$SELECT enqueue_job('refresh_user_statistics', dedupe_key => 'refresh_user_statistics')$$);

(a dedupe key keeps a slow run from piling up copies). SCHEDULES lists the intended times.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobrunner import JobContext, Schedule, handler
from jobrunner_handlers.cleanup import purge_cache
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import app_settings

# job type -> cron expression (UTC): hourly; daily at 02:00; Sundays at 03:00; daily at 00:15
# (maintain_partitions: jobrunner_handlers.partitions)
SCHEDULES = {
    "refresh_user_statistics": "0 * * * *",
    "purge_expired_cache": "0 2 * * *",
    "cleanup_old_metrics": "0 3 * * 0",
    "maintain_partitions": "15 0 * * *",
}

# Registered through the `jobrunner.schedules` entry point: every replica declares them, the
# database makes sure each tick enqueues one job (JOBRUNNER_PLUGIN_SCHEDULES=false opts out).
CRON_SCHEDULES = [
    Schedule(name=f"app.{job_type}", cron=cron, job_type=job_type) for job_type, cron in SCHEDULES.items()
]


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
