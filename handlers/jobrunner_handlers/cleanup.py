"""cleanup_old_data: deletes unused uploads (jobrunner_handlers.unused_uploads), daily at 03:30 UTC.

Users' progress photos are kept whatever their age, with every object a row names; what goes is
objects in users' folders of the uploads (and thumbnails) bucket that no row of theirs names and
that are older than `unused_upload_days` (90). `{"dry_run": true}` reports what a run would
delete (up to 1000 paths per bucket) and deletes nothing.

One run at a time (the others return at once), and a bounded one: at most
`cleanup_max_list_requests` list requests; the next run goes on where it stopped. Expired cache
rows, old metrics, partitions and archives are other jobs' (purge_expired_cache,
cleanup_old_metrics, maintain_partitions, archive_old_analyses); finished jobs are the daemon's
pruner's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobrunner import JobContext, handler
from jobrunner_handlers.run_lock import one_at_a_time
from jobrunner_handlers.settings import app_settings, storage_startup_check
from jobrunner_handlers.storage import StorageClient
from jobrunner_handlers.unused_uploads import Sweep, SweepOptions


class CleanupPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    # each default: the plugin's setting
    unused_days: int | None = Field(default=None, ge=7)
    max_list_requests: int | None = Field(default=None, ge=1)


@handler("cleanup_old_data", payload_model=CleanupPayload, timeout=3600, startup_check=storage_startup_check)
async def cleanup_old_data(ctx: JobContext[CleanupPayload]) -> dict[str, Any]:
    settings = app_settings()
    settings.require_storage()
    payload = ctx.payload
    options = SweepOptions(
        unused_days=payload.unused_days or settings.unused_upload_days,
        page_size=settings.cleanup_list_page_size,
        delete_batch=settings.cleanup_batch_size,
        dry_run=payload.dry_run,
    )
    buckets = sorted({settings.uploads_bucket, settings.thumbnails_bucket or settings.uploads_bucket})
    async with one_at_a_time(ctx.pool, "cleanup_old_data") as held:
        if not held:
            return {"skipped": "another cleanup_old_data job is running"}
        async with StorageClient.from_settings(settings) as storage:
            sweep = Sweep(ctx.pool, storage, options, ctx.log)
            reports = await sweep.run(buckets, payload.max_list_requests or settings.cleanup_max_list_requests)
    result = {
        "dry_run": options.dry_run,
        "unused_days": options.unused_days,
        "buckets": [report.as_dict(options.dry_run) for report in reports],
    }
    for report in reports:
        ctx.log.info("cleanup done", **{k: v for k, v in report.as_dict(dry_run=False).items()})
    return result
