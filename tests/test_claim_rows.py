"""Every claim query returns the columns Job.from_claim_row expects, in its field order: the
job built from a claimed row has each value where it belongs."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg
import pytest

from jobrunner import AsyncClient, GlobalLimits
from jobrunner.job import Job
from jobrunner.store import JobStore

QUEUE = "rows"


async def claim(store: JobStore, path: str) -> list[Job]:
    if path == "fast":
        return await store.claim_batch([QUEUE], "w", 10, 30.0)
    if path == "one type":
        return await store.claim_batch([QUEUE], "w", 10, 30.0, only_type="distinct")
    return await store.claim_within_limits(
        [QUEUE],
        "w",
        10,
        30.0,
        job_type="distinct",
        skip_types=["distinct"],
        type_limits=GlobalLimits(max_running=5),
        queue=None,
        queue_limits=None,
    )


@pytest.mark.parametrize("path", ["fast", "one type", "within limits"])
async def test_a_claimed_row_fills_every_field_of_the_job(conn: asyncpg.Connection, path: str) -> None:
    # every value distinct from the others of its type, so a swapped pair of columns shows
    job_id = await AsyncClient(conn).enqueue(
        "distinct", {"a": 1}, queue=QUEUE, priority=7, max_attempts=9, dedupe_key="key-1"
    )
    await conn.execute(
        "UPDATE background_jobs SET scheduled_at = now() - interval '2 seconds',"
        " created_at = now() - interval '1 hour' WHERE id = $1",
        job_id,
    )
    row = await conn.fetchrow("SELECT created_at, scheduled_at FROM background_jobs WHERE id = $1", job_id)
    [job] = await claim(JobStore(conn, "public"), path)  # type: ignore[arg-type]
    assert (job.id, job.job_type, job.queue) == (job_id, "distinct", QUEUE)
    assert json.loads(job.payload_json) == {"a": 1}
    assert (job.priority, job.attempt, job.max_attempts) == (7, 1, 9)
    assert isinstance(job.created_at, datetime) and job.created_at == row["created_at"]
    assert job.scheduled_at == row["scheduled_at"]
    assert job.dedupe_key == "key-1"
    assert 1.5 < job.waited_seconds < 60
