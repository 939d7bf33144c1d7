"""cleanup_old_data end to end: the real daemon, the real database, the local Storage server."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog

from handlers.tests.fake_storage import FakeStorage
from handlers.tests.test_schema import ALICE, BOB, add_analysis
from jobrunner_handlers.cleanup import cleanup_old_data
from tests.support import job_row, running_daemon

NOW = datetime.now(UTC)


async def add_upload(conn: asyncpg.Connection, storage: FakeStorage, name: str, age_days: int) -> None:
    path = f"{ALICE}/{name}.jpg"
    thumb = f"{ALICE}/{name}.thumb_256.webp"
    storage.put("user-uploads", path, b"\xff\xd8\xff original")
    storage.put("user-uploads", thumb, b"RIFF thumbnail", "image/webp")
    await conn.execute(
        "INSERT INTO progress_photos (user_id, bucket, storage_path, thumbnails, created_at) "
        "VALUES ($1, 'user-uploads', $2, $3::jsonb, $4)",
        ALICE,
        path,
        json.dumps([{"size": 256, "bucket": "user-uploads", "path": thumb}]),
        NOW - timedelta(days=age_days),
    )


async def run_cleanup(db_url: str, conn: asyncpg.Connection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id = await conn.fetchval("SELECT enqueue_job('cleanup_old_data', $1::jsonb)", json.dumps(payload or {}))
    async with running_daemon(db_url, [cleanup_old_data], burst=True):
        pass
    return dict(await job_row(conn, job_id))


async def test_cleanup_removes_what_is_past_retention_and_reports_it(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    for index in range(5):
        await add_upload(conn, app_env, f"old{index}", age_days=91 + index)
    await add_upload(conn, app_env, "recent", age_days=89)
    await conn.execute(
        "INSERT INTO ai_response_cache (cache_key, response, expires_at) VALUES "
        "('gone', '{}', now() - interval '1 second'), ('kept', '{}', now() + interval '1 hour')"
    )
    old_month = (NOW.replace(day=1) - timedelta(days=70)).date()
    await conn.fetchval("SELECT create_month_partition('api_metrics', $1)", old_month)
    clean_app_env.setenv("JOBRUNNER_APP_CLEANUP_BATCH_SIZE", "2")  # bounded batches: 5 old uploads take three
    job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    result = json.loads(job["result"])
    assert result["uploads"] == {"rows": 5, "objects": 10, "skipped_rows": 0, "more_remaining": False}
    assert result["expired_cache_rows"] == 1
    assert result["metrics"]["dropped_partitions"] == [f"api_metrics_p{old_month:%Y_%m}"]
    # finished jobs are the daemon's pruner's (JOBRUNNER_RETENTION_SECONDS), not the app's
    assert "finished_jobs_pruned" not in result
    assert result["archived_partitions"] == []  # archiving is off by default
    assert app_env.paths("user-uploads") == [f"{ALICE}/recent.jpg", f"{ALICE}/recent.thumb_256.webp"]
    assert await conn.fetchval("SELECT array_agg(storage_path) FROM progress_photos") == [f"{ALICE}/recent.jpg"]
    assert await conn.fetchval("SELECT array_agg(cache_key) FROM ai_response_cache") == ["kept"]
    # the months ahead exist (created by the migration, kept by every run)
    ahead = (NOW.replace(day=1) + timedelta(days=40)).strftime("%Y_%m")
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.api_metrics_p{ahead}")


async def test_a_storage_outage_keeps_the_rows_and_retries(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    await add_upload(conn, app_env, "old", age_days=100)
    app_env.fail_with["DELETE"] = (503, {})
    job = await run_cleanup(db_url, conn, {"max_batches": 1})
    assert job["status"] in ("pending", "dead") and "Storage answered 503" in job["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM progress_photos") == 1


async def test_one_cleanup_at_a_time(db_url: str, conn: asyncpg.Connection, app_env: FakeStorage) -> None:
    holder = await asyncpg.connect(db_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock(hashtext('jobrunner_app:cleanup_old_data'))")
        job = await run_cleanup(db_url, conn)
    finally:
        await holder.close()
    assert json.loads(job["result"]) == {"skipped": "another cleanup_old_data job is running"}


async def test_archiving_writes_verified_gzip_json_lines_then_drops_the_partition(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_ARCHIVE_RETENTION_DAYS", "365")
    month = date(NOW.year - 2, 3, 1)
    await conn.fetchval("SELECT create_month_partition('glow_analyses', $1)", month)
    first = datetime(month.year, 3, 1, tzinfo=UTC)
    ids = [
        await add_analysis(conn, ALICE, 50 + i, created_at=first + timedelta(days=i), areas={"hydration": 40 + i})
        for i in range(3)
    ]
    recent = await add_analysis(conn, ALICE, 77)
    job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    partition = f"glow_analyses_p{month:%Y_%m}"
    assert json.loads(job["result"])["archived_partitions"] == [
        {"partition": partition, "rows": 3, "object": f"archive/glow_analyses/{partition}.jsonl.gz"}
    ]
    stored = app_env.get("archive", f"glow_analyses/{partition}.jsonl.gz")
    assert stored is not None and stored.content_type == "application/gzip"
    lines = [json.loads(line) for line in gzip.decompress(stored.data).splitlines()]
    assert [line["id"] for line in lines] == [str(i) for i in ids]
    assert lines[0]["area_scores"] == {"hydration": 40}
    assert await conn.fetchval("SELECT to_regclass($1)", partition) is None
    assert await conn.fetchval("SELECT array_agg(id) FROM glow_analyses") == [recent]


async def test_cleanup_deletes_only_objects_in_the_rows_owners_folder_of_a_known_bucket(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    """Rows written before the schema checked them (or by the admin key) that name another user's
    objects, another bucket or a path that climbs out: skipped and logged, never deleted."""
    bob_files = [f"{BOB}/selfie.jpg", f"{BOB}/selfie.thumb_256.webp"]
    for path in bob_files:
        app_env.put("user-uploads", path, b"bob's")
    app_env.put("archive", f"{ALICE}/a.jpg", b"an archive")
    app_env.put("archive", "glow_analyses/glow_analyses_p2024_01.jsonl.gz", b"an archive")

    def thumbs(*objects: tuple[str, str]) -> str:
        return json.dumps([{"size": 256, "bucket": b, "path": p} for b, p in objects])

    forged = [
        ("user-uploads", f"{BOB}/selfie.jpg", "[]"),
        ("user-uploads", f"{ALICE}/../{BOB}/selfie.jpg", "[]"),
        ("user-uploads", f"{ALICE}/%2e%2e/{BOB}/selfie.jpg", "[]"),
        ("user-uploads", f"/{BOB}/selfie.jpg", "[]"),
        ("archive", f"{ALICE}/a.jpg", "[]"),
        ("user-uploads", f"{ALICE}/mine.jpg", thumbs(("user-uploads", f"{BOB}/selfie.thumb_256.webp"))),
        ("user-uploads", f"{ALICE}/mine2.jpg", thumbs(("archive", "glow_analyses/glow_analyses_p2024_01.jsonl.gz"))),
        ("user-uploads", f"{ALICE}/mine3.jpg", json.dumps([{"path": f"{ALICE}/x/../../{BOB}/selfie.jpg"}])),
    ]
    for index, (bucket, path, thumbnails) in enumerate(forged):
        await conn.execute(
            "INSERT INTO progress_photos (user_id, bucket, storage_path, thumbnails, created_at) "
            "VALUES ($1, $2, $3, $4::jsonb, $5)",
            ALICE,
            bucket,
            path,
            thumbnails,
            NOW - timedelta(days=200 + index),
        )
    await add_upload(conn, app_env, "old", age_days=95)  # Alice's own, after all the forged ones
    clean_app_env.setenv("JOBRUNNER_APP_CLEANUP_BATCH_SIZE", "3")  # skipped rows must not stall the batches
    with structlog.testing.capture_logs() as logs:
        job = await run_cleanup(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    assert json.loads(job["result"])["uploads"] == {
        "rows": 1,
        "objects": 2,
        "skipped_rows": len(forged),
        "more_remaining": False,
    }
    assert app_env.paths("user-uploads") == sorted(bob_files)
    assert app_env.paths("archive") == sorted([f"{ALICE}/a.jpg", "glow_analyses/glow_analyses_p2024_01.jsonl.gz"])
    assert await conn.fetchval("SELECT count(*) FROM progress_photos") == len(forged)
    skipped = [
        entry for entry in logs if entry["event"] == "upload row skipped: it names objects outside its owner's folder"
    ]
    assert len(skipped) == len(forged)
    assert all(entry["log_level"] == "warning" and entry["user_id"] == str(ALICE) for entry in skipped)
