"""The method every peer script follows, so the figures of all systems mean the same thing.

A peer script (bench/peers/*_bench.py) describes how its library installs, enqueues, drains and
picks up; `main` runs the workloads in the same order and with the same clocks as jobrunner's
bench/run.py, and prints one JSON object on stdout (the last line; logs go to stderr).
bench/compare.py runs each script with the peers' virtualenv python:

    bench/.venv-peers/bin/python -m bench.peers.pgqueuer_bench --server postgresql://… --jobs 2000

Every drain, single-enqueue and latency run gets a freshly created database with only the
library's own schema in it. A drain counts only when a SQL count in the library's own tables
says that all N jobs are done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.latency import latency_summary, sample_from_enqueue_call, sample_pickups

# (the public enqueue call of one "pickup" job: commits, returns the job's id; the worker's task)
IdleWorker = tuple[Callable[[], Awaitable[Any]], asyncio.Task[Any]]


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    database: str
    install: Callable[[str], Awaitable[None]]
    # url, jobs: N no-op jobs in as few statements as the library offers
    enqueue_bulk: Callable[[str, int], Awaitable[None]]
    # url, jobs, concurrency: one worker until nothing is left, then return
    drain: Callable[[str, int, int], Awaitable[None]]
    # url: how many no-op jobs the library's own tables say are done
    count_done: Callable[[str], Awaitable[int]]
    # url, jobs: one call (one commit) per job
    enqueue_single: Callable[[str, int], Awaitable[None]]
    # url: a worker idle on LISTEN whose "pickup" handler records started[id] = time.perf_counter()
    # first thing, and the library's enqueue call on a connection of the bench's (bench.latency)
    idle_worker: Callable[[str], AbstractAsyncContextManager[IdleWorker]]
    started: dict[Any, float]
    # the settings chosen for it (and why), reported with the figures
    settings: dict[str, Any] = field(default_factory=dict)


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def fresh_database(server: str, database: str) -> str:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    return with_database(server, database)


async def sql_count(url: str, query: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(query)
        return count
    finally:
        await conn.close()


async def _drain_run(peer: Peer, server: str, jobs: int, concurrency: int) -> dict[str, Any]:
    url = await fresh_database(server, peer.database)
    await peer.install(url)
    started = time.perf_counter()
    await peer.enqueue_bulk(url, jobs)
    enqueue_seconds = time.perf_counter() - started
    await _vacuum(url)
    cpu_before = time.process_time()
    started = time.perf_counter()
    await peer.drain(url, jobs, concurrency)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    done = await peer.count_done(url)
    if done != jobs:
        raise RuntimeError(f"{peer.name}: drain verification failed: {done} of {jobs} done")
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(jobs / elapsed),
        "worker_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "verified_completed": done,
        "bulk_enqueue_per_second": round(jobs / enqueue_seconds),
    }


async def _vacuum(url: str) -> None:
    # as bench/run.py does before a drain: fresh statistics, the planner sees N runnable rows
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def run_peer(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"system": peer.name, "version": peer.version, "settings": peer.settings, "drain": []}
    for concurrency in args.concurrency:
        runs = [await _drain_run(peer, args.server, args.jobs, concurrency) for _ in range(args.repeat)]
        report["drain"].append({"concurrency": concurrency, "runs": runs})
    single = []
    for _ in range(args.repeat):
        url = await fresh_database(args.server, peer.database)
        await peer.install(url)
        started = time.perf_counter()
        await peer.enqueue_single(url, args.single)
        single.append(round(args.single / (time.perf_counter() - started)))
    report["enqueue_single_per_second"] = single
    url = await fresh_database(args.server, peer.database)
    await peer.install(url)
    async with peer.idle_worker(url) as (enqueue_one, worker):
        report["pickup"] = latency_summary(await sample_pickups(enqueue_one, peer.started, args.samples, worker))
    url = await fresh_database(args.server, peer.database)
    await peer.install(url)
    async with peer.idle_worker(url) as (enqueue_one, worker):
        spans = await sample_from_enqueue_call(enqueue_one, peer.started, args.samples, worker)
    report["pickup_from_call"] = {span: latency_summary(values) for span, values in spans.items()}
    admin = await asyncpg.connect(args.server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{peer.database}" WITH (FORCE)')
    finally:
        await admin.close()
    return report


def main(peer: Peer) -> int:
    parser = argparse.ArgumentParser(description=f"{peer.name} side of bench/compare.py")
    parser.add_argument("--server", required=True, help="a URL of the server (any database); ours is created there")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    report = asyncio.run(run_peer(peer, args))
    sys.stdout.write(json.dumps(report) + "\n")
    return 0
