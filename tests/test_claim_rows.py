"""The claim returns the columns Job.from_claim_row expects, in its field order: the
job built from a claimed row has each value where it belongs."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg
import pytest

from jobrunner import AsyncClient, GlobalLimits, QueueLimits
from jobrunner.job import Job
from jobrunner.store import ClaimPlan, JobStore, LimitedType

QUEUE = "rows"


async def claim(store: JobStore, path: str) -> list[Job]:
    if path == "fast":
        return await store.claim_batch([QUEUE], "w", 10, 30.0)
    if path == "limited queue":
        plan = ClaimPlan([], 10, limited_limit=10, limited_queues={QUEUE: QueueLimits(max_running=5)})
        return (await store.claim("w", 30.0, plan)).limited
    room, limits = {
        "one type": (10, None),
        "within limits": (None, GlobalLimits(max_running=5)),
        "per key": (None, GlobalLimits(per_key_max_running=2)),
    }[path]
    plan = ClaimPlan([QUEUE], 10, limited_limit=10, limited_types=[LimitedType("distinct", room, limits)])
    return (await store.claim("w", 30.0, plan)).limited


@pytest.mark.parametrize("path", ["fast", "one type", "within limits", "per key", "limited queue"])
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
