"""jobrunner's benchmark: one command, figures verified by SQL, printed as a table and JSON.

    .venv/bin/python -m bench.run                       # defaults below
    .venv/bin/python -m bench.run --jobs 20000 --concurrency 10,100 --history 1000000

Workloads (each on a fresh database `jobrunner_bench`):
- drain: N no-op jobs pre-enqueued, one daemon process in burst mode, every feature on
  (leases and heartbeats, retries, LISTEN, rescuer, pruner, logging at info); a job counts
  when its `completed` status is committed (checked by SQL at the end).
- drain with backlog: the first N of 1M runnable no-op jobs waiting in the queue.
- drain with history: the same after 1M finished jobs were added to the table.
- µs of CPU per job: the daemon's process, and every process of the PostgreSQL server
  (bench/db_cpu.py); WAL bytes per job.
- claim cost: the daemon's claim statement for 100 jobs, timed in the database's state of each
  drain workload (N waiting, 1M waiting, N waiting beside 1M finished), rolled back.
- enqueue: one by one (AsyncClient.enqueue, one commit each) against a bare INSERT, and bulk
  (enqueue_many, one statement).
- idle pick-up latency: a daemon waits idle; a job is INSERTed and committed; the time until
  its handler starts (the narrower span: from the commit's return, not from the enqueue call).
- side by side (bench/side_by_side.py, --no-side-by-side leaves it out): jobrunner, jobrunner
  with every installed handler plugin, with 10 limited types declared, and a bare SKIP LOCKED
  loop, in rounds: drains, pick-up from the enqueue call, each ÷ the bare loop.
The database server is whatever DATABASE_URL names, else 127.0.0.1:5432, else the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.db_cpu import postgres_cpu_seconds
from bench.latency import latency_summary, sample_pickups
from bench.noop_handlers import noop
from jobrunner import JobContext, NewJob, event_loop, handler
from jobrunner.client import AsyncClient
from jobrunner.daemon.daemon import Daemon
from jobrunner.dsn import parse_database_url
from jobrunner.embedded import EmbeddedPostgres
from jobrunner.gc_freeze import freeze_startup_heap
from jobrunner.logs import configure_logging
from jobrunner.migrate import migrate
from jobrunner.registry import HandlerRegistry
from jobrunner.settings import Settings
from jobrunner.store import JobStore

BENCH_DB = "jobrunner_bench"
_pickups: dict[int, float] = {}


@handler("pickup")
async def pickup(ctx: JobContext[dict[str, Any]]) -> None:
    _pickups[ctx.job.id] = time.perf_counter()


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def server_url() -> tuple[str, EmbeddedPostgres | None]:
    if os.environ.get("DATABASE_URL"):
        return parse_database_url(os.environ["DATABASE_URL"]).url, None
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        conn = await asyncpg.connect(local, timeout=2)
        await conn.close()
        return local, None
    except (OSError, asyncpg.PostgresError, TimeoutError):
        embedded = EmbeddedPostgres(Path("/var/tmp/jobrunner-bench"))
        return embedded.start(), embedded


async def fresh_database(server: str, database: str = BENCH_DB) -> str:
    """Drop and create `database` on the server, migrate it; returns its URL."""
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    url = _with_database(server, database)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "public")
    finally:
        await conn.close()
    return url


ENQUEUE_BLOCK = 100
# the claim-cost probe: claims of CLAIM_PROBE_BATCH jobs, after one that plans the statement
CLAIM_PROBES = 20
CLAIM_PROBE_BATCH = 100

Prefetch = int | Literal["auto"]


def bench_settings(url: str, concurrency: int, prefetch: Prefetch = "auto") -> Settings:
    return Settings(
        database_url=url,
        concurrency=concurrency,
        prefetch=prefetch,
        worker_id="bench",
        log_format="json",
        log_level="info",
    )


async def bench_drain(url: str, jobs: int, concurrency: int, prefetch: Prefetch = "auto") -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        new_jobs = [NewJob("noop") for _ in range(jobs)]
        enqueue_started = time.perf_counter()
        await AsyncClient(conn).enqueue_many(new_jobs)
        enqueue_seconds = time.perf_counter() - enqueue_started
        await conn.execute("VACUUM ANALYZE background_jobs")
        settings = bench_settings(url, concurrency, prefetch)
        daemon = Daemon(settings, HandlerRegistry([noop]), parse_database_url(url), burst=True)
        wal_before = await conn.fetchval("SELECT pg_current_wal_lsn()")
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        cpu_before, db_cpu_before = time.process_time(), postgres_cpu_seconds(backend)
        started = time.perf_counter()
        stats = await daemon.run()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        db_cpu = _difference(postgres_cpu_seconds(backend), db_cpu_before)
        wal_bytes = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_before)
        completed = await conn.fetchval(
            "SELECT count(*) FROM background_jobs WHERE status = 'completed' AND job_type = 'noop'"
        )
        await conn.execute("DELETE FROM background_jobs WHERE job_type = 'noop'")
    finally:
        await conn.close()
    if completed != jobs:
        raise RuntimeError(f"drain verification failed: {completed} of {jobs} completed")
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(jobs / elapsed),
        "daemon_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "database_cpu_us_per_job": None if db_cpu is None else round(db_cpu / jobs * 1e6, 1),
        # the whole server's WAL over the drain (claims, outcomes, vacuum, anything else) ÷ N
        "wal_bytes_per_job": round(float(wal_bytes) / jobs),
        "claimed": stats.claimed,
        "verified_completed": completed,
        # the N jobs above went in with one enqueue_many call into an empty table
        "bulk_enqueue_per_second": round(jobs / enqueue_seconds),
    }


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


async def bench_backlog(
    url: str, backlog: int, jobs: int, concurrency: int, repeat: int, prefetch: Prefetch = "auto"
) -> list[dict[str, Any]]:
    """`backlog` runnable no-op jobs wait; a daemon completes the first `jobs` of them (counted
    by its committed outcomes), then stops; `repeat` times, each from what the last one left,
    vacuumed as every drain starts (the dead rows of the run before, and the daemon's own
    VACUUM of them where autovacuum is off, are not what a backlog changes)."""
    conn = await asyncpg.connect(url)
    try:
        batch = 100_000
        for start in range(0, backlog, batch):
            await AsyncClient(conn).enqueue_many([NewJob("noop") for _ in range(min(batch, backlog - start))])
        await conn.execute("VACUUM ANALYZE background_jobs")
        cost = await claim_cost(conn, min(CLAIM_PROBE_BATCH, backlog))
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        runs = []
        for _ in range(repeat):
            # also before the first run: the claim probe's aborted row versions go
            await conn.execute("VACUUM background_jobs")
            done_before = await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'")
            settings = bench_settings(url, concurrency, prefetch)
            daemon = Daemon(settings, HandlerRegistry([noop]), parse_database_url(url))
            cpu_before, db_cpu_before = time.process_time(), postgres_cpu_seconds(backend)
            started = time.perf_counter()
            task = asyncio.create_task(daemon.run())
            # a short spin: the bench must not change the daemon it measures
            while daemon.stats.completed < jobs and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            db_cpu = _difference(postgres_cpu_seconds(backend), db_cpu_before)
            completed = daemon.stats.completed
            daemon.request_stop()
            await task
            done = await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'") - done_before
            if done < completed:
                raise RuntimeError(f"backlog verification failed: {done} committed, {completed} counted")
            runs.append(
                {
                    "backlog": backlog,
                    "concurrency": concurrency,
                    "jobs": completed,
                    "seconds": round(elapsed, 3),
                    "jobs_per_second": round(completed / elapsed),
                    "daemon_cpu_us_per_job": round(cpu / completed * 1e6, 1),
                    "database_cpu_us_per_job": None if db_cpu is None else round(db_cpu / completed * 1e6, 1),
                    "verified_completed": done,
                    "claim_cost": cost,
                }
            )
        await conn.execute("DELETE FROM background_jobs")
        await conn.execute("VACUUM ANALYZE background_jobs")
        return runs
    finally:
        await conn.close()


async def claim_cost(conn: asyncpg.Connection, batch: int = CLAIM_PROBE_BATCH) -> dict[str, Any]:
    """Milliseconds the daemon's claim of `batch` jobs takes in the database as the table
    stands: its own statement, each in a transaction that is rolled back, so nothing is claimed
    and no commit is timed (the probes re-claim the same jobs; their aborted row versions are a
    few thousand beside the table's rows)."""
    store = JobStore(conn, "public")
    times: list[float] = []
    for probe in range(CLAIM_PROBES + 1):
        transaction = conn.transaction()
        await transaction.start()
        try:
            started = time.perf_counter()
            rows = await store.claim_batch(["default"], "claim-probe", batch, 60.0)
            elapsed = time.perf_counter() - started
        finally:
            await transaction.rollback()
        if len(rows) != batch:
            raise RuntimeError(f"claim probe took {len(rows)} jobs, not {batch}: too few waiting")
        if probe:  # the first one also planned the statement on this connection
            times.append(elapsed * 1000)
    times.sort()
    return {
        "batch": batch,
        "probes": len(times),
        "p50_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(len(times) * 0.9) - 1], 3),
    }


async def claim_cost_with(url: str, waiting: int) -> dict[str, Any]:
    """claim_cost with `waiting` runnable no-op jobs added to the table as it is (and taken
    out again after)."""
    conn = await asyncpg.connect(url)
    try:
        await AsyncClient(conn).enqueue_many([NewJob("noop") for _ in range(waiting)])
        await conn.execute("VACUUM ANALYZE background_jobs")
        cost = await claim_cost(conn, min(CLAIM_PROBE_BATCH, waiting))
        await conn.execute("DELETE FROM background_jobs WHERE status = 'pending' AND job_type = 'noop'")
        await conn.execute("VACUUM ANALYZE background_jobs")
        return cost
    finally:
        await conn.close()


async def add_history(url: str, rows: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO background_jobs (job_type, payload, status, attempts, started_at, finished_at, worker_id)
            SELECT 'history', jsonb_build_object('n', g), 'completed', 1, now(), now(), 'old'
            FROM generate_series(1, $1) AS g
            """,
            rows,
        )
        await conn.execute("VACUUM ANALYZE background_jobs")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def bench_enqueue(url: str, single: int, bulk: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        client = AsyncClient(conn)
        bare = await conn.prepare(
            "INSERT INTO background_jobs (job_type, payload, scheduled_at) "
            "VALUES ('enqueue_bench', $1::jsonb, now() + interval '1 hour')"
        )
        # the two take turns in blocks of ENQUEUE_BLOCK: each is one commit, bound by the fsync,
        # whose latency drifts; measured one after the other, the drift showed up as a ratio
        client_seconds = bare_seconds = 0.0
        for first in range(0, single, ENQUEUE_BLOCK):
            block = range(first, min(first + ENQUEUE_BLOCK, single))
            started = time.perf_counter()
            for i in block:
                await client.enqueue("enqueue_bench", {"i": i}, delay=3600)
            client_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for i in block:
                await bare.fetch(json.dumps({"i": i}))
            bare_seconds += time.perf_counter() - started
        client_rate, bare_rate = single / client_seconds, single / bare_seconds
        jobs = [NewJob("enqueue_bench", {"i": i}, delay=3600) for i in range(bulk)]
        started = time.perf_counter()
        await client.enqueue_many(jobs)
        bulk_rate = bulk / (time.perf_counter() - started)
        await conn.execute("DELETE FROM background_jobs WHERE job_type = 'enqueue_bench'")
    finally:
        await conn.close()
    return {
        "single_client_per_second": round(client_rate),
        "single_bare_insert_per_second": round(bare_rate),
        "bulk_per_second": round(bulk_rate),
        "bulk_rows": bulk,
    }


async def bench_pickup(url: str, samples: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        # from a vacuumed table, as every drain starts: the enqueue workload before it deletes
        # its rows, and their dead index entries (and the daemon's own VACUUM of them, where
        # autovacuum is off) are not what idle pick-up measures
        await conn.execute("VACUUM ANALYZE background_jobs")
        settings = bench_settings(url, 10).model_copy(update={"poll_interval": 30.0})
        daemon = Daemon(settings, HandlerRegistry([pickup]), parse_database_url(url))
        task = asyncio.create_task(daemon.run())
        try:
            await daemon.ready.wait()
            # a short spin rather than an event: the bench must not change the daemon it measures
            while daemon.listener is None or not daemon.listener.listening:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            insert = await conn.prepare("INSERT INTO background_jobs (job_type) VALUES ('pickup') RETURNING id")
            latencies = await sample_pickups(insert.fetchval, _pickups, samples, task)
        finally:
            daemon.request_stop()
            await task
    finally:
        await conn.close()
    return {
        **latency_summary(latencies),
        "note": "measured in the daemon's own process (insert and handler share one event loop)",
    }


async def machine_report(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
        shared = await conn.fetchval("SHOW shared_buffers")
    finally:
        await conn.close()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "postgres": version,
        "synchronous_commit": sync_commit,
        "shared_buffers": shared,
        "asyncpg": asyncpg.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def median_run(runs: list[dict[str, Any]], key: str = "jobs_per_second") -> dict[str, Any]:
    """The run whose `key` is nearest the median: a real run, not an average of several."""
    middle = statistics.median(r[key] for r in runs)
    return min(runs, key=lambda r: abs(r[key] - middle))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    try:
        url = await fresh_database(server)
        report: dict[str, Any] = {
            "machine": await machine_report(url),
            "prefetch": args.prefetch,
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            "gc_frozen_objects": gc.get_freeze_count(),
            "drain": [],
            "drain_with_backlog": [],
            "drain_with_history": [],
        }
        report["claim_cost"] = await claim_cost_with(url, args.jobs)
        for concurrency in args.concurrency:
            runs = [await bench_drain(url, args.jobs, concurrency, args.prefetch) for _ in range(args.repeat)]
            report["drain"].append(median_run(runs))
        if args.backlog:
            report["backlog_rows"] = args.backlog
            for concurrency in args.concurrency:
                runs = await bench_backlog(url, args.backlog, args.jobs, concurrency, args.repeat, args.prefetch)
                report["drain_with_backlog"].append(median_run(runs))
        report["enqueue"] = await bench_enqueue(url, args.single, args.bulk)
        report["pickup"] = await bench_pickup(url, args.samples)
        if args.side_by_side:
            # imported here: bench.side_by_side imports this module
            from bench.side_by_side import SideBySideConfig, side_by_side_on

            config = SideBySideConfig(args.jobs, tuple(args.concurrency), args.repeat, args.samples)
            report["side_by_side"] = await side_by_side_on(server, config)
        if args.history:
            report["history_rows"] = args.history
            report["history_insert_seconds"] = round(await add_history(url, args.history), 1)
            report["claim_cost_with_history"] = await claim_cost_with(url, args.jobs)
            for concurrency in args.concurrency:
                runs = [await bench_drain(url, args.jobs, concurrency, args.prefetch) for _ in range(args.repeat)]
                report["drain_with_history"].append(median_run(runs))
        return report
    finally:
        if embedded is not None:
            embedded.stop()


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, PostgreSQL {m['postgres']} "
        f"(synchronous_commit={m['synchronous_commit']}, shared_buffers={m['shared_buffers']}), asyncpg {m['asyncpg']}"
    )
    heap = "start-up heap frozen" if report["gc_frozen_objects"] else "start-up heap not frozen"
    print(
        f"\ndrain, no-op jobs, one process, prefetch {report['prefetch']}, {report['event_loop']}, {heap} (median run)"
    )
    print(
        f"{'concurrency':>12} {'jobs':>8} {'jobs/s':>9} {'with backlog':>13} {'ratio':>6} {'with history':>13}"
        f" {'ratio':>6} {'µs CPU/job daemon':>18} {'database':>9}"
    )
    backlog = {r["concurrency"]: r for r in report["drain_with_backlog"]}
    history = {r["concurrency"]: r for r in report["drain_with_history"]}

    def beside(run: dict[str, Any], other: dict[str, Any] | None) -> str:
        if other is None:
            return f"{'-':>13} {'-':>6}"
        return f"{other['jobs_per_second']:>13,} {other['jobs_per_second'] / run['jobs_per_second']:>6.2f}"

    for run in report["drain"]:
        c = run["concurrency"]
        print(
            f"{c:>12} {run['jobs']:>8} {run['jobs_per_second']:>9,} {beside(run, backlog.get(c))}"
            f" {beside(run, history.get(c))} {run['daemon_cpu_us_per_job']:>18} {run['database_cpu_us_per_job']!s:>9}"
        )
    if report.get("backlog_rows"):
        print(f"(backlog: the first {report['drain'][0]['jobs']:,} of {report['backlog_rows']:,} runnable jobs)")
    if report.get("history_rows"):
        print(f"(history: {report['history_rows']:,} finished jobs in the table)")
    costs = [(f"{report['drain'][0]['jobs']:,} waiting", report["claim_cost"])]
    if report["drain_with_backlog"]:
        costs.append((f"{report['backlog_rows']:,} waiting", report["drain_with_backlog"][0]["claim_cost"]))
    if report.get("claim_cost_with_history"):
        costs.append((f"beside {report['history_rows']:,} finished", report["claim_cost_with_history"]))
    print(
        f"claim of {costs[0][1]['batch']} jobs in the database, p50 / p90 ms: "
        + "; ".join(f"{label} {c['p50_ms']} / {c['p90_ms']}" for label, c in costs)
    )
    e = report["enqueue"]
    client, bare = e["single_client_per_second"], e["single_bare_insert_per_second"]
    print(f"\nenqueue one by one: {client:,}/s via AsyncClient, {bare:,}/s bare INSERT (ratio {client / bare:.2f})")
    print(f"enqueue bulk: {e['bulk_per_second']:,}/s ({e['bulk_rows']:,} rows in one call)")
    p = report["pickup"]
    print(
        f"idle pick-up latency, commit → handler start (INSERT in the daemon's process): "
        f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms over {p['samples']} jobs"
    )
    if report.get("side_by_side"):
        from bench.side_by_side import print_side_by_side

        print_side_by_side(report["side_by_side"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=1_000_000, help="runnable jobs waiting (0: skip)")
    parser.add_argument("--history", type=int, default=1_000_000, help="finished jobs to add (0: skip)")
    parser.add_argument(
        "--prefetch",
        type=lambda s: s if s == "auto" else int(s),
        default="auto",
        help="JOBRUNNER_PREFETCH of the drains: auto (the default) or a number",
    )
    parser.add_argument(
        "--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="as JOBRUNNER_EVENT_LOOP"
    )
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave the start-up heap to the collector (`jobrunner run` freezes it)",
    )
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument(
        "--side-by-side",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="jobrunner, with the app plugin, with 10 limits, and the bare loop in rounds (bench.side_by_side)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args()
    configure_logging("json", "info")
    if args.gc_freeze:
        freeze_startup_heap()  # as `jobrunner run` does once its handlers are imported
    report = event_loop.run(main_async(args), args.event_loop)
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
