"""The dashboard's statements read through indexes that bound their cost however much history
the table holds: no sequential scan of background_jobs, and a page of the job list reads a
few hundred pages at most. Planned as the dashboard's connections plan them (with the
parameters' values: plan_cache_mode = force_custom_plan)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from jobrunner.dashboard.filters import SCAN_WINDOW, JobFilter
from jobrunner.sql_files import Queries

FINISHED = 200_000
PENDING = 20_000
QUERIES = Queries("public")


@pytest.fixture
async def history(conn: asyncpg.Connection) -> asyncpg.Connection:
    """Much finished history with a few old dead jobs in it, then a backlog, a few running."""
    await conn.execute(
        "INSERT INTO background_jobs (job_type, queue, status, attempts, started_at, finished_at, last_error)"
        " SELECT CASE WHEN g % 100 = 0 THEN 'rare' ELSE 'noop' END, 'default',"
        "        CASE WHEN g % 20000 = 0 THEN 'dead' ELSE 'completed' END, 1, now(),"
        "        now() - make_interval(secs => ($1 - g) / 10.0), CASE WHEN g % 20000 = 0 THEN 'boom' END"
        " FROM generate_series(1, $1) AS g",
        FINISHED,
    )
    await conn.execute(
        "INSERT INTO background_jobs (job_type, queue) SELECT 'noop', 'default' FROM generate_series(1, $1)", PENDING
    )
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, lease_expires_at = now() + interval '1 hour',"
        " worker_id = 'w' WHERE id > (SELECT max(id) - 5 FROM background_jobs)"
    )
    await conn.execute("VACUUM ANALYZE background_jobs")
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    return conn


async def explained(conn: asyncpg.Connection, query: str, *args: Any) -> tuple[str, int]:
    """The plan's text and the shared buffers it touched."""
    [row] = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, *args)
    plan = json.loads(row[0])[0]["Plan"]
    [text] = [r[0] for r in await conn.fetch("EXPLAIN (FORMAT JSON) " + query, *args)]

    def nodes(node: dict[str, Any]) -> list[str]:
        found = [f"{node['Node Type']} on {node.get('Index Name') or node.get('Relation Name') or ''}"]
        for child in node.get("Plans", []):
            found += nodes(child)
        return found

    described = "\n".join(nodes(json.loads(text)[0]["Plan"]))
    return described, int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


@pytest.mark.parametrize(
    "query",
    ["status=dead", "status=failed&status=dead", "status=running", "", "status=completed", "status=pending"],
    ids=lambda q: q or "no filter",
)
async def test_a_page_of_the_job_list_reads_a_bounded_part_of_the_table(
    history: asyncpg.Connection, query: str
) -> None:
    params: dict[str, list[str]] = {}
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        params.setdefault(name, []).append(value)
    job_filter = JobFilter.from_params(params)
    lowest, highest = await history.fetchrow(QUERIES.dashboard_id_bounds)
    # as the store asks: statuses an index holds in id order unbounded, others within the window
    floor = 0 if job_filter.index_bounded else highest + 1 - SCAN_WINDOW
    plan, touched = await explained(
        history, QUERIES.dashboard_jobs_page, highest + 1, floor, *job_filter.sql_args(), 51
    )
    assert "Seq Scan on background_jobs" not in plan, plan
    if job_filter.index_bounded:
        assert touched < 100, f"{query}: {touched} pages\n{plan}"
    else:
        table_pages = await history.fetchval("SELECT relpages FROM pg_class WHERE relname = 'background_jobs'")
        window_pages = table_pages * SCAN_WINDOW / (highest - lowest + 1)
        assert touched < window_pages, f"{query or 'no filter'}: {touched} pages, the window is {window_pages}\n{plan}"


async def test_a_rare_filter_reads_at_most_its_window(history: asyncpg.Connection) -> None:
    _lowest, highest = await history.fetchrow(QUERIES.dashboard_id_bounds)
    job_filter = JobFilter.from_params({"job_type": ["rare"], "error": ["nothing like this"]})
    plan, touched = await explained(
        history, QUERIES.dashboard_jobs_page, highest + 1, highest + 1 - 100_000, *job_filter.sql_args(), 51
    )
    assert "Seq Scan on background_jobs" not in plan, plan
    table_pages = await history.fetchval("SELECT relpages FROM pg_class WHERE relname = 'background_jobs'")
    assert touched < table_pages * 0.7, f"{touched} of {table_pages} pages\n{plan}"


@pytest.mark.parametrize(
    "name",
    [
        "dashboard_queue_live",
        "dashboard_type_live",
        "dashboard_workers",
        "dashboard_change_marker",
        "dashboard_id_bounds",
    ],
)
async def test_the_live_figures_read_only_live_rows(history: asyncpg.Connection, name: str) -> None:
    plan, touched = await explained(history, getattr(QUERIES, name))
    assert "Seq Scan on background_jobs" not in plan, plan
    # the pending backlog's index entries at most: the history's 200,000 rows are not read
    assert touched < 1000, f"{name}: {touched} pages\n{plan}"


async def test_the_finished_figures_read_the_window_through_its_index(history: asyncpg.Connection) -> None:
    plan, _touched = await explained(history, QUERIES.dashboard_finished_since, 3600.0)
    assert "Seq Scan on background_jobs" not in plan, plan
    assert "background_jobs_finished_idx" in plan, plan


async def test_a_creation_time_is_found_in_the_ids_by_a_few_probes(history: asyncpg.Connection) -> None:
    moment = await history.fetchval("SELECT finished_at FROM background_jobs WHERE id = 123456")
    await history.execute("UPDATE background_jobs SET created_at = finished_at WHERE finished_at IS NOT NULL")
    plan, touched = await explained(history, QUERIES.dashboard_first_id_created_at, moment)
    assert "Seq Scan on background_jobs" not in plan, plan
    assert touched < 300, f"{touched} pages\n{plan}"
    assert await history.fetchval(QUERIES.dashboard_first_id_created_at, moment) == 123456
