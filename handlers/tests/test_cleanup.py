"""cleanup_old_data end to end: the real daemon, the real database, the local Storage server.

It deletes unused uploads: objects in a user's folder of the uploads (or thumbnails) bucket, older
than 90 days, that none of that user's progress photos, analyses or avatar names. Users' progress
photos are kept, whatever their age."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.tests.fake_storage import FakeStorage
from handlers.tests.test_schema import ALICE, BOB
from jobrunner_handlers import unused_uploads
from jobrunner_handlers.cleanup import cleanup_old_data
from tests.support import job_row, running_daemon

NOW = datetime.now(UTC)
CAROL = uuid.UUID("00000000-0000-4000-8000-0000000ca201")


def days_ago(days: int) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def put(storage: FakeStorage, path: str, age_days: int, bucket: str = "user-uploads", **options: Any) -> str:
    storage.put(bucket, path, b"\xff\xd8\xff image", created_at=days_ago(age_days), **options)
    return path


async def add_photo(conn: asyncpg.Connection, storage: FakeStorage, user: uuid.UUID, name: str, age: int) -> str:
    """A progress photo: its row and its objects, all `age` days old."""
    path = put(storage, f"{user}/{name}.jpg", age)
    thumb = put(storage, f"{user}/{name}.thumb_256.webp", age)
    await conn.execute(
        "INSERT INTO progress_photos (user_id, bucket, storage_path, thumbnails, created_at) "
        "VALUES ($1, 'user-uploads', $2, $3::jsonb, $4)",
        user,
        path,
        json.dumps([{"size": 256, "bucket": "user-uploads", "path": thumb}]),
        NOW - timedelta(days=age),
    )
    return path


async def add_analysis_of(conn: asyncpg.Connection, user: uuid.UUID, image: str, table: str = "glow_analyses") -> None:
    await conn.execute(
        f"INSERT INTO {table} (user_id, image_path, overall_score, created_at) VALUES ($1, $2, 70, $3)",
        user,
        image,
        NOW - timedelta(days=120),
    )


async def run_cleanup(db_url: str, conn: asyncpg.Connection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id = await conn.fetchval("SELECT enqueue_job('cleanup_old_data', $1::jsonb)", json.dumps(payload or {}))
    async with running_daemon(db_url, [cleanup_old_data], burst=True):
        pass
    return dict(await job_row(conn, job_id))


async def scenario(conn: asyncpg.Connection, storage: FakeStorage) -> dict[str, list[str]]:
    """Every kind of object the sweep meets; which it must delete and which keep."""
    kept = [
        # a progress photo and its thumbnail, years old: a user's history is the product
        await add_photo(conn, storage, ALICE, "day-1", age=800),
        f"{ALICE}/day-1.thumb_256.webp",
        # images analyses name: by path, by public URL (percent-encoded), by signed URL
        put(storage, f"{ALICE}/analysed.jpg", 130),
        put(storage, f"{ALICE}/outfit 2.jpg", 130),
        put(storage, f"{BOB}/signed.png", 130),
        # an avatar chosen among the uploads (an image transformation URL)
        put(storage, f"{ALICE}/me.jpg", 400),
        # unused, but not old: created 30 days ago; created long ago but replaced 10 days ago
        put(storage, f"{ALICE}/new.jpg", 30),
        put(storage, f"{BOB}/replaced.jpg", 200, updated_at=days_ago(10)),
    ]
    await add_analysis_of(conn, ALICE, f"{ALICE}/analysed.jpg")
    await add_analysis_of(
        conn,
        ALICE,
        f"https://proj.supabase.co/storage/v1/object/public/user-uploads/{ALICE}/outfit%202.jpg",
        "style_analyses",
    )
    await add_analysis_of(
        conn, BOB, f"https://proj.supabase.co/storage/v1/object/sign/user-uploads/{BOB}/signed.png?token=t"
    )
    await conn.execute(
        "INSERT INTO profiles (id, avatar_url) VALUES ($1, $2)",
        ALICE,
        f"https://proj.supabase.co/storage/v1/render/image/public/user-uploads/{ALICE}/me.jpg?width=128",
    )
    unused = [
        put(storage, f"{ALICE}/orphan.jpg", 91),
        put(storage, f"{ALICE}/2024/05/old.jpg", 150),  # in a subfolder
        # a photo its user deleted (the row is gone): the original and its thumbnail
        put(storage, f"{BOB}/gone.jpg", 300),
        put(storage, f"{BOB}/gone.thumb_256.webp", 300),
        # an account with no row at all
        put(storage, f"{CAROL}/left.jpg", 500),
    ]
    return {"kept": kept, "unused": unused}


async def test_a_progress_photo_is_kept_however_old(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    path = await add_photo(conn, app_env, ALICE, "first-day", age=1000)
    job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    assert await conn.fetchval("SELECT storage_path FROM progress_photos") == path
    assert app_env.paths("user-uploads") == [path, f"{ALICE}/first-day.thumb_256.webp"]


async def test_cleanup_deletes_exactly_the_unused_uploads_and_keeps_progress_photos(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    objects = await scenario(conn, app_env)
    photos_before = await conn.fetch("SELECT * FROM progress_photos ORDER BY id")
    job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    assert app_env.paths("user-uploads") == sorted(objects["kept"])
    # no row is deleted: progress photos stay, thumbnails and all
    assert await conn.fetch("SELECT * FROM progress_photos ORDER BY id") == photos_before
    assert (
        await conn.fetchval("SELECT count(*) FROM glow_analyses")
        + await conn.fetchval("SELECT count(*) FROM style_analyses")
        == 3
    )
    result = json.loads(job["result"])
    assert result["dry_run"] is False
    [uploads] = result["buckets"]
    assert uploads["bucket"] == "user-uploads" and uploads["complete"] is True
    assert uploads["folders"] == 3
    assert (uploads["deleted"], uploads["kept_referenced"], uploads["kept_recent"]) == (5, 6, 2)
    assert uploads["objects"] == len(objects["kept"]) + len(objects["unused"])


async def test_a_dry_run_reports_what_it_would_delete_and_deletes_nothing(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    objects = await scenario(conn, app_env)
    everything = app_env.paths("user-uploads")
    job = await run_cleanup(db_url, conn, {"dry_run": True})
    assert job["status"] == "completed", job["last_error"]
    result = json.loads(job["result"])
    assert result["dry_run"] is True
    [uploads] = result["buckets"]
    assert sorted(uploads["would_delete"]) == sorted(f"user-uploads/{p}" for p in objects["unused"])
    assert uploads["deleted"] == 0 and uploads["unused"] == len(objects["unused"])
    assert app_env.paths("user-uploads") == everything
    assert not [r for r in app_env.requests if r[0] == "DELETE"]
    # a dry run leaves the sweep's position where it was
    assert await conn.fetchval("SELECT count(*) FROM storage_sweep_positions") == 0


async def test_nothing_outside_a_users_folder_of_a_known_bucket_is_deleted(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_THUMBNAILS_BUCKET", "thumbs")
    untouchable = {
        "user-uploads": [
            put(app_env, "loose.jpg", 400),  # the bucket's root
            put(app_env, "public/banner.jpg", 400),  # a folder that is not a user id
            put(app_env, f"{str(ALICE).upper()}/x.jpg", 400),  # not the id's canonical spelling
            put(app_env, f"{ALICE}-old/x.jpg", 400),
            put(app_env, f"{ALICE}/a%2e%2e.jpg", 400),  # names the rules refuse inside a folder
            put(app_env, f"{ALICE}/..\\{BOB}\\x.jpg", 400),
        ],
        "archive": [put(app_env, f"{ALICE}/a.jpg", 400, bucket="archive")],
        "avatars": [put(app_env, f"{ALICE}/avatar.jpg", 400, bucket="avatars")],
        "thumbs": [put(app_env, f"{ALICE}/kept.thumb_256.webp", 400, bucket="thumbs")],
    }
    await conn.execute(
        "INSERT INTO progress_photos (user_id, bucket, storage_path, thumbnails)"
        " VALUES ($1, 'user-uploads', $2, $3::jsonb)",
        ALICE,
        f"{ALICE}/kept.jpg",
        json.dumps([{"size": 256, "bucket": "thumbs", "path": f"{ALICE}/kept.thumb_256.webp"}]),
    )
    orphans = {
        "user-uploads": put(app_env, f"{ALICE}/orphan.jpg", 400),
        "thumbs": put(app_env, f"{BOB}/orphan.thumb_256.webp", 400, bucket="thumbs"),
    }
    job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    for bucket, paths in untouchable.items():
        assert app_env.paths(bucket) == sorted(paths), bucket
    assert orphans["user-uploads"] not in app_env.paths("user-uploads")
    assert orphans["thumbs"] not in app_env.paths("thumbs")
    result = json.loads(job["result"])
    assert [b["bucket"] for b in result["buckets"]] == ["thumbs", "user-uploads"]
    uploads = result["buckets"][1]
    assert uploads["refused"] == 2 and uploads["ignored_root_entries"] == 4
    # the only bucket any request went to besides the two swept ones: none
    touched = {path.split("/")[4] if "/list/" not in path else path.split("/")[5] for _, path in app_env.requests}
    assert touched == {"user-uploads", "thumbs"}


async def test_listing_is_paginated_bounded_and_resumed_by_the_next_run(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    users = sorted(str(uuid.UUID(int=n, version=4)) for n in range(1, 6))
    for user in users:
        for index in range(3):
            put(app_env, f"{user}/{index}.jpg", 100)
    clean_app_env.setenv("JOBRUNNER_APP_CLEANUP_LIST_PAGE_SIZE", "2")
    # the root: 3 pages (2 + 2 + 1 folders); each folder: 2 pages (2 + 1 objects)
    job = await run_cleanup(db_url, conn, {"max_list_requests": 9})
    assert job["status"] == "completed", job["last_error"]
    [first] = json.loads(job["result"])["buckets"]
    assert (first["folders"], first["deleted"], first["list_requests"], first["complete"]) == (3, 9, 9, False)
    assert first["next_after"] == users[2]
    assert all(p.startswith(tuple(users[3:])) for p in app_env.paths("user-uploads"))
    # every list request: the real endpoint, a prefix, the page size, consecutive offsets
    queries = list(app_env.list_queries)
    assert len(queries) == 9 and {bucket for bucket, _ in queries} == {"user-uploads"}
    assert [(q["prefix"], q["offset"], q["limit"]) for _, q in queries[:5]] == [
        ("", 0, 2),
        ("", 2, 2),
        ("", 4, 2),
        (f"{users[0]}/", 0, 2),
        (f"{users[0]}/", 2, 2),
    ]
    position = "SELECT after_folder FROM storage_sweep_positions WHERE bucket = 'user-uploads'"
    assert await conn.fetchval(position) == users[2]

    app_env.list_queries.clear()
    job = await run_cleanup(db_url, conn, {"max_list_requests": 9})
    [second] = json.loads(job["result"])["buckets"]
    # the first three folders went with their objects: the root is 2 entries, then an empty page
    assert (second["folders"], second["deleted"], second["list_requests"], second["complete"]) == (2, 6, 6, True)
    assert app_env.paths("user-uploads") == []
    assert not any(q["prefix"].startswith(tuple(users[:3])) for _, q in app_env.list_queries)
    # the sweep went round: the next run starts again from the first folder
    assert await conn.fetchval("SELECT after_folder FROM storage_sweep_positions WHERE bucket = 'user-uploads'") == ""


async def test_a_huge_folder_is_swept_in_parts(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    paths = [put(app_env, f"{ALICE}/{index}.jpg", 100) for index in range(5)]
    clean_app_env.setenv("JOBRUNNER_APP_CLEANUP_LIST_PAGE_SIZE", "2")
    clean_app_env.setattr(unused_uploads, "MAX_FOLDER_OBJECTS", 3)
    job = await run_cleanup(db_url, conn)
    [first] = json.loads(job["result"])["buckets"]
    # two pages (4 objects) reach the cap: those are swept, the folder counts as done this round
    assert (first["objects"], first["deleted"], first["truncated_folders"], first["complete"]) == (4, 4, 1, True)
    assert app_env.paths("user-uploads") == [paths[4]]
    job = await run_cleanup(db_url, conn)
    assert json.loads(job["result"])["buckets"][0]["deleted"] == 1
    assert app_env.paths("user-uploads") == []


async def test_a_storage_outage_fails_the_run_and_the_next_one_finishes(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    put(app_env, f"{ALICE}/orphan.jpg", 100)
    app_env.fail_with["DELETE"] = (503, {})
    job = await run_cleanup(db_url, conn)
    assert job["status"] in ("pending", "dead") and "Storage answered 503" in job["last_error"]
    assert app_env.paths("user-uploads") == [f"{ALICE}/orphan.jpg"]
    del app_env.fail_with["DELETE"]
    job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    assert app_env.paths("user-uploads") == []


async def test_one_cleanup_at_a_time(db_url: str, conn: asyncpg.Connection, app_env: FakeStorage) -> None:
    holder = await asyncpg.connect(db_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock(hashtext('jobrunner_app:cleanup_old_data'))")
        job = await run_cleanup(db_url, conn)
    finally:
        await holder.close()
    assert json.loads(job["result"]) == {"skipped": "another cleanup_old_data job is running"}
