"""The web dashboard under a large table: page loads, and what an open page costs the daemons.

    python -m bench.dashboard                       # 1,000,000 finished + 100,000 pending jobs
    python -m bench.dashboard --finished 100000 --pending 10000 --loads 10 --drain 5000 --repeat 1   # a check

1. A fresh database gets `--finished` finished jobs (spread over the last 20 hours, 1 % dead,
   a few job types and queues) and `--pending` runnable jobs.
2. `jobrunner dashboard` runs as a real process; each page is loaded `--loads` times over HTTP,
   one after the other, and the p50/p95 are reported (the overview's first load, which computes
   the hour and day figures, apart; later loads reuse its figures for a while, so the cost of
   counting them afresh is measured on its own too).
3. The drain: a daemon process (`jobrunner run --burst`, `--concurrency`) works `--drain` no-op
   jobs of a queue of their own, `--repeat` times on each side, alternated: with no dashboard
   page open, and with one page open and live (an event-stream client that, like htmx, reloads
   the overview and the job list on every change). Jobs per second are counted from the jobs'
   own start and finish times.

The machine is shared: run it when it is quiet, and compare the two drains of one run rather
than figures of different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.run import fresh_database, server_url

REPO = Path(__file__).resolve().parent.parent
BENCH_DB = "jobrunner_bench_dashboard"
DRAIN_QUEUE = "drain"
# the dashboard's default: an open page is updated at most this often (s)
REFRESH_INTERVAL = 2.0


def _environment(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "PYTHONPATH": str(REPO),
        "JOBRUNNER_LOG_FORMAT": "json",
        "JOBRUNNER_LOG_LEVEL": "warning",
        "JOBRUNNER_HTTP_PORT": "0",
        "JOBRUNNER_PLUGIN_SCHEDULES": "false",
        **extra,
    }


async def fill(url: str, finished: int, pending: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO background_jobs (job_type, queue, payload, status, attempts, started_at, finished_at,
                                         worker_id, last_error)
            SELECT (ARRAY['send_notification', 'analyze_image', 'generate_recommendations', 'cleanup'])[1 + g % 4],
                   (ARRAY['default', 'default', 'ai', 'maintenance'])[1 + g % 4],
                   jsonb_build_object('user_id', md5(g::text), 'n', g),
                   CASE WHEN g % 100 = 0 THEN 'dead' ELSE 'completed' END,
                   1, now(), now() - make_interval(secs => ($1 - g) * 72000.0 / $1), 'old',
                   CASE WHEN g % 100 = 0 THEN 'upstream 503 from the vision API' END
            FROM generate_series(1, $1) AS g
            """,
            finished,
        )
        await conn.execute(
            """
            INSERT INTO background_jobs (job_type, queue, payload)
            SELECT (ARRAY['send_notification', 'analyze_image'])[1 + g % 2], 'default',
                   jsonb_build_object('user_id', md5(g::text))
            FROM generate_series(1, $1) AS g
            """,
            pending,
        )
        await conn.execute("VACUUM ANALYZE background_jobs")
        return {"fill_seconds": round(time.perf_counter() - started, 1)}
    finally:
        await conn.close()


def start_dashboard(url: str) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobrunner", "dashboard", "--port", "0"],
        env=_environment(url, JOBRUNNER_DASHBOARD_REFRESH_INTERVAL=str(REFRESH_INTERVAL)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if selector.select(0.2):
            line = process.stdout.readline().decode()
            if line.startswith("jobrunner dashboard: http://"):
                return process, line.split()[2].rstrip("/")
    process.kill()
    raise RuntimeError("the dashboard did not start")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "loads": len(ordered),
    }


