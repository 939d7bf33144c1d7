"""Soak: does background_jobs stay bounded (heap, every index) while millions of jobs go through?

    .venv/bin/python -m bench.soak --jobs 10000000 --concurrency 100 --retention 60 --sample-every 30

On a fresh database `jobrunner_soak`:
- ONE daemon as a real process (`python -m jobrunner run --handlers bench.noop_handlers`,
  configured by JOBRUNNER_* variables: concurrency, retention, prune interval; every other
  setting its default, so leases, heartbeats, rescuer, pruner, LISTEN, metrics are on);
- the bench's process is the producer: whenever fewer than --depth jobs wait, it enqueues a
  batch of --batch no-op jobs with one `AsyncClient.enqueue_many`, until --jobs were enqueued;
- every --sample-every seconds a sample: jobs finished, throughput over the interval, the heap,
  each index and the total size of background_jobs, live/dead tuples, autovacuum runs, the
  daemon's RSS and CPU;
- after the last job finished, --tail seconds more (the pruner deletes the last ones), then
  SIGTERM to the daemon and the verification by SQL.

How "finished so far" is counted, cheaply: the producer knows how many jobs it enqueued, and a
job no longer `pending` or `running` has finished. finished = enqueued − count(pending, running);
that count reads only the live rows (≤ depth + concurrency, through the partial indexes), never
the finished history. The producer's enqueue and that count share a lock, so a batch is never
counted as enqueued before it is visible, nor the reverse.

Verification at the end (the daemon stopped; the pruner deleted most rows):
- no pending or running row is left, and every remaining row is `completed`;
- rows remaining + rows deleted (pg_stat_user_tables.n_tup_del: only the pruner deletes here)
  == --jobs, and n_tup_ins == --jobs;
- the deletions the pruner logged add up to n_tup_del;
- the daemon's own count of committed outcomes ("daemon stopped" log line): claimed == completed
  == --jobs, no failure, retry or dead job, so the pruned rows were completed jobs too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.daemon_process import DaemonProcess, proc_cpu_seconds, proc_memory_kb, source_state
from bench.run import fresh_database, machine_report, server_url
from jobrunner import NewJob
from jobrunner.client import AsyncClient

SOAK_DB = "jobrunner_soak"
MB = 1024 * 1024

# the first runnable job in claim order (the claim index's order): its id tells how deep the
# queue is, since ids grow with every batch; one index probe, however large the table
HEAD_SQL = """
SELECT id FROM background_jobs
WHERE status = 'pending' AND queue = 'default'
ORDER BY priority DESC, scheduled_at, id
LIMIT 1
"""
LIVE_SQL = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'running') AS running
FROM background_jobs
WHERE status IN ('pending', 'running')
"""
SIZES_SQL = """
SELECT pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS indexes_bytes,
       pg_total_relation_size(c.oid) AS total_bytes,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes,
       s.n_live_tup, s.n_dead_tup, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del,
       s.last_autovacuum, s.autovacuum_count, s.last_autoanalyze, s.autoanalyze_count,
       s.last_vacuum, s.vacuum_count,
       extract(epoch FROM now() - s.last_autovacuum)::float8 AS autovacuum_seconds_ago
FROM pg_class AS c
JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = 'background_jobs'::regclass
"""
INDEXES_SQL = """
SELECT indexrelname AS name, pg_relation_size(indexrelid) AS bytes
FROM pg_stat_user_indexes
WHERE relid = 'background_jobs'::regclass
ORDER BY indexrelname
"""


def short_index(name: str) -> str:
    """background_jobs_claim_idx -> claim, background_jobs_pkey -> pkey."""
    return name.removeprefix("background_jobs_").removesuffix("_idx")


PG_SETTINGS = (
    "autovacuum",
    "autovacuum_naptime",
    "autovacuum_max_workers",
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_vacuum_cost_delay",
    "autovacuum_vacuum_cost_limit",
    "maintenance_work_mem",
    "max_wal_size",
    "checkpoint_timeout",
    "wal_level",
    "fsync",
)


