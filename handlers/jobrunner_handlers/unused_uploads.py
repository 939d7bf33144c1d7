"""Unused uploads: which Storage objects cleanup_old_data deletes, and the sweep that finds them.

An object is *unused* when all of these hold:

1. it is in the uploads bucket or the thumbnails bucket (JOBRUNNER_APP_UPLOADS_BUCKET,
   JOBRUNNER_APP_THUMBNAILS_BUCKET), inside a top-level folder named by a user id in its canonical
   (lowercase) spelling, and its path passes the rules of `public.is_storage_path_of`
   (jobrunner_handlers.ownership.path_refusal);
2. Storage says it was created, and last replaced, more than `unused_upload_days` (90) days ago;
3. no row of that user names it: a progress photo (its storage_path, or any of its thumbnails'
   paths), a glow or style analysis (image_path), the profile (avatar_url). A row names an object
   by its path or by a Storage URL (public, authenticated, signed or image-transformation), and
   names compare by the object's path in its bucket: a name in either bucket keeps the path in
   both.

Only the folder owner's rows count: the schema lets a user's rows name objects in their own folder
only (progress_photos_own; analyze_image refuses any other), and reading them walks each table's
user_id index. Everything else -- the buckets' roots, folders that are not a user id, other
buckets -- is never deleted.

The sweep lists through Storage's list endpoint (`POST /storage/v1/object/list/{bucket}`, a prefix,
a limit, an offset), a page at a time, within a budget of list requests per run. It lists a
bucket's root first, then one user folder at a time after the position the previous run stopped at
(table storage_sweep_positions): a folder is listed completely (subfolders included), then the
owner's rows are read, then its unused objects are deleted, so deletions never shift the offsets of
a listing under way. A dry run lists and decides the same, deletes nothing and keeps the position.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import asyncpg
import structlog

from jobrunner_handlers.ownership import path_refusal
from jobrunner_handlers.queries import sql
from jobrunner_handlers.storage import StorageClient

# the paths under which a Storage URL names an object, after an optional base path
_URL_OBJECT_PREFIXES = (
    "/storage/v1/object/public/",
    "/storage/v1/object/authenticated/",
    "/storage/v1/object/sign/",
    "/storage/v1/render/image/public/",
    "/storage/v1/render/image/authenticated/",
    "/storage/v1/render/image/sign/",
    "/storage/v1/object/",
)
# at most this many paths per bucket in a dry run's report
MAX_REPORTED = 1000
# at most this many objects of one user folder are listed (and held in memory) per run
MAX_FOLDER_OBJECTS = 100_000


class Listing(Enum):
    COMPLETE = "complete"
    OUT_OF_BUDGET = "out of budget"
    TRUNCATED = "truncated"


def referenced_path(reference: str) -> str | None:
    """The object path (inside its bucket) a stored name refers to: the name itself when it is a
    path, the path in it when it is a Storage URL (any host), None when it is neither."""
    if "://" not in reference:
        return reference
    path = unquote(urlsplit(reference).path)
    for prefix in _URL_OBJECT_PREFIXES:
        start = path.find(prefix)
        if start >= 0:
            _bucket, _, key = path[start + len(prefix) :].partition("/")
            return key or None
    return None


def user_folder_owner(name: str) -> UUID | None:
    """The user whose folder this top-level name is, when it is a user id spelled canonically."""
    try:
        owner = UUID(name)
    except ValueError:
        return None
    return owner if str(owner) == name else None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ListedObject:
    path: str
    created_at: datetime | None
    updated_at: datetime | None

    def older_than(self, cutoff: datetime) -> bool:
        """Created and last replaced before the cutoff; an object without dates is never old."""
        if self.created_at is None or self.created_at >= cutoff:
            return False
        return self.updated_at is None or self.updated_at < cutoff


class ListBudget:
    """The list requests a run may still make."""

    def __init__(self, requests: int) -> None:
        self.left = requests

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class BucketSweep:
    """What a run did in one bucket."""

    bucket: str
    folders: int = 0
    objects: int = 0
    unused: int = 0
    deleted: int = 0
    kept_referenced: int = 0
    kept_recent: int = 0
    refused: int = 0
    ignored_root_entries: int = 0
    truncated_folders: int = 0
    list_requests: int = 0
    complete: bool = False
    next_after: str = ""
    would_delete: list[str] = field(default_factory=list)

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        report: dict[str, Any] = {
            name: value for name, value in vars(self).items() if name != "would_delete" or dry_run
        }
        return report


@dataclass(frozen=True)
class SweepOptions:
    unused_days: int
    page_size: int
    delete_batch: int
    dry_run: bool


class Sweep:
    """One cleanup_old_data run over the buckets, sharing one budget of list requests."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        storage: StorageClient,
        options: SweepOptions,
        log: structlog.typing.FilteringBoundLogger,
        now: datetime | None = None,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.options = options
        self.log = log
        self.cutoff = (now or datetime.now(UTC)) - timedelta(days=options.unused_days)

    async def run(self, buckets: Sequence[str], max_list_requests: int) -> list[BucketSweep]:
        reports = []
        for index, bucket in enumerate(buckets):
            # an even share of what is left, so that a large first bucket cannot starve the others
            budget = ListBudget(max(1, max_list_requests // (len(buckets) - index)))
            report = await self.sweep_bucket(bucket, budget)
            max_list_requests -= report.list_requests
            reports.append(report)
        return reports

    async def _list(
        self, bucket: str, prefix: str, budget: ListBudget, report: BucketSweep, room: int
    ) -> tuple[list[dict[str, Any]], Listing]:
        """The entries directly under `prefix`, a page at a time, until there are none left, the
        budget runs out, or `room` entries are listed."""
        page_size = self.options.page_size
        entries: list[dict[str, Any]] = []
        offset = 0
        while True:
            if len(entries) >= room:
                return entries, Listing.TRUNCATED
            if not budget.take():
                return entries, Listing.OUT_OF_BUDGET
            report.list_requests += 1
            page = await self.storage.list_objects(bucket, prefix, limit=page_size, offset=offset)
            offset += len(page)
            entries.extend(item for item in page if isinstance(item, dict))
            if len(page) < page_size:
                return entries, Listing.COMPLETE

    async def _list_folder(
        self, bucket: str, folder: str, budget: ListBudget, report: BucketSweep
    ) -> tuple[list[ListedObject], Listing]:
        """The objects in a user's folder, subfolders included: all of them, or as many as the
        budget or MAX_FOLDER_OBJECTS allowed."""
        objects: list[ListedObject] = []
        prefixes = [f"{folder}/"]
        while prefixes:
            prefix = prefixes.pop()
            entries, listing = await self._list(bucket, prefix, budget, report, MAX_FOLDER_OBJECTS - len(objects))
            for entry in entries:
                name = entry.get("name")
                if not isinstance(name, str) or not name:
                    continue
                if entry.get("id") is None:  # a folder: Storage lists it with no id
                    prefixes.append(f"{prefix}{name}/")
                else:
                    created, updated = _timestamp(entry.get("created_at")), _timestamp(entry.get("updated_at"))
                    objects.append(ListedObject(prefix + name, created, updated))
            if listing is not Listing.COMPLETE:
                return objects, listing
            if len(objects) >= MAX_FOLDER_OBJECTS and prefixes:
                return objects, Listing.TRUNCATED
        return objects, Listing.COMPLETE

    async def _referenced(self, owner: UUID) -> set[str]:
        rows = await self.pool.fetch(sql("storage_references_of_user"), owner)
        return {path for row in rows if row["ref"] and (path := referenced_path(row["ref"])) is not None}

    async def _delete(self, bucket: str, owner: UUID, paths: list[str], report: BucketSweep) -> None:
        for start in range(0, len(paths), self.options.delete_batch):
            batch = paths[start : start + self.options.delete_batch]
            # the last line of defence: only paths inside the owner's folder, by the schema's rules
            outside = [path for path in batch if path_refusal(owner, path) is not None]
            if outside:
                raise RuntimeError(f"refusing to delete {outside[:3]} in {bucket}: not inside {owner}/")
            report.deleted += len(await self.storage.remove(bucket, batch))
            self.log.info("unused uploads deleted", bucket=bucket, user_id=str(owner), objects=len(batch))

    async def _sweep_folder(self, bucket: str, folder: str, objects: list[ListedObject], report: BucketSweep) -> None:
        owner = UUID(folder)
        referenced = await self._referenced(owner)
        unused: list[str] = []
        for listed in objects:
            refusal = path_refusal(owner, listed.path)
            if refusal is not None:
                report.refused += 1
                self.log.warning("object kept: its path breaks the folder rules", bucket=bucket, reason=refusal)
            elif not listed.older_than(self.cutoff):
                report.kept_recent += 1
            elif listed.path in referenced:
                report.kept_referenced += 1
            else:
                unused.append(listed.path)
        report.folders += 1
        report.objects += len(objects)
        report.unused += len(unused)
        if self.options.dry_run:
            room = MAX_REPORTED - len(report.would_delete)
            report.would_delete.extend(f"{bucket}/{path}" for path in unused[: max(room, 0)])
            if unused:
                self.log.info("unused uploads found (dry run)", bucket=bucket, user_id=folder, objects=len(unused))
        elif unused:
            await self._delete(bucket, owner, unused, report)

    async def sweep_bucket(self, bucket: str, budget: ListBudget) -> BucketSweep:
        report = BucketSweep(bucket)
        after = await self.pool.fetchval(sql("sweep_position"), bucket) or ""
        report.next_after = after
        root, listing = await self._list(bucket, "", budget, report, room=sys.maxsize)
        if listing is not Listing.COMPLETE:
            return report
        folders = []
        for entry in root:
            name = entry.get("name")
            if entry.get("id") is None and isinstance(name, str) and user_folder_owner(name) is not None:
                folders.append(name)
            else:
                report.ignored_root_entries += 1
        del root
        for folder in sorted(f for f in folders if f > after):
            objects, listing = await self._list_folder(bucket, folder, budget, report)
            if listing is Listing.OUT_OF_BUDGET:
                break  # the next run lists this folder again, from its start
            if listing is Listing.TRUNCATED:
                # each listed object is judged on its own, so the listed part is swept; the rest
                # waits for the next round of the sweep
                report.truncated_folders += 1
                self.log.warning(
                    "folder swept in part: more objects than one run lists in a folder",
                    bucket=bucket,
                    user_id=folder,
                    listed=len(objects),
                )
            await self._sweep_folder(bucket, folder, objects, report)
            report.next_after = folder
        else:
            report.complete = True
            report.next_after = ""
        if not self.options.dry_run:
            await self.pool.execute(sql("save_sweep_position"), bucket, report.next_after)
        return report
