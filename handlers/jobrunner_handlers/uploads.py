"""process_upload: WebP thumbnails for a new upload, stored next to the original and recorded."""

from __future__ import annotations

import json
import posixpath
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from jobrunner import JobContext, PermanentError, handler
from jobrunner_handlers.deferred_import import import_off_loop
from jobrunner_handlers.queries import sql
from jobrunner_handlers.settings import app_settings, storage_startup_check
from jobrunner_handlers.storage import StorageClient, check_object_path


class UploadPayload(BaseModel):
    user_id: UUID
    # the object's path in the uploads bucket; by the app's Storage policy it starts with the user's id
    path: str = Field(min_length=1, max_length=1024)


def thumbnail_path(original: str, size: int) -> str:
    """`u/photo.jpg` -> `u/photo.thumb_256.webp`: next to the original."""
    directory, name = posixpath.split(original)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return posixpath.join(directory, f"{stem}.thumb_{size}.webp")


@handler("process_upload", payload_model=UploadPayload, timeout=120, startup_check=storage_startup_check)
async def process_upload(ctx: JobContext[UploadPayload]) -> dict[str, Any]:
    # Pillow and its decoders load with the first upload, off the event loop (deferred_import)
    await import_off_loop("jobrunner_handlers.thumbnails")
    from jobrunner_handlers.thumbnails import make_thumbnails_in_budget

    settings = app_settings()
    settings.require_storage()
    user_id, path = ctx.payload.user_id, check_object_path(ctx.payload.path)
    if path.split("/", 1)[0] != str(user_id):
        raise PermanentError(f"upload path {path!r} is not in the user's folder {user_id}/")
    bucket = settings.uploads_bucket
    thumbnails_bucket = settings.thumbnails_bucket or bucket
    async with StorageClient.from_settings(settings) as storage:
        original = await storage.download(bucket, path)
        # decoding is CPU work: in the daemon's blocking threads, off the event loop
        summary = await make_thumbnails_in_budget(
            ctx.run_in_thread,
            original.data,
            settings.thumbnail_sizes,
            settings.max_image_pixels,
            settings.image_concurrency,
        )
        recorded: list[dict[str, Any]] = []
        for thumb in summary.thumbnails:
            # upsert: a retried attempt overwrites what an earlier one stored
            target = thumbnail_path(path, thumb.size)
            await storage.upload(thumbnails_bucket, target, thumb.data, "image/webp", upsert=True)
            recorded.append(
                {
                    "size": thumb.size,
                    "bucket": thumbnails_bucket,
                    "path": target,
                    "width": thumb.width,
                    "height": thumb.height,
                    "bytes": len(thumb.data),
                }
            )
    record = (original.content_type, len(original.data), summary.width, summary.height, json.dumps(recorded))
    async with ctx.transaction() as conn:
        await conn.execute(sql("user_lock"), f"upload:{bucket}/{path}")
        photo_id = await conn.fetchval(sql("update_upload_record"), user_id, bucket, path, *record)
        if photo_id is None:
            photo_id = await conn.fetchval(sql("insert_upload_record"), user_id, bucket, path, *record)
    ctx.log.info("upload processed", path=path, thumbnails=len(recorded), width=summary.width, height=summary.height)
    return {
        "photo_id": str(photo_id),
        "format": summary.format,
        "width": summary.width,
        "height": summary.height,
        "thumbnails": recorded,
    }
