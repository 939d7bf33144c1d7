"""jobrunner side by side with procrastinate and pgqueuer, on one machine, in one run.

    .venv/bin/python -m bench.compare --jobs 20000 --concurrency 10,100 --repeat 3

jobrunner's figures come from bench/run.py's own workloads (drain in burst mode, enqueue,
idle pick-up) plus drains by 1, 2 and 4 real daemon processes (`python -m jobrunner run
--burst`); the peers' from bench/peers/*_bench.py, run with bench/.venv-peers/bin/python (the
virtualenv is created here on first run from bench/requirements-peers.txt, and rebuilt when
that file changes). Medians of --repeat runs; every drain is verified by a SQL count in the
system's own tables. Prints a table with ratios (jobrunner ÷ peer), then bench/side_by_side.py's
table (jobrunner, jobrunner with the app plugin, the bare SKIP LOCKED loop, the best peer, each
÷ the bare loop), writes bench/results/compare-<timestamp>.json and bench/results/compare.png.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

from bench.run import (
    bench_drain,
    bench_enqueue,
    bench_pickup,
    fresh_database,
    machine_report,
    median_run,
    server_url,
)
from bench.side_by_side import SideBySideConfig, print_side_by_side, side_by_side_on
from jobrunner import NewJob
from jobrunner.client import AsyncClient
from jobrunner.logs import configure_logging

REPO = Path(__file__).resolve().parent.parent
PEERS_VENV = REPO / "bench" / ".venv-peers"
PEERS_REQUIREMENTS = REPO / "bench" / "requirements-peers.txt"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEER_SCRIPTS = {"procrastinate": "bench.peers.procrastinate_bench", "pgqueuer": "bench.peers.pgqueuer_bench"}
REPLICAS_DB = "jobrunner_bench_replicas"


# -- the peers' virtualenv ------------------------------------------------------------------


def ensure_peers_venv() -> Path:
    """bench/.venv-peers with exactly bench/requirements-peers.txt; a stamp of the file's hash
    says whether the installed set is current."""
    wanted = hashlib.sha256(PEERS_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = PEERS_VENV / "requirements.sha256"
    if PEERS_PYTHON.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return PEERS_PYTHON
    print(f"creating {PEERS_VENV.relative_to(REPO)} from {PEERS_REQUIREMENTS.relative_to(REPO)} …", file=sys.stderr)
    # the base interpreter of our own venv: the same Python version for every system measured
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(PEERS_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(PEERS_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted + "\n")
    return PEERS_PYTHON


def run_peer(name: str, server: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        str(ensure_peers_venv()),
        "-m",
        PEER_SCRIPTS[name],
        "--server",
        server,
        "--jobs",
        str(args.jobs),
        "--concurrency",
        ",".join(map(str, args.concurrency)),
        "--repeat",
        str(args.repeat),
        "--single",
        str(args.single),
        "--samples",
        str(args.samples),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"{name}: its bench exited with {done.returncode}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


# -- jobrunner ------------------------------------------------------------------------------


async def jobrunner_report(server: str, args: argparse.Namespace) -> dict[str, Any]:
    """The same workloads as the peers', from bench/run.py: each drain on a fresh database."""
    report: dict[str, Any] = {
        "system": "jobrunner",
        "version": version("jobrunner"),
        "settings": {
            "daemon": "Daemon(burst=True) in the bench's process, every feature on (leases, heartbeats, "
            "retries, LISTEN, rescuer, pruner, scheduler, metrics, logging at info)",
            "bulk_enqueue": "AsyncClient.enqueue_many (one statement)",
            "single_enqueue": "AsyncClient.enqueue (one commit each)",
            "pickup": "daemon concurrency 10, poll_interval=30s",
        },
        "drain": [],
    }
    for concurrency in args.concurrency:
        runs = [await bench_drain(await fresh_database(server), args.jobs, concurrency) for _ in range(args.repeat)]
        report["drain"].append({"concurrency": concurrency, "runs": runs})
    url = await fresh_database(server)
    enqueues = [await bench_enqueue(url, args.single, args.jobs) for _ in range(args.repeat)]
    report["enqueue_single_per_second"] = [e["single_client_per_second"] for e in enqueues]
    report["bare_insert_per_second"] = [e["single_bare_insert_per_second"] for e in enqueues]
    report["pickup"] = await bench_pickup(url, args.samples)
    return report


