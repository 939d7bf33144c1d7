"""archive_old_analyses: analysis months past the retention, written to the archive bucket, then dropped.

Monthly (the 1st at 04:00 UTC). Each month partition of `glow_analyses` and `style_analyses` that
ended more than `archive_retention_days` (365) days ago is written to the archive bucket as gzip
JSON lines (`<table>/<partition>.jsonl.gz`, one row per line in (created_at, id) order), downloaded
again and compared, and only then detached and dropped. A failed check keeps the rows; the retry
rewrites the same object. JOBRUNNER_APP_ARCHIVE_RETENTION_DAYS=off keeps every analysis.

Rows of an archived month that arrive later land in the default partition and stay there (the
partition upkeep does not recreate months older than a table's oldest partition).
"""

from __future__ import annotations

import gzip
import hashlib
import io
from typing import Any

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, Field

from jobrunner import JobContext, handler
from jobrunner_handlers.queries import sql
from jobrunner_handlers.run_lock import one_at_a_time
from jobrunner_handlers.settings import app_settings, storage_startup_check
from jobrunner_handlers.storage import StorageClient

ARCHIVE_PAGE = 1_000


class ArchivePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # default: the plugin's setting
    retention_days: int | None = Field(default=None, ge=30)


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
    pool: asyncpg.Pool,
    storage: StorageClient,
    bucket: str,
    retention_days: int,
    log: structlog.typing.FilteringBoundLogger,
) -> list[dict[str, Any]]:
    archived: list[dict[str, Any]] = []
    for part in await pool.fetch(sql("archivable_partitions"), retention_days):
        blob, count = await partition_as_jsonl_gz(pool, part["partition"])
        table = part["parent"].split(".")[-1]
        path = f"{table}/{part['partition'].split('.')[-1]}.jsonl.gz"
        # upsert: a retry after a failed verification rewrites the same content
        await storage.upload(bucket, path, blob, "application/gzip", upsert=True)
        stored = await storage.download(bucket, path, content_types=None, max_bytes=len(blob) + 1)
        if hashlib.sha256(stored.data).digest() != hashlib.sha256(blob).digest():
            raise RuntimeError(f"archive {bucket}/{path} does not read back as written; kept the rows")
        if len(gzip.decompress(stored.data).splitlines()) != count:
            raise RuntimeError(f"archive {bucket}/{path} has the wrong number of rows; kept the rows")
        await pool.execute(sql("drop_month_partition"), part["parent"], part["partition"])
        log.info("partition archived and dropped", partition=part["partition"], rows=count, object=path)
        archived.append({"partition": part["partition"], "rows": count, "object": f"{bucket}/{path}"})
    return archived


@handler("archive_old_analyses", payload_model=ArchivePayload, timeout=3600, startup_check=storage_startup_check)
async def archive_old_analyses(ctx: JobContext[ArchivePayload]) -> dict[str, Any]:
    settings = app_settings()
    retention = ctx.payload.retention_days or settings.archive_retention_days
    if retention is None:
        return {"skipped": "archiving is off (JOBRUNNER_APP_ARCHIVE_RETENTION_DAYS=off)"}
    settings.require_storage()
    async with one_at_a_time(ctx.pool, "archive_old_analyses") as held:
        if not held:
            return {"skipped": "another archive_old_analyses job is running"}
        async with StorageClient.from_settings(settings) as storage:
            archived = await archive_partitions(ctx.pool, storage, settings.archive_bucket, retention, ctx.log)
    return {"retention_days": retention, "archived_partitions": archived}
