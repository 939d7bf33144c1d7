"""The daemon VACUUMs background_jobs itself where autovacuum does not run (JOBRUNNER_VACUUM)."""

from __future__ import annotations

import asyncpg
import pytest

from jobrunner import AsyncClient, JobContext, NewJob, handler
from jobrunner.daemon.maintenance.vacuumer import vacuum_due
from tests.support import running_daemon, wait_for

VACUUM_COUNT = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'background_jobs'"


@handler("churn")
async def churn(ctx: JobContext[dict[str, object]]) -> None:
    return None


@pytest.mark.parametrize(
    ("mode", "autovacuum_on", "dead", "live", "due"),
    [
        ("auto", True, 1_000_000, 10, False),  # autovacuum does it
        ("auto", False, 20_000, 10, True),
        ("auto", False, 9_999, 10, False),  # too few to bother
        ("auto", False, 20_000, 500_000, False),  # few next to the live rows
        ("always", True, 20_000, 10, True),
        ("never", False, 1_000_000, 10, False),
    ],
)
def test_when_a_vacuum_is_due(mode: str, autovacuum_on: bool, dead: int, live: int, due: bool) -> None:
    assert vacuum_due(mode, autovacuum_on, dead, live, 10_000) is due  # type: ignore[arg-type]


async def test_the_daemon_vacuums_the_dead_rows_its_jobs_leave(db_url: str, conn: asyncpg.Connection) -> None:
    before = await conn.fetchval(VACUUM_COUNT)
    await AsyncClient(conn).enqueue_many([NewJob("churn") for _ in range(300)])
    async with running_daemon(db_url, [churn], vacuum="always", vacuum_interval=0.1, vacuum_min_dead_rows=200):
        await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=300)
        # each job left two dead row versions (claimed, then finished): the daemon reclaims them
        await wait_for(conn, f"SELECT ({VACUUM_COUNT}) > $1", before)
        await wait_for(conn, "SELECT n_dead_tup < 200 FROM pg_stat_user_tables WHERE relname = 'background_jobs'")
