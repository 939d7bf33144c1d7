"""cleanup_old_data: the app's nightly housekeeping, in bounded batches, reporting what it removed.

1. uploads older than upload_retention_days: their Storage objects (original and thumbnails) are
   deleted through the Storage API a batch at a time, then their rows (objects first: a failure
   in between leaves rows pointing at nothing, which the next run deletes, never orphaned objects).
   Only objects in the row owner's folder of an upload bucket (jobrunner_handlers.ownership): a
   row naming anything else is logged and kept, with all of its objects;
2. expired ai_response_cache rows;
3. api_metrics partitions past metrics_retention_days (and old rows in its default partition);
4. only when archive_retention_days is set: analysis month partitions past it are written to the
   archive bucket as gzip JSON lines, downloaded again and compared, and only then detached and
   dropped.

Finished jobs are not its business: the daemon's own pruner removes them after
JOBRUNNER_RETENTION_SECONDS. Nor are partitions: maintain_partitions keeps them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from jobrunner import JobContext, handler
from jobrunner_handlers.ownership import upload_objects
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import AppSettings, app_settings, storage_startup_check
from jobrunner_handlers.storage import StorageClient

CACHE_BATCH = 5_000
ARCHIVE_PAGE = 1_000


class CleanupPayload(BaseModel):
    # each default: the plugin's setting
    upload_retention_days: int | None = Field(default=None, ge=1)
    max_batches: int | None = Field(default=None, ge=1)


async def delete_old_uploads(
    ctx: JobContext[CleanupPayload],
    storage: StorageClient,
    settings: AppSettings,
    retention_days: int,
    max_batches: int,
) -> dict[str, Any]:
    """Rows past the retention, oldest first, a batch at a time; a row naming any object outside
    its owner's folder of an upload bucket is logged and kept, and none of its objects deleted."""
    batch = settings.cleanup_batch_size
    buckets = {settings.uploads_bucket, settings.thumbnails_bucket or settings.uploads_bucket}
    rows_deleted = objects_deleted = skipped = 0
    after: tuple[Any, Any] = (None, None)
    for _ in range(max_batches):
        rows = await ctx.pool.fetch(sql("old_uploads"), retention_days, batch, *after)
        if not rows:
            break
        after = (rows[-1]["created_at"], rows[-1]["id"])
        by_bucket: dict[str, list[str]] = {}
        deletable = []
        for row in rows:
            checked = upload_objects(row, buckets)
            if checked.refused:
                skipped += 1
                ctx.log.warning(
                    "upload row skipped: it names objects outside its owner's folder",
                    photo_id=str(row["id"]),
                    user_id=str(row["user_id"]),
                    bucket=row["bucket"],
                    path=row["storage_path"],
                    reason=checked.refused,
                )
                continue
            deletable.append(row)
            for bucket, path in checked.objects:
                by_bucket.setdefault(bucket, []).append(path)
        for bucket, paths in sorted(by_bucket.items()):
            objects_deleted += len(await storage.remove(bucket, paths))
        if deletable:
            status = await ctx.pool.execute(
                sql("delete_uploads"), [r["id"] for r in deletable], [r["created_at"] for r in deletable]
            )
            rows_deleted += int(status.split()[-1])
        if len(rows) < batch:
            break
    else:
        return {"rows": rows_deleted, "objects": objects_deleted, "skipped_rows": skipped, "more_remaining": True}
    return {"rows": rows_deleted, "objects": objects_deleted, "skipped_rows": skipped, "more_remaining": False}


async def purge_cache(pool: asyncpg.Pool, max_batches: int) -> int:
    deleted = 0
    for _ in range(max_batches):
        batch: int = await pool.fetchval(sql("cleanup_expired_cache"), CACHE_BATCH)
        deleted += batch
        if batch < CACHE_BATCH:
            break
    return deleted


async def partition_as_jsonl_gz(pool: asyncpg.Pool, partition: str) -> tuple[bytes, int]:
    """The partition's rows as gzip JSON lines, read a page at a time in key order."""
    buffer = io.BytesIO()
    count = 0
    after: tuple[Any, Any] = (None, None)
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
        while True:
            rows = await pool.fetch(sql("partition_rows_page"), partition, after[0], after[1], ARCHIVE_PAGE)
            for row in rows:
                out.write(row["row_json"].encode() + b"\n")
            count += len(rows)
            if len(rows) < ARCHIVE_PAGE:
                break
            after = (rows[-1]["created_at"], rows[-1]["id"])
    return buffer.getvalue(), count


async def archive_partitions(
    ctx: JobContext[CleanupPayload], storage: StorageClient, settings: AppSettings, retention_days: int
) -> list[dict[str, Any]]:
    archived: list[dict[str, Any]] = []
    for part in await ctx.pool.fetch(sql("archivable_partitions"), retention_days):
        blob, count = await partition_as_jsonl_gz(ctx.pool, part["partition"])
        table = part["parent"].split(".")[-1]
        path = f"{table}/{part['partition'].split('.')[-1]}.jsonl.gz"
        # upsert: a retry after a failed verification rewrites the same content
        await storage.upload(settings.archive_bucket, path, blob, "application/gzip", upsert=True)
        stored = await storage.download(settings.archive_bucket, path, content_types=None, max_bytes=len(blob) + 1)
        if hashlib.sha256(stored.data).digest() != hashlib.sha256(blob).digest():
            raise RuntimeError(f"archive {settings.archive_bucket}/{path} does not read back as written; kept the rows")
        if len(gzip.decompress(stored.data).splitlines()) != count:
            raise RuntimeError(f"archive {settings.archive_bucket}/{path} has the wrong number of rows; kept the rows")
        await ctx.pool.execute(sql("drop_month_partition"), part["parent"], part["partition"])
        ctx.log.info("partition archived and dropped", partition=part["partition"], rows=count, object=path)
        archived.append({"partition": part["partition"], "rows": count, "object": f"{settings.archive_bucket}/{path}"})
    return archived


@handler("cleanup_old_data", payload_model=CleanupPayload, timeout=3600, startup_check=storage_startup_check)
async def cleanup_old_data(ctx: JobContext[CleanupPayload]) -> dict[str, Any]:
    settings = app_settings()
    settings.require_storage()
    payload = ctx.payload
    max_batches = payload.max_batches or settings.cleanup_max_batches
    async with ctx.pool.acquire() as lock_conn:
        # a session lock on a connection of its own, held for the whole run: batches commit one by one
        if not await lock_conn.fetchval(sql("try_cleanup_lock")):
            return {"skipped": "another cleanup_old_data job is running"}
        try:
            result: dict[str, Any] = {}
            async with StorageClient.from_settings(settings) as storage:
                result["uploads"] = await delete_old_uploads(
                    ctx, storage, settings, payload.upload_retention_days or settings.upload_retention_days, max_batches
                )
                result["expired_cache_rows"] = await purge_cache(ctx.pool, max_batches)
                metrics = await ctx.pool.fetchval(
                    sql("cleanup_old_metrics"), settings.metrics_retention_days, settings.cleanup_batch_size * 100
                )
                result["metrics"] = json.loads(metrics)
                result["archived_partitions"] = (
                    await archive_partitions(ctx, storage, settings, settings.archive_retention_days)
                    if settings.archive_retention_days
                    else []
                )
        finally:
            await lock_conn.fetchval(sql("cleanup_unlock"))
    ctx.log.info("cleanup done", **{k: v for k, v in result.items() if not isinstance(v, list)})
    return result