class Producer:
    """Keeps about `depth` jobs waiting until `total` were enqueued."""

    def __init__(
        self, conn: asyncpg.Connection, lock: asyncio.Lock, total: int, depth: int, batch: int, rate: float | None
    ) -> None:
        self.conn = conn
        # jobs per second at most (None: as fast as the daemon drains), so that the rate, and
        # with it the rows the retention keeps, stays the same however loaded the machine is
        self.rate = rate
        self.lock = lock
        self.total = total
        self.depth = depth
        self.batch = batch
        self.enqueued = 0
        self.last_id = 0
        self.batches = 0
        self.enqueue_seconds = 0.0
        # top-up checks that found the queue empty after the first batch: the daemon waited on us
        self.found_empty = 0
        self.done_at: float | None = None

    async def run(self) -> None:
        client = AsyncClient(self.conn)
        jobs = [NewJob("noop") for _ in range(self.batch)]
        started_at = time.perf_counter()
        while self.enqueued < self.total:
            if self.rate is not None:
                ahead = self.enqueued / self.rate - (time.perf_counter() - started_at)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            head = await self.conn.fetchval(HEAD_SQL)
            waiting = 0 if head is None else self.last_id - head + 1
            if waiting >= self.depth:
                await asyncio.sleep(0.1)
                continue
            if waiting == 0 and self.enqueued:
                self.found_empty += 1
            n = min(self.batch, self.total - self.enqueued)
            async with self.lock:
                started = time.perf_counter()
                ids = await client.enqueue_many(jobs[:n])
                self.enqueue_seconds += time.perf_counter() - started
                self.enqueued += len(ids)
                self.last_id = max(ids)
                self.batches += 1
        self.done_at = time.perf_counter()


