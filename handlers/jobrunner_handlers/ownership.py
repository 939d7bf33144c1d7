"""Which Storage objects an upload row may make the worker delete.

cleanup_old_data deletes what progress_photos rows name, with the service key. The schema only
lets a user write rows inside their own folder, but rows written before that, or by the admin key,
are checked again here: every object must be in a known bucket and in the row owner's folder
(`<user_id>/...`), with no `.`/`..`/empty segment, no leading `/`, no backslash, no `%` (nothing
that decodes into one of those) and no control character. The same rules as the schema's
`public.is_storage_path_of`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from jobrunner_handlers.storage import StorageRefused, check_object_path

MAX_PATH_LENGTH = 1024


@dataclass(frozen=True)
class UploadObjects:
    """The (bucket, path) objects of one upload row, or why they may not be deleted."""

    objects: list[tuple[str, str]]
    refused: str | None = None


def path_refusal(owner: UUID, path: object) -> str | None:
    """Why `path` is not an object path inside `owner`'s folder, or None when it is."""
    if not isinstance(path, str):
        return f"the path {path!r} is not a string"
    if len(path) > MAX_PATH_LENGTH:
        return f"the path is longer than {MAX_PATH_LENGTH} characters"
    try:
        check_object_path(path)
    except StorageRefused as exc:
        return str(exc)
    if "%" in path:
        return f"the path {path!r} holds a percent-encoding"
    if not path.startswith(f"{owner}/"):
        return f"the path {path!r} is not in the folder {owner}/"
    return None


def upload_objects(row: asyncpg.Record, buckets: Collection[str]) -> UploadObjects:
    """The original and its thumbnails, each checked; any object that fails refuses the whole row."""
    owner: UUID = row["user_id"]
    try:
        thumbnails = json.loads(row["thumbnails"] or "[]")
    except ValueError:
        return UploadObjects([], "thumbnails is not JSON")
    if not isinstance(thumbnails, list):
        return UploadObjects([], "thumbnails is not a list")
    objects: list[tuple[Any, Any]] = [(row["bucket"], row["storage_path"])]
    for thumb in thumbnails:
        if not isinstance(thumb, dict):
            return UploadObjects([], f"a thumbnail entry is not an object: {thumb!r}")
        objects.append((thumb.get("bucket") or row["bucket"], thumb.get("path")))
    for bucket, path in objects:
        if not isinstance(bucket, str) or bucket not in buckets:
            return UploadObjects([], f"the bucket {bucket!r} is not an upload bucket ({', '.join(sorted(buckets))})")
        refusal = path_refusal(owner, path)
        if refusal:
            return UploadObjects([], refusal)
    return UploadObjects([(str(bucket), str(path)) for bucket, path in objects])