async def replicas_run(server: str, jobs: int, concurrency: int, replicas: int) -> dict[str, Any]:
    """N jobs drained by `replicas` real daemon processes; throughput over the span from the
    first claim to the last completion (from the rows), and over the wall time (process start
    included)."""
    url = await fresh_database(server, REPLICAS_DB)
    conn = await asyncpg.connect(url)
    processes: list[asyncio.subprocess.Process] = []
    try:
        await AsyncClient(conn).enqueue_many([NewJob("noop") for _ in range(jobs)])
        await conn.execute("VACUUM ANALYZE background_jobs")
        env = {
            **os.environ,
            "JOBRUNNER_DATABASE_URL": url,
            "JOBRUNNER_CONCURRENCY": str(concurrency),
            "JOBRUNNER_HTTP_PORT": "0",  # each replica its own free port for /metrics
            "JOBRUNNER_LOG_FORMAT": "json",
            "JOBRUNNER_LOG_LEVEL": "info",
        }
        command = [sys.executable, "-m", "jobrunner", "run", "--burst", "--handlers", "bench.noop_handlers"]
        started = time.perf_counter()
        for _ in range(replicas):
            processes.append(
                await asyncio.create_subprocess_exec(
                    *command, cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
                )
            )
        outcomes = await asyncio.gather(*(p.communicate() for p in processes))
        wall = time.perf_counter() - started
        codes = [p.returncode for p in processes]
        if any(codes):
            stderr = b"".join(err for _, err in outcomes).decode(errors="replace")
            raise RuntimeError(f"replicas: a daemon exited with {codes}: {stderr[-2000:]}")
        row = await conn.fetchrow(
            """
            SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                   count(DISTINCT worker_id) AS workers,
                   extract(epoch FROM max(finished_at) - min(started_at)) AS span
            FROM background_jobs WHERE job_type = 'noop'
            """
        )
        assert row is not None  # an aggregate returns one row
    finally:
        await conn.close()
        for p in processes:
            if p.returncode is None:  # only when the bench itself failed mid-run
                p.kill()
                await p.wait()
    if row["completed"] != jobs:
        raise RuntimeError(f"replicas verification failed: {row['completed']} of {jobs} completed")
    span = float(row["span"])
    return {
        "replicas": replicas,
        "concurrency_each": concurrency,
        "jobs": jobs,
        "verified_completed": row["completed"],
        "workers_seen": row["workers"],
        "span_seconds": round(span, 3),
        "jobs_per_second": round(jobs / span),
        "wall_seconds": round(wall, 3),
        "wall_jobs_per_second": round(jobs / wall),
    }


# -- summary --------------------------------------------------------------------------------


def summarize(system: dict[str, Any]) -> dict[str, Any]:
    drains = {d["concurrency"]: median_run(d["runs"]) for d in system["drain"]}
    bulk = [r["bulk_enqueue_per_second"] for d in system["drain"] for r in d["runs"]]
    return {
        "drain_jobs_per_second": {c: r["jobs_per_second"] for c, r in drains.items()},
        # CPU of the worker's process per job (jobrunner's key says daemon, the peers' worker)
        "cpu_us_per_job": {
            c: r.get("daemon_cpu_us_per_job", r.get("worker_cpu_us_per_job")) for c, r in drains.items()
        },
        "enqueue_single_per_second": round(statistics.median(system["enqueue_single_per_second"])),
        "enqueue_bulk_per_second": round(statistics.median(bulk)),
        "pickup_p50_ms": system["pickup"]["p50_ms"],
        "pickup_p99_ms": system["pickup"]["p99_ms"],
        # the peers' enqueue call → handler start (bench.latency.sample_from_enqueue_call);
        # jobrunner's is in the side-by-side report
        "pickup_from_call": system.get("pickup_from_call"),
    }


