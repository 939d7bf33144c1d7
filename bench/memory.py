"""Daemon memory at concurrency 1000 with a 1,000,000-job backlog.

    .venv/bin/python -m bench.memory --backlog 1000000 --concurrency 1000 --sleep-ms 1000 --duration 120

On a fresh database `jobrunner_memory`:
1. the backlog is enqueued (`AsyncClient.enqueue_many`, batches of --batch) as `sleep` jobs whose
   handler (bench/sleep_handlers.py) waits --sleep-ms and completes; then VACUUM ANALYZE;
2. baseline: the same daemon (same settings) on a queue that has no job, for --idle seconds: the
   RSS of a daemon that runs nothing;
3. the daemon as a real process (`python -m jobrunner run --handlers bench.sleep_handlers`,
   JOBRUNNER_CONCURRENCY=--concurrency, every other setting its default) works the backlog for
   --duration seconds (or until it is done). Every second: VmRSS and VmHWM from
   /proc/<pid>/status, its CPU time, and from the database the jobs `running` now (how many are
   in flight: a claimed job is `running` until its outcome is committed) and the jobs finished;
4. SIGTERM (running jobs finish within the shutdown grace), then the verification by SQL: the
   completed rows equal the daemon's own count of committed completions, nothing failed, nothing
   is left running, and completed + pending == backlog.

Peak RSS is the kernel's high-water mark (VmHWM) at the end of the window; steady RSS is the
median VmRSS over the second half of the window. jobs/s is counted from the first sample with at
least 90 % of the slots in flight to the last sample. With --sleep-ms 1000 and concurrency 1000
the ceiling is 1,000 jobs/s: the point is the in-flight count and the memory, not the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.daemon_process import DaemonProcess, proc_cpu_seconds, proc_memory_kb, source_state
from bench.run import fresh_database, machine_report, server_url
from jobrunner import NewJob
from jobrunner.client import AsyncClient

MEMORY_DB = "jobrunner_memory"

COUNTS_SQL = """
SELECT (SELECT count(*) FROM background_jobs WHERE status = 'running') AS running,
       (SELECT count(*) FROM background_jobs WHERE finished_at IS NOT NULL) AS finished
