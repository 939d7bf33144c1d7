"""The bench's bare SKIP LOCKED loop (bench/bare_loop.py) and the side-by-side run
(bench/side_by_side.py: drains and pick-up from the enqueue call, for jobrunner, jobrunner with
the app plugin, with 10 limited types, and the bare loop), on tiny sizes against this test's own
database: every job the workloads enqueue ends completed, and the report and its table come out
whole.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from bench.bare_loop import BareLoop
from bench.latency import WARMUP
from bench.side_by_side import SideBySideConfig, print_side_by_side, run_side_by_side
from jobrunner import NewJob
from jobrunner.client import AsyncClient


async def _noop(job_id: int, payload: dict[str, Any]) -> None:
    return None


async def test_bare_loop_completes_every_job_and_fails_a_job_without_handler(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await AsyncClient(conn).enqueue_many([NewJob("noop") for _ in range(250)] + [NewJob("nobody_handles_this")])
    loop = BareLoop(db_url, {"noop": _noop}, concurrency=10, burst=True)

    completed = await asyncio.wait_for(loop.run(), 60)

    assert (completed, loop.failed, loop.claimed) == (250, 1, 251)
    rows = await conn.fetch("SELECT job_type, status, count(*) AS n FROM background_jobs GROUP BY 1, 2")
    assert {(r["job_type"], r["status"]): r["n"] for r in rows} == {
        ("noop", "completed"): 250,
        ("nobody_handles_this", "failed"): 1,
    }
    error = await conn.fetchval("SELECT last_error FROM background_jobs WHERE job_type = 'nobody_handles_this'")
    assert "no handler" in error


async def test_side_by_side_completes_every_job_of_every_system(
    db_url: str, conn: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = 5
    config = SideBySideConfig(jobs=200, concurrency=(10,), rounds=1, samples=samples)

    report = await run_side_by_side(db_url, config)

    # the app plugin is installed beside the core in development and CI
    assert list(report["systems"]) == ["jobrunner", "app", "limits", "bare"]
    for key, raw in report["raw"].items():
        (drain,) = raw["drain"][10]
        assert drain["verified_completed"] == 200, key
        (pickup,) = raw["pickup"]
        assert pickup["verified_completed"] == WARMUP + samples, key
        assert len(pickup["from_enqueue_call"]) == len(pickup["from_commit"]) == samples, key
        # every job was served by its notification, not by the 30 s fallback poll
        assert 0 < max(pickup["from_enqueue_call"]) < 10_000, key
        for call, commit in zip(pickup["from_enqueue_call"], pickup["from_commit"], strict=True):
            assert call >= commit, key
    # the last workload's jobs are in the table, all completed
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status <> 'completed'") == 0
    assert await conn.fetchval("SELECT count(*) FROM background_jobs WHERE job_type = 'pickup'") == WARMUP + samples
    assert report["paired_ratios"]["jobrunner/bare"]["jobs_per_second"][10] > 0
    json.dumps(report)  # as the benches write it

    peer = {"drain_jobs_per_second": {10: 1234}, "cpu_us_per_job": {10: 50.0}, "pickup": {}}
    print_side_by_side(report, {"somepeer": peer})
    table = capsys.readouterr().out
    assert "bare loop" in table and "with app ÷ bare" in table
    assert "1,234 (somepeer)" in table
    assert "0 types" in table and "10 ÷ 0" in table