async def page_loads(base: str, url: str, loads: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        dead = await conn.fetchval("SELECT max(id) FROM background_jobs WHERE status = 'dead'")
    finally:
        await conn.close()
    pages = {
        "overview": "/",
        "jobs (no filter)": "/jobs",
        "jobs status=dead": "/jobs?status=dead",
        "jobs status=dead, 10th page": None,
        "jobs job_type=cleanup queue=maintenance": "/jobs?job_type=cleanup&queue=maintenance",
        "jobs error contains 'nothing like it'": "/jobs?error=nothing+like+it",
        "job detail": f"/jobs/{dead}",
    }
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        started = time.perf_counter()
        first = await client.get("/")
        first.raise_for_status()
        results["overview, first load (computes the hour and day figures)"] = {
            "ms": round((time.perf_counter() - started) * 1000, 1)
        }
        # the 10th page of dead jobs, by following the "older" links
        path = "/jobs?status=dead"
        for _ in range(9):
            html = (await client.get(path)).text
            marker = html.find('rel="next" href="')
            if marker < 0:
                break
            path = html[marker + len('rel="next" href="') : html.find('"', marker + len('rel="next" href="'))]
            path = path.replace("&amp;", "&")
        pages["jobs status=dead, 10th page"] = path
        for name, page in pages.items():
            assert page is not None
            samples = []
            for _ in range(loads):
                started = time.perf_counter()
                response = await client.get(page)
                samples.append(time.perf_counter() - started)
                response.raise_for_status()
            results[name] = percentiles(samples)
    return results


async def uncached_statements(url: str, loads: int) -> dict[str, Any]:
    """What the overview's figures cost when they are counted afresh (a page reuses them for a
    while): the dashboard's statements as its connections run them."""
    from jobrunner.sql_files import Queries

    queries = Queries("public")
    conn = await asyncpg.connect(
        url, server_settings={"plan_cache_mode": "force_custom_plan", "max_parallel_workers_per_gather": "0"}
    )
    results: dict[str, Any] = {}
    try:
        for name, args in (
            ("live counts (dashboard_queue_live + dashboard_type_live)", ()),
            ("finished in the last hour (dashboard_finished_since 3600)", (3600.0,)),
            ("finished in the last day (dashboard_finished_since 86400)", (86400.0,)),
            ("change marker (dashboard_change_marker)", ()),
        ):
            samples = []
            for _ in range(loads if "day" not in name else max(3, loads // 10)):
                started = time.perf_counter()
                if name.startswith("live counts"):
                    await conn.fetch(queries.dashboard_queue_live)
                    await conn.fetch(queries.dashboard_type_live)
                elif name.startswith("change marker"):
                    await conn.fetch(queries.dashboard_change_marker)
                else:
                    await conn.fetch(queries.dashboard_finished_since, *args)
                samples.append(time.perf_counter() - started)
            results[name] = percentiles(samples)
    finally:
        await conn.close()
    return results


async def live_page(base: str, connected: asyncio.Event, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """One open page: the event stream, and on each change the reloads htmx would make."""
    async with httpx.AsyncClient(base_url=base, timeout=None) as client:

        async def follow() -> None:
            async with client.stream("GET", "/events") as stream:
                async for line in stream.aiter_lines():
                    connected.set()
                    if line.startswith("event: change"):
                        counts["changes"] += 1
                        for page in ("/", "/jobs"):
                            (await client.get(page)).raise_for_status()
                            counts["reloads"] += 1

        task = asyncio.create_task(follow())
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def drain(url: str, jobs: int, concurrency: int, base: str | None) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM background_jobs WHERE queue = $1", DRAIN_QUEUE)
        await conn.execute(
            "INSERT INTO background_jobs (job_type, queue) SELECT 'noop', $2 FROM generate_series(1, $1)",
            jobs,
            DRAIN_QUEUE,
        )
        await conn.execute("ANALYZE background_jobs")
        stop = asyncio.Event()
        counts = {"changes": 0, "reloads": 0}
        connected = asyncio.Event()
        viewer = None
        if base:
            viewer = asyncio.create_task(live_page(base, connected, stop, counts))
            await asyncio.wait_for(connected.wait(), 30)
            # the dashboard reads its change marker once as the page opens: what changes after counts
            await asyncio.sleep(REFRESH_INTERVAL)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jobrunner",
            "run",
            "--burst",
            "--handlers",
            "bench.noop_handlers",
            env=_environment(url, JOBRUNNER_QUEUES=DRAIN_QUEUE, JOBRUNNER_CONCURRENCY=str(concurrency)),
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.wait_for(daemon.wait(), 3600)
        stop.set()
        if viewer is not None:
            await viewer
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'completed') AS completed,"
            " extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds"
            " FROM background_jobs WHERE queue = $1",
            DRAIN_QUEUE,
        )
    finally:
        await conn.close()
    if row["completed"] != jobs:
        raise RuntimeError(f"drain verification failed: {row['completed']} of {jobs} completed")
    result: dict[str, Any] = {"jobs": jobs, "seconds": round(row["seconds"], 2)}
    result["jobs_per_second"] = round(jobs / row["seconds"])
    if base:
        result |= counts
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    try:
        url = await fresh_database(server, BENCH_DB)
        report: dict[str, Any] = {
            "finished": args.finished,
            "pending": args.pending,
            **await fill(url, args.finished, args.pending),
        }
        dashboard, base = start_dashboard(url)
        try:
            report["page_loads"] = await page_loads(base, url, args.loads)
            report["statements_counted_afresh"] = await uncached_statements(url, args.loads)
            # alternated, so that a drift of the shared machine shows instead of favouring one side
            report["drains"] = []
            for _ in range(args.repeat):
                for live in (False, True):
                    result = await drain(url, args.drain, args.concurrency, base if live else None)
                    report["drains"].append({"dashboard": "open, live" if live else "closed", **result})
            for side in ("closed", "open, live"):
                rates = [d["jobs_per_second"] for d in report["drains"] if d["dashboard"] == side]
                report[f"drain median, dashboard {side}"] = round(statistics.median(rates))
        finally:
            dashboard.terminate()
            dashboard.wait(30)
        return report
    finally:
        if embedded is not None:
            embedded.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=50, help="loads of each page")
    parser.add_argument("--drain", type=int, default=30_000, help="jobs per drain")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="drains on each side, alternated")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