"""


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


async def enqueue_backlog(url: str, backlog: int, batch: int, sleep_ms: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        client = AsyncClient(conn)
        jobs = [NewJob("sleep", {"ms": sleep_ms}) for _ in range(batch)]
        started = time.perf_counter()
        done = 0
        while done < backlog:
            done += len(await client.enqueue_many(jobs[: min(batch, backlog - done)]))
        seconds = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE background_jobs")
        pending = await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'pending'")
    finally:
        await conn.close()
    if pending != backlog:
        raise RuntimeError(f"backlog: {pending} pending rows, wanted {backlog}")
    return {"jobs": backlog, "seconds": round(seconds, 1), "jobs_per_second": round(backlog / seconds)}


async def idle_baseline(env: dict[str, str], seconds: float, log: Path) -> dict[str, Any]:
    daemon = DaemonProcess({**env, "JOBRUNNER_QUEUES": "memory_bench_idle"}, "bench.sleep_handlers", log)
    await daemon.start()
    try:
        await daemon.wait_ready()
        rss = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            rss.append(proc_memory_kb(daemon.pid)["VmRSS"])
            await asyncio.sleep(0.5)
        hwm = proc_memory_kb(daemon.pid)["VmHWM"]
        await daemon.stop()
    finally:
        daemon.kill()
        if daemon.process is not None:
            await daemon.process.wait()
    return {"seconds": seconds, "rss_mb_median": _mb(int(statistics.median(rss))), "hwm_mb": _mb(hwm)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    if embedded is not None:
        raise SystemExit("bench.memory wants a real PostgreSQL server (DATABASE_URL or 127.0.0.1:5432)")
    url = await fresh_database(server, args.database)
    env = {
        "JOBRUNNER_DATABASE_URL": url,
        "JOBRUNNER_CONCURRENCY": str(args.concurrency),
        "JOBRUNNER_WORKER_ID": "memory",
        "JOBRUNNER_HTTP_PORT": "0",
        "JOBRUNNER_LOG_FORMAT": "json",
        "JOBRUNNER_LOG_LEVEL": "info",
    }
    report: dict[str, Any] = {
        "machine": await machine_report(url),
        "source": source_state(),
        "parameters": {
            "backlog": args.backlog,
            "concurrency": args.concurrency,
            "sleep_ms": args.sleep_ms,
            "duration_seconds": args.duration,
            "batch": args.batch,
            "database": args.database,
            "daemon_env": {k: v for k, v in env.items() if k != "JOBRUNNER_DATABASE_URL"},
            "daemon_command": f"{sys.executable} -m jobrunner run --handlers bench.sleep_handlers",
        },
    }
    print(
        f"memory: backlog {args.backlog:,} sleep jobs ({args.sleep_ms} ms each), one daemon process at concurrency "
        f"{args.concurrency}, {args.duration:g} s; PostgreSQL {report['machine']['postgres']}, "
        f"{report['machine']['cpus']} CPUs",
        flush=True,
    )
    report["enqueue"] = await enqueue_backlog(url, args.backlog, args.batch, args.sleep_ms)
    print(f"backlog enqueued in {report['enqueue']['seconds']} s", flush=True)
    idle_log = args.daemon_log.resolve().with_name(args.daemon_log.stem + "-idle.log")
    report["idle"] = await idle_baseline(env, args.idle, idle_log)
    print(f"idle daemon (no job to run): RSS {report['idle']['rss_mb_median']} MB", flush=True)

    conn = await asyncpg.connect(url)
    daemon = DaemonProcess(env, "bench.sleep_handlers", args.daemon_log.resolve())
    samples: list[dict[str, Any]] = []
    try:
        await daemon.start()
        report["daemon_start_seconds"] = round(await daemon.wait_ready(), 2)
        print(f"daemon pid {daemon.pid}, log {args.daemon_log}\n", flush=True)
        print(f"{'t (s)':>6} {'RSS MB':>7} {'HWM MB':>7} {'running':>8} {'finished':>9} {'jobs/s':>7} {'CPU %':>6}")
        t0 = time.perf_counter()
        next_sample = t0
        while True:
            now = time.perf_counter()
            if not daemon.alive():
                raise RuntimeError(f"the daemon exited early: {daemon.tail()}")
            memory = proc_memory_kb(daemon.pid)
            cpu = proc_cpu_seconds(daemon.pid)
            counts = await conn.fetchrow(COUNTS_SQL)
            sample = {
                "t": round(now - t0, 2),
                "rss_mb": _mb(memory["VmRSS"]),
                "hwm_mb": _mb(memory["VmHWM"]),
                "rss_anon_mb": _mb(memory.get("RssAnon", 0)),
                "threads": memory.get("Threads"),
                "cpu_seconds": round(cpu, 2),
                "running": counts["running"],
                "finished": counts["finished"],
            }
            if samples:
                prev = samples[-1]
                dt = sample["t"] - prev["t"]
                sample["jobs_per_second"] = round((sample["finished"] - prev["finished"]) / dt)
                sample["cpu_percent"] = round(100 * (sample["cpu_seconds"] - prev["cpu_seconds"]) / dt, 1)
            samples.append(sample)
            print(
                f"{sample['t']:>6.0f} {sample['rss_mb']:>7} {sample['hwm_mb']:>7} {sample['running']:>8,} "
                f"{sample['finished']:>9,} {sample.get('jobs_per_second', 0):>7,} {sample.get('cpu_percent', '-'):>6}",
                flush=True,
            )
            if sample["t"] >= args.duration or sample["finished"] >= args.backlog:
                break
            next_sample += 1.0
            await asyncio.sleep(max(0.0, next_sample - time.perf_counter()))
        final_memory = proc_memory_kb(daemon.pid)
        daemon_stats = await daemon.stop()

        rows = {
            r["status"]: r["n"]
            for r in await conn.fetch("SELECT status, count(*) AS n FROM background_jobs GROUP BY status")
        }
    finally:
        daemon.kill()
        if daemon.process is not None:
            await daemon.process.wait()
        await conn.close()

    checks = {
        "completed_rows_equal_daemon_count": rows.get("completed", 0) == daemon_stats["completed"],
        "nothing_left_running": rows.get("running", 0) == 0,
        "no_failures": not any(daemon_stats[k] for k in ("retried", "failed", "dead", "lost_leases"))
        and not any(rows.get(k) for k in ("failed", "dead")),
        "completed_plus_pending_equal_backlog": rows.get("completed", 0) + rows.get("pending", 0) == args.backlog,
    }
    second_half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    full = [s for s in samples if s["running"] >= 0.9 * args.concurrency]
    if full:
        first_full = full[0]
        span = samples[-1]["t"] - first_full["t"]
        rate = round((samples[-1]["finished"] - first_full["finished"]) / span) if span > 0 else None
    else:
        first_full, rate = None, None
    after_ramp = [s for s in samples if first_full is not None and s["t"] >= first_full["t"]]
    running = [s["running"] for s in after_ramp] or [s["running"] for s in samples]
    cpu_span = samples[-1]["t"] - samples[0]["t"]
    report["result"] = {
        "peak_rss_mb": _mb(final_memory["VmHWM"]),
        "steady_rss_mb": statistics.median(s["rss_mb"] for s in second_half),
        "steady_rss_min_max_mb": [min(s["rss_mb"] for s in second_half), max(s["rss_mb"] for s in second_half)],
        "rss_at_ready_mb": samples[0]["rss_mb"],
        "idle_rss_mb": report["idle"]["rss_mb_median"],
        "running_in_db_median": statistics.median(running),
        "running_in_db_min_max": [min(running), max(running)],
        "seconds_to_90_percent_in_flight": first_full["t"] if first_full else None,
        "jobs_per_second": rate,
        "jobs_per_second_ceiling": round(args.concurrency / (args.sleep_ms / 1000)),
        "finished_in_window": samples[-1]["finished"],
        "window_seconds": samples[-1]["t"],
        "daemon_cpu_percent": round(100 * (samples[-1]["cpu_seconds"] - samples[0]["cpu_seconds"]) / cpu_span, 1)
        if cpu_span > 0
        else None,
        "threads": samples[-1]["threads"],
    }
    report["verification"] = {
        "rows_by_status": rows,
        "daemon_stats": daemon_stats,
        "checks": checks,
        "passed": all(checks.values()),
    }
    report["samples"] = samples
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


def print_report(report: dict[str, Any]) -> None:
    r = report["result"]
    p = report["parameters"]
    print(
        f"\nconcurrency {p['concurrency']}, backlog {p['backlog']:,}, {p['sleep_ms']} ms per job, "
        f"{r['window_seconds']:.0f} s window"
    )
    print(f"  peak RSS (VmHWM)            {r['peak_rss_mb']} MB")
    print(
        f"  steady RSS (2nd-half median) {r['steady_rss_mb']} MB "
        f"(min {r['steady_rss_min_max_mb'][0]}, max {r['steady_rss_min_max_mb'][1]})"
    )
    print(f"  RSS at ready / idle daemon  {r['rss_at_ready_mb']} / {r['idle_rss_mb']} MB")
    lo, hi = r["running_in_db_min_max"]
    print(
        f"  running in the DB           median {r['running_in_db_median']:,} (min {lo:,}, max {hi:,}), 90 % of the "
        f"slots in flight after {r['seconds_to_90_percent_in_flight']} s"
    )
    print(
        f"  jobs/s                      {r['jobs_per_second']} (ceiling {r['jobs_per_second_ceiling']:,}), "
        f"daemon CPU {r['daemon_cpu_percent']} %"
    )
    v = report["verification"]
    failed = [name for name, ok in v["checks"].items() if not ok]
    print(
        f"verification: rows {v['rows_by_status']}, daemon {v['daemon_stats']}: "
        + ("PASSED" if v["passed"] else f"FAILED {failed}")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--sleep-ms", type=int, default=1000, help="each job's handler waits this long")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of sampling (or until done)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of the idle baseline")
    parser.add_argument("--batch", type=int, default=50_000, help="jobs per enqueue_many for the backlog")
    parser.add_argument("--database", default=MEMORY_DB)
    parser.add_argument("--json", type=Path, default=Path("bench/results/memory.json"))
    parser.add_argument("--daemon-log", type=Path, default=Path("bench/results/memory-daemon.log"))
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {args.json}")
    return 0 if report["verification"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
