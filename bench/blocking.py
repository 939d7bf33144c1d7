"""Heartbeats and /healthz while blocking handlers run: one daemon process (`python -m jobrunner
run --handlers bench.image_handlers`) runs 4 image jobs at once (a 12-megapixel PNG decoded and
thumbnailed with the app's code), written three ways: on the event loop, in the daemon's thread
pool, in its process pool. While they run the bench

- asks /healthz again and again (one request after the other) and records how long each took;
- reads the running jobs' lease_expires_at every 20 ms: each heartbeat moves it to the database's
  now() + lease_seconds, so the difference between two successive values is the time between two
  heartbeats, on the database's clock. The heartbeat is due every heartbeat_interval; its latency
  is how much later than that it came.

    .venv/bin/python -m bench.blocking --rounds 3

Writes bench/results/blocking-<UTC timestamp>.json (every sample, the settings, the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.daemon_process import DaemonProcess, source_state
from bench.run import fresh_database, machine_report, server_url

MODES = ("image_on_loop", "image_in_thread", "image_in_process")
HEARTBEAT_INTERVAL = 0.25
LEASE_SECONDS = 5.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _enqueue(conn: asyncpg.Connection, job_type: str, jobs: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO background_jobs (job_type) SELECT $1 FROM generate_series(1, $2) RETURNING id", job_type, jobs
    )
    return [row["id"] for row in rows]


async def _finished(conn: asyncpg.Connection, ids: list[int]) -> bool:
    done = await conn.fetchval(
        "SELECT count(*) FROM background_jobs WHERE id = ANY($1::bigint[]) AND finished_at IS NOT NULL", ids
    )
    return bool(done == len(ids))


async def _probe_healthz(http: httpx.AsyncClient, stop: asyncio.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        response = await http.get("/healthz", timeout=60)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"/healthz answered {response.status_code}: {response.text}")


async def _watch_leases(conn: asyncpg.Connection, ids: list[int], stop: asyncio.Event) -> dict[int, list[datetime]]:
    """Every distinct lease_expires_at each job had while running."""
    seen: dict[int, list[datetime]] = {job_id: [] for job_id in ids}
    while not stop.is_set():
        for row in await conn.fetch(
            "SELECT id, lease_expires_at FROM background_jobs WHERE id = ANY($1::bigint[]) AND status = 'running'", ids
        ):
            leases = seen[row["id"]]
            if not leases or leases[-1] != row["lease_expires_at"]:
                leases.append(row["lease_expires_at"])
        await asyncio.sleep(0.02)
    return seen


async def _until_listening(http: httpx.AsyncClient, within: float = 30.0) -> None:
    """The daemon logs "daemon started" just before its ops endpoint listens."""
    deadline = time.perf_counter() + within
    while True:
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            if time.perf_counter() > deadline:
                raise
        await asyncio.sleep(0.05)


async def run_round(url: str, http: httpx.AsyncClient, job_type: str, jobs: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    watcher_conn = await asyncpg.connect(url)
    try:
        stop = asyncio.Event()
        latencies: list[float] = []
        started = time.perf_counter()
        ids = await _enqueue(conn, job_type, jobs)
        prober = asyncio.create_task(_probe_healthz(http, stop, latencies))
        watcher = asyncio.create_task(_watch_leases(watcher_conn, ids, stop))
        while not await _finished(conn, ids):
            if prober.done() or watcher.done():
                break  # raises below
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await prober
        leases = await watcher
        statuses = [r["status"] for r in await conn.fetch("SELECT status FROM background_jobs WHERE id = ANY($1)", ids)]
    finally:
        await conn.close()
        await watcher_conn.close()
    gaps = [
        (later - earlier).total_seconds() for values in leases.values() for earlier, later in itertools.pairwise(values)
    ]
    return {
        "seconds": round(elapsed, 3),
        "statuses": statuses,
        "healthz_seconds": [round(x, 4) for x in latencies],
        "heartbeat_gaps_seconds": [round(x, 4) for x in gaps],
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    healthz = [x for r in rounds for x in r["healthz_seconds"]]
    gaps = [x for r in rounds for x in r["heartbeat_gaps_seconds"]]
    late = [max(0.0, gap - HEARTBEAT_INTERVAL) for gap in gaps]
    return {
        "jobs_seconds_median": round(statistics.median(r["seconds"] for r in rounds), 2),
        "healthz_requests": len(healthz),
        "healthz_ms_p50": round(1000 * _percentile(healthz, 0.5), 1),
        "healthz_ms_p99": round(1000 * _percentile(healthz, 0.99), 1),
        "healthz_ms_max": round(1000 * max(healthz), 1),
        "heartbeats": len(gaps),
        "heartbeat_late_ms_p50": round(1000 * _percentile(late, 0.5), 1) if late else None,
        "heartbeat_late_ms_max": round(1000 * max(late), 1) if late else None,
        "all_completed": all(status == "completed" for r in rounds for status in r["statuses"]),
    }


async def bench_mode(server: str, job_type: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    url = await fresh_database(server, args.database)
    port = _free_port()
    env = {
        "JOBRUNNER_DATABASE_URL": url,
        "JOBRUNNER_CONCURRENCY": str(args.jobs),
        "JOBRUNNER_BLOCKING_THREADS": str(args.jobs),
        "JOBRUNNER_BLOCKING_PROCESSES": str(args.jobs),
        "JOBRUNNER_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "JOBRUNNER_LEASE_SECONDS": str(LEASE_SECONDS),
        "JOBRUNNER_HTTP_PORT": str(port),
        "JOBRUNNER_WORKER_ID": f"blocking-{job_type}",
        "JOBRUNNER_LOG_FORMAT": "json",
        "JOBRUNNER_PLUGIN_SCHEDULES": "false",
    }
    daemon = DaemonProcess(env, "bench.image_handlers", log_dir / f"blocking-{job_type}.log")
    try:
        await daemon.start()
        await daemon.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await _until_listening(http)
            # warm-up: Pillow's decoders, the test image, the worker processes
            await run_round(url, http, job_type, args.jobs)
            rounds = [await run_round(url, http, job_type, args.jobs) for _ in range(args.rounds)]
        await daemon.stop()
    finally:
        daemon.kill()
        if daemon.process is not None:
            await daemon.process.wait()
    return {
        "summary": summarize(rounds),
        "rounds": rounds,
        "daemon_env": {k: v for k, v in env.items() if "URL" not in k},
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    if embedded is not None:
        raise SystemExit("bench.blocking wants a real PostgreSQL server (DATABASE_URL or 127.0.0.1:5432)")
    report: dict[str, Any] = {
        "machine": await machine_report(server),
        "source": source_state(),
        "parameters": {"jobs": args.jobs, "rounds": args.rounds, "heartbeat_interval": HEARTBEAT_INTERVAL},
        "modes": {},
    }
    print(f"{args.jobs} image jobs at once, {args.rounds} rounds per mode; heartbeat due every {HEARTBEAT_INTERVAL}s")
    header = (
        f"{'mode':<18} {'jobs s':>7} {'healthz p50 ms':>15} {'p99':>8} {'max':>8} {'beat late p50 ms':>17} {'max':>8}"
    )
    print(header)
    for job_type in args.modes.split(","):
        result = await bench_mode(server, job_type, args, args.log_dir)
        report["modes"][job_type] = result
        s = result["summary"]
        print(
            f"{job_type:<18} {s['jobs_seconds_median']:>7} {s['healthz_ms_p50']:>15} {s['healthz_ms_p99']:>8}"
            f" {s['healthz_ms_max']:>8} {s['heartbeat_late_ms_p50']!s:>17} {s['heartbeat_late_ms_max']!s:>8}",
            flush=True,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", default="jobrunner_bench_blocking")
    parser.add_argument("--log-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path("bench/results") / f"blocking-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