async def take_sample(
    conn: asyncpg.Connection, producer: Producer, daemon: DaemonProcess, t0: float, previous: dict[str, Any] | None
) -> dict[str, Any]:
    async with producer.lock:
        live = await conn.fetchrow(LIVE_SQL)
        enqueued = producer.enqueued
        now = time.perf_counter()
    sizes = await conn.fetchrow(SIZES_SQL)
    indexes = await conn.fetch(INDEXES_SQL)
    finished = enqueued - live["pending"] - live["running"]
    sample: dict[str, Any] = {
        "t": round(now - t0, 1),
        "wall": datetime.now(UTC).isoformat(timespec="seconds"),
        "enqueued": enqueued,
        "finished": finished,
        "pending": live["pending"],
        "running": live["running"],
        "heap_bytes": sizes["heap_bytes"],
        "indexes_bytes": sizes["indexes_bytes"],
        "total_bytes": sizes["total_bytes"],
        "toast_bytes": sizes["toast_bytes"],
        "index_bytes": {row["name"]: row["bytes"] for row in indexes},
        "n_live_tup": sizes["n_live_tup"],
        "n_dead_tup": sizes["n_dead_tup"],
        "n_tup_ins": sizes["n_tup_ins"],
        "n_tup_upd": sizes["n_tup_upd"],
        "n_tup_hot_upd": sizes["n_tup_hot_upd"],
        "n_tup_del": sizes["n_tup_del"],
        "autovacuum_count": sizes["autovacuum_count"],
        "last_autovacuum": sizes["last_autovacuum"].isoformat() if sizes["last_autovacuum"] else None,
        "autovacuum_seconds_ago": (
            round(sizes["autovacuum_seconds_ago"], 1) if sizes["autovacuum_seconds_ago"] is not None else None
        ),
        "autoanalyze_count": sizes["autoanalyze_count"],
        # VACUUMs not run by autovacuum: on a server with autovacuum off, the daemon's own
        # (JOBRUNNER_VACUUM=auto)
        "vacuum_count": sizes["vacuum_count"],
        "last_vacuum": sizes["last_vacuum"].isoformat() if sizes["last_vacuum"] else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if daemon.alive():
        memory = proc_memory_kb(daemon.pid)
        sample["daemon_rss_mb"] = round(memory["VmRSS"] / 1024, 1)
        sample["daemon_hwm_mb"] = round(memory["VmHWM"] / 1024, 1)
        sample["daemon_cpu_seconds"] = round(proc_cpu_seconds(daemon.pid), 2)
    if previous is not None:
        dt = sample["t"] - previous["t"]
        sample["jobs_per_second"] = round((finished - previous["finished"]) / dt) if dt > 0 else None
        if "daemon_cpu_seconds" in sample and "daemon_cpu_seconds" in previous and dt > 0:
            sample["daemon_cpu_percent"] = round(
                100 * (sample["daemon_cpu_seconds"] - previous["daemon_cpu_seconds"]) / dt, 1
            )
    return sample


def _mb(value: int) -> str:
    return f"{value / MB:,.1f}"


HEADER = (
    f"{'t (s)':>8} {'finished':>11} {'jobs/s':>7} {'pending':>8} {'heap MB':>8} {'idx MB':>7} {'total MB':>9} "
    f"{'live tup':>9} {'dead tup':>9} {'autovac':>7} {'av ago':>7} {'vacuum':>6} {'RSS MB':>7} {'CPU %':>6}"
)


def sample_line(s: dict[str, Any]) -> str:
    ago = s["autovacuum_seconds_ago"]
    return (
        f"{s['t']:>8.0f} {s['finished']:>11,} {s.get('jobs_per_second') or 0:>7,} {s['pending']:>8,} "
        f"{_mb(s['heap_bytes']):>8} {_mb(s['indexes_bytes']):>7} {_mb(s['total_bytes']):>9} "
        f"{s['n_live_tup']:>9,} {s['n_dead_tup']:>9,} {s['autovacuum_count']:>7} "
        f"{'-' if ago is None else f'{ago:.0f}s':>7} {s.get('vacuum_count', '-'):>6} {s.get('daemon_rss_mb', '-'):>7} "
        f"{s.get('daemon_cpu_percent', '-'):>6}"
    )


def plateau(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the steady samples (past the warm-up, before the last job finished): the largest size
    in the first half against the largest in the second half, per relation. Bounded means the
    second half is no larger than the first by more than 10 %."""
    if len(samples) < 4:
        return {"note": "too few steady samples to judge; run longer or sample more often"}
    half = len(samples) // 2
    first, second = samples[:half], samples[half:]
    keys = ["heap_bytes", "indexes_bytes", "total_bytes"]
    names = sorted(samples[-1]["index_bytes"])
    out: dict[str, Any] = {
        "steady_samples": len(samples),
        "from_t": samples[0]["t"],
        "to_t": samples[-1]["t"],
        "relations": {},
    }
    for key in [*keys, *names]:
        a = max(s[key] if key in keys else s["index_bytes"][key] for s in first)
        b = max(s[key] if key in keys else s["index_bytes"][key] for s in second)
        out["relations"][key] = {
            "max_first_half_bytes": a,
            "max_second_half_bytes": b,
            "ratio": round(b / a, 3) if a else None,
            "bounded": (b <= 1.10 * a) if a else b < 1024 * 1024,
        }
    out["all_bounded"] = all(r["bounded"] for r in out["relations"].values())
    return out


def verify(
    jobs: int,
    cron_ticks: int,
    by_status: dict[str, int],
    n_tup_ins: int,
    n_tup_del: int,
    pruned_logged: int,
    daemon_stats: dict[str, Any],
) -> dict[str, Any]:
    """The end-of-run checks. Besides the bench's jobs, the daemon's own cron scheduler may have
    enqueued a few (the installed app plugin declares hourly and daily schedules, on by default):
    each one it enqueued is a "schedule tick enqueued" line of its log, and is counted in."""
    inserted = jobs + cron_ticks
    remaining = sum(by_status.values())
    checks = {
        "no_live_job_left": by_status.get("pending", 0) + by_status.get("running", 0) == 0,
        "remaining_all_completed": set(by_status) <= {"completed"},
        "inserted_equals_jobs_plus_cron_ticks": n_tup_ins == inserted,
        "remaining_plus_deleted_equals_inserted": remaining + n_tup_del == inserted,
        "pruner_log_matches_deletions": pruned_logged == n_tup_del,
        "daemon_claimed_and_completed_every_job": daemon_stats["completed"] == inserted
        and daemon_stats["claimed"] == inserted,
        "daemon_no_failures": not any(daemon_stats[k] for k in ("retried", "failed", "dead", "lost_leases")),
    }
    return {
        "bench_jobs": jobs,
        "cron_ticks_enqueued_by_daemon": cron_ticks,
        "remaining_by_status": by_status,
        "remaining_rows": remaining,
        "n_tup_ins": n_tup_ins,
        "n_tup_del": n_tup_del,
        "pruner_logged_deleted": pruned_logged,
        "daemon_stats": daemon_stats,
        "checks": checks,
        "passed": all(checks.values()),
    }


async def wait_stats_settled(conn: asyncpg.Connection, within: float = 10.0) -> asyncpg.Record:
    """After the daemon's exit its backends flush their statistics as they end: wait for that."""
    deadline = time.perf_counter() + within
    while True:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            """
            SELECT s.n_tup_ins, s.n_tup_del,
                   (SELECT count(*) FROM background_jobs) AS remaining
            FROM pg_stat_user_tables AS s WHERE s.relid = 'background_jobs'::regclass
            """
        )
        if row["remaining"] + row["n_tup_del"] == row["n_tup_ins"] or time.perf_counter() > deadline:
            return row
        await asyncio.sleep(0.5)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    if embedded is not None:
        raise SystemExit("bench.soak wants a real PostgreSQL server (DATABASE_URL or 127.0.0.1:5432)")
    url = await fresh_database(server, args.database)
    conn = await asyncpg.connect(url)
    producer_conn = await asyncpg.connect(url)
    env = {
        "JOBRUNNER_DATABASE_URL": url,
        "JOBRUNNER_CONCURRENCY": str(args.concurrency),
        "JOBRUNNER_RETENTION_SECONDS": str(args.retention),
        "JOBRUNNER_PRUNE_INTERVAL": str(args.prune_interval),
        "JOBRUNNER_WORKER_ID": "soak",
        "JOBRUNNER_HTTP_PORT": "0",
        "JOBRUNNER_LOG_FORMAT": "json",
        "JOBRUNNER_LOG_LEVEL": "info",
    }
    daemon = DaemonProcess(env, "bench.noop_handlers", args.daemon_log.resolve())
    tail = args.tail if args.tail is not None else args.retention + 2 * args.prune_interval + 30
    try:
        machine = await machine_report(url)
        settings = {
            r["name"]: r["setting"] + (r["unit"] or "")
            for r in await conn.fetch("SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)", PG_SETTINGS)
        }
        reloptions = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'background_jobs'::regclass")
        naptime = float(await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'"))
        warmup = args.warmup if args.warmup is not None else args.retention + 2 * args.prune_interval + naptime
        report: dict[str, Any] = {
            "machine": machine,
            "source": source_state(),
            "postgres_settings": settings,
            "background_jobs_reloptions": reloptions,
            "parameters": {
                "jobs": args.jobs,
                "concurrency": args.concurrency,
                "retention_seconds": args.retention,
                "prune_interval_seconds": args.prune_interval,
                "prune_batch": 5000,
                "depth": args.depth,
                "batch": args.batch,
                "rate_cap_jobs_per_second": args.rate,
                "sample_every_seconds": args.sample_every,
                "tail_seconds": tail,
                "warmup_seconds": warmup,
                "database": args.database,
                "daemon_env": {k: v for k, v in env.items() if k != "JOBRUNNER_DATABASE_URL"},
                "daemon_command": f"{sys.executable} -m jobrunner run --handlers bench.noop_handlers",
            },
            "counting": "finished = enqueued - count(status in (pending, running)); sizes from pg_relation_size, "
            "pg_indexes_size, pg_total_relation_size; tuples and autovacuum from pg_stat_user_tables",
        }
        cap = f", at most {args.rate:,.0f} jobs/s" if args.rate else ""
        print(
            f"soak: {args.jobs:,} no-op jobs, one daemon process at concurrency {args.concurrency}, retention "
            f"{args.retention:g} s, prune every {args.prune_interval:g} s, depth {args.depth:,}, batches of "
            f"{args.batch:,}{cap}; PostgreSQL {machine['postgres']}, {machine['cpus']} CPUs; background_jobs "
            f"{', '.join(reloptions or [])}; autovacuum_naptime {settings.get('autovacuum_naptime')}",
            flush=True,
        )
        if settings.get("autovacuum") != "on":
            warning = (
                "WARNING: autovacuum is off on this server: the per-table autovacuum settings of background_jobs "
                "do not apply; only a VACUUM the daemon runs itself (JOBRUNNER_VACUUM=auto) reclaims dead rows"
            )
            report["warning"] = warning
            print(warning, flush=True)
        await daemon.start()
        report["daemon_start_seconds"] = round(await daemon.wait_ready(), 2)
        print(f"daemon pid {daemon.pid}, log {args.daemon_log}\n", flush=True)
        print(HEADER, flush=True)
        lock = asyncio.Lock()
        producer = Producer(producer_conn, lock, args.jobs, args.depth, args.batch, args.rate)
        cpu_before = time.process_time()
        t0 = time.perf_counter()
        producing = asyncio.create_task(producer.run())
        samples: list[dict[str, Any]] = []
        next_sample = t0
        drained_at: float | None = None
        tail_until: float | None = None
        while True:
            now = time.perf_counter()
            if now >= next_sample:
                sample = await take_sample(conn, producer, daemon, t0, samples[-1] if samples else None)
                sample["phase"] = "tail" if drained_at is not None else "production"
                samples.append(sample)
                print(sample_line(sample), flush=True)
                next_sample += args.sample_every
            if producing.done():
                producing.result()  # raises what the producer raised
            if not daemon.alive():
                raise RuntimeError(f"the daemon exited early: {daemon.tail()}")
            if drained_at is None and producing.done():
                live = await conn.fetchrow(LIVE_SQL)
                if live["pending"] + live["running"] == 0:
                    drained_at = time.perf_counter()
                    tail_until = drained_at + tail
                    print(
                        f"-- all {args.jobs:,} jobs finished at t={drained_at - t0:.1f} s; {tail:g} s of tail",
                        flush=True,
                    )
                    # a sample at the moment the last job finished
                    sample = await take_sample(conn, producer, daemon, t0, samples[-1])
                    sample["phase"] = "drained"
                    samples.append(sample)
                    print(sample_line(sample), flush=True)
            if tail_until is not None and time.perf_counter() >= tail_until:
                break
            await asyncio.sleep(1.0)
        producer_cpu = time.process_time() - cpu_before
        daemon_cpu = proc_cpu_seconds(daemon.pid)
        daemon_memory = proc_memory_kb(daemon.pid)
        final_before_stop = await take_sample(conn, producer, daemon, t0, samples[-1])
        final_before_stop["phase"] = "end"
        samples.append(final_before_stop)
        print(sample_line(final_before_stop), flush=True)
        daemon_stats = await daemon.stop()
        assert drained_at is not None and producer.done_at is not None

        # -- verification -------------------------------------------------------------------
        settled = await wait_stats_settled(conn)
        by_status = {
            r["status"]: r["n"]
            for r in await conn.fetch("SELECT status, count(*) AS n FROM background_jobs GROUP BY status")
        }
        pruned_logged = sum(e.get("deleted", 0) for e in daemon.log_events("pruned finished jobs"))
        cron_ticks = len(daemon.log_events("schedule tick enqueued"))
        report["verification"] = verify(
            args.jobs, cron_ticks, by_status, settled["n_tup_ins"], settled["n_tup_del"], pruned_logged, daemon_stats
        )
        production_seconds = drained_at - t0
        steady = [s for s in samples if s["phase"] == "production" and s["t"] >= warmup and s["enqueued"] < args.jobs]
        report["throughput"] = {
            "jobs": args.jobs,
            "seconds_first_enqueue_to_last_finished": round(production_seconds, 1),
            "jobs_per_second": round(args.jobs / production_seconds),
            "producer_done_at_seconds": round(producer.done_at - t0, 1),
            "producer_batches": producer.batches,
            "producer_enqueue_seconds": round(producer.enqueue_seconds, 1),
            "producer_found_queue_empty": producer.found_empty,
            "producer_cpu_seconds": round(producer_cpu, 1),
            "daemon_cpu_seconds": round(daemon_cpu, 1),
            "daemon_cpu_us_per_job": round(daemon_cpu / args.jobs * 1e6, 1),
            "daemon_rss_mb_end": round(daemon_memory["VmRSS"] / 1024, 1),
            "daemon_peak_rss_mb": round(daemon_memory["VmHWM"] / 1024, 1),
        }
        report["plateau"] = plateau(steady)
        report["samples"] = samples
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return report
    finally:
        daemon.kill()
        if daemon.process is not None:
            await daemon.process.wait()
        await producer_conn.close()
        await conn.close()


def print_report(report: dict[str, Any]) -> None:
    samples = report["samples"]
    t = report["throughput"]
    print(
        f"\n{t['jobs']:,} jobs in {t['seconds_first_enqueue_to_last_finished']:,} s: {t['jobs_per_second']:,} jobs/s "
        f"(first enqueue → last finished); daemon CPU {t['daemon_cpu_us_per_job']} µs/job, RSS "
        f"{t['daemon_rss_mb_end']} MB at the end (peak {t['daemon_peak_rss_mb']} MB); producer found the queue "
        f"empty {t['producer_found_queue_empty']} times"
    )
    picks = _picks(samples)
    names = sorted(samples[-1]["index_bytes"])
    print("\nsizes (MB) at start, quarter, middle, three quarters, last job finished, end of tail")
    print(f"{'':<16}" + "".join(f"{'t=' + format(s['t'], '.0f'):>11}" for s in picks))
    rows: list[tuple[str, Any]] = [
        ("heap", lambda s: _mb(s["heap_bytes"])),
        ("indexes", lambda s: _mb(s["indexes_bytes"])),
        ("total", lambda s: _mb(s["total_bytes"])),
    ]
    rows += [(short_index(n), lambda s, n=n: _mb(s["index_bytes"][n])) for n in names]
    rows += [
        ("live tuples", lambda s: f"{s['n_live_tup']:,}"),
        ("dead tuples", lambda s: f"{s['n_dead_tup']:,}"),
        ("autovacuums", lambda s: str(s["autovacuum_count"])),
        ("other vacuums", lambda s: str(s.get("vacuum_count", "-"))),
        ("finished", lambda s: f"{s['finished']:,}"),
    ]
    for label, get in rows:
        print(f"{label:<16}" + "".join(f"{get(s):>11}" for s in picks))
    p = report["plateau"]
    if "relations" in p:
        print(
            f"\nsteady state t={p['from_t']:.0f}..{p['to_t']:.0f} s ({p['steady_samples']} samples): "
            "largest size in the second half ÷ largest in the first half"
        )
        for key, r in p["relations"].items():
            label = short_index(key).removesuffix("_bytes")
            verdict = "bounded" if r["bounded"] else "GROWING"
            print(
                f"  {label:<12} {_mb(r['max_first_half_bytes']):>9} → {_mb(r['max_second_half_bytes']):>9} MB "
                f"ratio {r['ratio']}  {verdict}"
            )
        print("all bounded" if p["all_bounded"] else "NOT all bounded")
    else:
        print(f"\nplateau: {p['note']}")
    v = report["verification"]
    failed = [name for name, ok in v["checks"].items() if not ok]
    print(
        f"\nverification: {v['remaining_rows']:,} rows left {v['remaining_by_status']}, n_tup_del {v['n_tup_del']:,}, "
        f"n_tup_ins {v['n_tup_ins']:,}, pruner logged {v['pruner_logged_deleted']:,}, daemon {v['daemon_stats']}: "
        + ("PASSED" if v["passed"] else f"FAILED {failed}")
    )


def _picks(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    production = [s for s in samples if s["phase"] == "production"]
    drained = next((s for s in samples if s["phase"] == "drained"), samples[-1])
    picks = [production[min(int(len(production) * f), len(production) - 1)] for f in (0, 0.25, 0.5, 0.75)]
    picks += [drained, samples[-1]]
    unique: list[dict[str, Any]] = []
    for s in picks:
        if s not in unique:
            unique.append(s)
    return unique


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--retention", type=float, default=60.0, help="JOBRUNNER_RETENTION_SECONDS")
    parser.add_argument("--prune-interval", type=float, default=10.0, help="JOBRUNNER_PRUNE_INTERVAL")
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--depth", type=int, default=50_000, help="top the queue up while fewer jobs wait")
    parser.add_argument("--batch", type=int, default=5_000, help="jobs per enqueue_many")
    parser.add_argument("--rate", type=float, default=None, help="enqueue at most this many jobs/s (default: no cap)")
    parser.add_argument(
        "--tail", type=float, default=None, help="seconds after the last job (default: retention+2×prune+30)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="samples before this are not steady (default: retention+2×prune+naptime)",
    )
    parser.add_argument("--database", default=SOAK_DB)
    parser.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    parser.add_argument("--daemon-log", type=Path, default=Path("bench/results/soak-daemon.log"))
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {args.json}")
    return 0 if report["verification"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