def peers_for_side_by_side(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The peers' figures in the shape of a side-by-side summary (bench.side_by_side)."""
    return {
        name: {
            "drain_jobs_per_second": s["drain_jobs_per_second"],
            "cpu_us_per_job": s["cpu_us_per_job"],
            "pickup": s["pickup_from_call"] or {},
        }
        for name, s in report["systems"].items()
        if name != "jobrunner"
    }


def _ratio(ours: float, theirs: float, lower_is_better: bool) -> str:
    if not theirs or not ours:
        return "-"
    # for latencies the ratio is still jobrunner ÷ peer: below 1 means jobrunner is faster
    return f"{ours / theirs:.2f}" + ("↓" if lower_is_better else "")


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; load average "
        f"{' '.join(map(str, m['load_average']))} before, {' '.join(map(str, report['load_average_after']))} after"
    )
    print(
        f"PostgreSQL {m['postgres']} on the same machine: synchronous_commit={m['synchronous_commit']}, "
        f"shared_buffers={m['shared_buffers']}"
    )
    systems = report["systems"]
    names = list(systems)
    print("versions: " + ", ".join(f"{n} {report['raw'][n]['version']}" for n in names))
    print(
        f"{report['parameters']['jobs']:,} no-op jobs per drain, one worker process, "
        f"medians of {report['parameters']['repeat']} runs\n"
    )
    peers = names[1:]
    header = f"{'':<30}" + "".join(f"{n:>15}" for n in names) + "".join(f"{'÷ ' + p:>17}" for p in peers)
    print(header)
    print("-" * len(header))
    rows: list[tuple[str, str, bool]] = [
        (f"drain c={c} (jobs/s)", f"drain:{c}", False) for c in report["parameters"]["concurrency"]
    ]
    rows += [
        ("enqueue one by one (jobs/s)", "enqueue_single_per_second", False),
        ("enqueue bulk (jobs/s)", "enqueue_bulk_per_second", False),
        ("pick-up p50 (ms)", "pickup_p50_ms", True),
        ("pick-up p99 (ms)", "pickup_p99_ms", True),
    ]
    for label, key, lower in rows:
        values = []
        for n in names:
            s = systems[n]
            values.append(s["drain_jobs_per_second"][int(key[6:])] if key.startswith("drain:") else s[key])
        cells = "".join(f"{v:>15,}" if isinstance(v, int) else f"{v:>15}" for v in values)
        ratios = "".join(f"{_ratio(values[0], v, lower):>17}" for v in values[1:])
        print(f"{label:<30}{cells}{ratios}")
    print("(ratio = jobrunner ÷ peer; ↓: lower is better, so below 1 favours jobrunner)")
    print("(pick-up here: commit → handler start, bench.latency.sample_pickups; the side-by-side table has both spans)")
    replicas = report.get("replicas") or []
    if replicas:
        each = replicas[0]["concurrency_each"]
        print(f"\njobrunner, real daemon processes (`jobrunner run --burst`), concurrency {each} each")
        print(f"{'replicas':>9} {'jobs/s (first claim→last completion)':>38} {'jobs/s (wall, with start-up)':>30}")
        for r in replicas:
            print(f"{r['replicas']:>9} {r['jobs_per_second']:>38,} {r['wall_jobs_per_second']:>30,}")
        one = next((r for r in replicas if r["replicas"] == 1), None)
        two = next((r for r in replicas if r["replicas"] == 2), None)
        if one and two:
            verdict = "not slower" if two["jobs_per_second"] >= one["jobs_per_second"] else "SLOWER"
            print(f"two processes vs one: {two['jobs_per_second'] / one['jobs_per_second']:.2f}× ({verdict})")


# -- main -----------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server, embedded = await server_url()
    try:
        machine = await machine_report(server)  # with the load average before the first run
        raw: dict[str, Any] = {"jobrunner": await jobrunner_report(server, args)}
        side_by_side = None
        if args.side_by_side:
            side_by_side = await side_by_side_on(
                server,
                SideBySideConfig(
                    jobs=args.jobs, concurrency=tuple(args.concurrency), rounds=args.repeat, samples=args.samples
                ),
            )
        for name in args.peers:
            print(f"running {name} …", file=sys.stderr)
            raw[name] = await asyncio.to_thread(run_peer, name, server, args)
        replicas = []
        for count in args.replicas:
            runs = [await replicas_run(server, args.jobs, args.replica_concurrency, count) for _ in range(args.repeat)]
            replicas.append(median_run(runs))
        return {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "parameters": {
                "jobs": args.jobs,
                "concurrency": args.concurrency,
                "repeat": args.repeat,
                "single": args.single,
                "samples": args.samples,
                "replicas": args.replicas,
                "replica_concurrency": args.replica_concurrency,
            },
            "systems": {name: summarize(system) for name, system in raw.items()},
            "replicas": replicas,
            "side_by_side": side_by_side,
            "raw": raw,
        }
    finally:
        if embedded is not None:
            embedded.stop()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=_ints, default=[10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single", type=int, default=2_000, help="jobs enqueued one by one")
    parser.add_argument("--samples", type=int, default=300, help="pick-up latency samples")
    parser.add_argument("--peers", type=lambda s: [x for x in s.split(",") if x], default=list(PEER_SCRIPTS))
    parser.add_argument("--replicas", type=_ints, default=[1, 2, 4], help="daemon processes (empty: skip)")
    parser.add_argument("--replica-concurrency", type=int, default=100)
    parser.add_argument(
        "--side-by-side",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="jobrunner, with the app plugin, with 10 limits, and the bare loop in rounds (bench.side_by_side)",
    )
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    unknown = set(args.peers) - set(PEER_SCRIPTS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    # as bench/run.py: jobrunner logs at info (its start and stop lines; none per job)
    configure_logging("json", "info")
    peers_python = ensure_peers_venv()
    report = asyncio.run(main_async(args))
    print_table(report)
    if report["side_by_side"]:
        print_side_by_side(report["side_by_side"], peers_for_side_by_side(report))
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.results / f"compare-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2))
    png_path = args.results / "compare.png"
    subprocess.run([str(peers_python), "-m", "bench.plot", str(json_path), str(png_path)], cwd=REPO, check=True)
    print(f"\nJSON: {json_path}\nplot: {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
