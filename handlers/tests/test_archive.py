"""archive_old_analyses end to end: the real daemon, the real database, the local Storage server."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.tests.fake_storage import FakeStorage
from handlers.tests.test_schema import ALICE, add_analysis
from jobrunner_handlers.archive import archive_old_analyses
from tests.support import job_row, running_daemon

NOW = datetime.now(UTC)


async def run_archive(db_url: str, conn: asyncpg.Connection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    job_id = await conn.fetchval("SELECT enqueue_job('archive_old_analyses', $1::jsonb)", json.dumps(payload or {}))
    async with running_daemon(db_url, [archive_old_analyses], burst=True):
        pass
    return dict(await job_row(conn, job_id))


async def old_month_with_analyses(conn: asyncpg.Connection) -> tuple[str, list[Any]]:
    month = date(NOW.year - 2, 3, 1)
    await conn.fetchval("SELECT partition_name FROM create_month_partition('glow_analyses', $1)", month)
    first = datetime(month.year, 3, 1, tzinfo=UTC)
    ids = [
        await add_analysis(conn, ALICE, 50 + i, created_at=first + timedelta(days=i), areas={"hydration": 40 + i})
        for i in range(3)
    ]
    return f"glow_analyses_p{month:%Y_%m}", ids


async def test_archiving_writes_verified_gzip_json_lines_then_drops_the_partition(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    # on by default: analysis months that ended more than 365 days ago
    partition, ids = await old_month_with_analyses(conn)
    last_year = await add_analysis(conn, ALICE, 60, created_at=NOW - timedelta(days=300))
    recent = await add_analysis(conn, ALICE, 77)
    job = await run_archive(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    assert json.loads(job["result"]) == {
        "retention_days": 365,
        "archived_partitions": [
            {"partition": partition, "rows": 3, "object": f"archive/glow_analyses/{partition}.jsonl.gz"}
        ],
    }
    stored = app_env.get("archive", f"glow_analyses/{partition}.jsonl.gz")
    assert stored is not None and stored.content_type == "application/gzip"
    lines = [json.loads(line) for line in gzip.decompress(stored.data).splitlines()]
    assert [line["id"] for line in lines] == [str(i) for i in ids]
    assert lines[0]["area_scores"] == {"hydration": 40}
    assert await conn.fetchval("SELECT to_regclass($1)", partition) is None
    assert set(await conn.fetchval("SELECT array_agg(id) FROM glow_analyses")) == {last_year, recent}


async def test_archiving_can_be_switched_off(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage, clean_app_env: pytest.MonkeyPatch
) -> None:
    clean_app_env.setenv("JOBRUNNER_APP_ARCHIVE_RETENTION_DAYS", "off")
    partition, _ = await old_month_with_analyses(conn)
    job = await run_archive(db_url, conn)
    assert job["status"] == "completed", job["last_error"]
    assert json.loads(job["result"]) == {"skipped": "archiving is off (JOBRUNNER_APP_ARCHIVE_RETENTION_DAYS=off)"}
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition)
    assert app_env.paths("archive") == []


async def test_an_archive_that_does_not_read_back_keeps_the_rows(
    db_url: str, conn: asyncpg.Connection, app_env: FakeStorage
) -> None:
    partition, _ = await old_month_with_analyses(conn)
    app_env.fail_with["GET"] = (503, {})
    job = await run_archive(db_url, conn)
    assert job["status"] in ("pending", "dead") and "503" in job["last_error"]
    assert await conn.fetchval("SELECT count(*) FROM glow_analyses") == 3
    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition)
