"""The claim must walk the claim index, whatever the statistics say: a plan that reads every
pending row makes each claim cost grow with the backlog."""

from __future__ import annotations

import asyncpg
import pytest

from jobrunner.store import JobStore


@pytest.mark.parametrize("paused", [False, True], ids=["nothing paused", "a type paused"])
async def test_a_claim_walks_the_claim_index_with_a_limited_type_on_record(
    conn: asyncpg.Connection, paused: bool
) -> None:
    # the shape that once turned the plan into "read and sort every pending row": one job type
    # in the backlog and a row in jobrunner_limit_state (any limited or paused type has one)
    await conn.execute("INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, 20000)")
    paused_until = "now() + interval '1 hour'" if paused else "NULL"
    await conn.execute(
        f"INSERT INTO jobrunner_limit_state (job_type, paused_until) VALUES ('analyze_image', {paused_until})"
    )
    await conn.execute("ANALYZE background_jobs; ANALYZE jobrunner_limit_state")
    claim = JobStore(conn, "public").queries.claim_batch
    plan = "\n".join(
        row[0] for row in await conn.fetch("EXPLAIN " + claim, ["default"], "plan-check", 100, 30.0, [], None)
    )
    assert "Seq Scan on background_jobs" not in plan, plan
    assert "Index Scan using background_jobs_claim_idx" in plan, plan
