"""Enqueue throughput through jobrunner's public client API, beside bare INSERTs and pgqueuer,
in the same run.

    .venv/bin/python -m bench.enqueue --rounds 5

Each round measures every figure once, one after the other (the machine's drift touches all
alike), each on an emptied table (TRUNCATE):

bulk: --jobs jobs in batches of --batch, each batch one statement and one commit
- bare into a plain table: `INSERT … SELECT FROM unnest($1::text[], $2::jsonb[])` into a table
  with an identity key and no other index, constraint, trigger or row security;
- bare into background_jobs: the same statement into jobrunner's own table, with its indexes,
  constraints, generated column and NOTIFY trigger (the honest ceiling for jobrunner);
- jobrunner: `AsyncClient.enqueue_many(batch)`: validation, JSON encoding, enqueue_jobs();
- pgqueuer: `Queries.enqueue` with lists (bench/peers/pgqueuer_enqueue.py, its own database).

one by one: --single jobs, one statement and one commit each
- bare: a prepared `INSERT INTO background_jobs (job_type, payload) VALUES ($1, $2) RETURNING id`;
- jobrunner: `AsyncClient.enqueue(job_type, payload)` on the same connection; the two take turns
  job by job, so that drift in the commit's wait for the disk does not show up as their ratio;
- pgqueuer: `Queries.enqueue` with scalars;
- and the first two again inside transactions of 100 pairs of jobs: with synchronous_commit on, each
  commit waits for the disk (milliseconds on this shared machine), which hides what the calls
  themselves cost.

Every job carries the same small payload, `{"user_id": i, "image": "i/photo.jpg"}`: jobrunner
gets it as a dict (its client validates and encodes it), the bare INSERTs as JSON text, pgqueuer
as bytes. Inputs are built before the clock starts, for every system. Every statement runs as
the bench's login (the tables' owner, whom row security does not apply to), each in its own
transaction. Figures are medians over the rounds; ratios are the median of each round's ratio
to the bare INSERT into background_jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.compare import ensure_peers_venv
from bench.peers.harness import with_database
from bench.run import fresh_database, machine_report, server_url
from jobrunner import AsyncClient, NewJob

ENQUEUE_DB = "jobrunner_bench_enqueue"
PEER_DB = "bench_pgqueuer_enqueue"
REPO = Path(__file__).resolve().parent.parent
BLOCK = 100

PLAIN_TABLE = """
CREATE TABLE bench_plain_jobs (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_type text   NOT NULL,
    payload  jsonb  NOT NULL
)
"""
BARE_BULK = "INSERT INTO {table} (job_type, payload) SELECT * FROM unnest($1::text[], $2::jsonb[])"
BARE_ONE = "INSERT INTO background_jobs (job_type, payload) VALUES ($1, $2::jsonb) RETURNING id"


def payload(i: int) -> dict[str, Any]:
    return {"user_id": i, "image": f"{i}/photo.jpg"}


def batches_of(jobs: int, batch: int) -> list[range]:
    return [range(first, min(first + batch, jobs)) for first in range(0, jobs, batch)]


async def bulk_bare(conn: asyncpg.Connection, table: str, jobs: int, batch: int) -> float:
    statement = await conn.prepare(BARE_BULK.format(table=table))
    inputs = [(["noop"] * len(b), [json.dumps(payload(i)) for i in b]) for b in batches_of(jobs, batch)]
    await conn.execute(f"TRUNCATE {table}")
    started = time.perf_counter()
    for job_types, payloads in inputs:
        await statement.fetch(job_types, payloads)
    return jobs / (time.perf_counter() - started)


async def bulk_jobrunner(conn: asyncpg.Connection, jobs: int, batch: int) -> float:
    client = AsyncClient(conn)
    inputs = [[NewJob("noop", payload(i)) for i in b] for b in batches_of(jobs, batch)]
    await conn.execute("TRUNCATE background_jobs")
    started = time.perf_counter()
    for new_jobs in inputs:
        await client.enqueue_many(new_jobs)
    return jobs / (time.perf_counter() - started)


async def single_pair(conn: asyncpg.Connection, jobs: int, *, in_transaction: bool) -> tuple[float, float]:
    """(jobrunner, bare) jobs per second, the two taking turns job by job, so that the drift of
    the commit's wait for this shared disk (milliseconds, changing from one second to the next)
    touches both alike. Each job is its own commit, or (in_transaction) every BLOCK pairs of
    jobs are one transaction, which leaves the disk out and shows what each call costs."""
    client = AsyncClient(conn)
    bare = await conn.prepare(BARE_ONE)
    payloads = [payload(i) for i in range(jobs)]
    texts = [json.dumps(p) for p in payloads]
    await conn.execute("TRUNCATE background_jobs")
    calls = (lambda i: client.enqueue("noop", payloads[i]), lambda i: bare.fetchval("noop", texts[i]))
    spent = [0.0, 0.0]
    for block in batches_of(jobs, BLOCK):
        async with conn.transaction() if in_transaction else contextlib.nullcontext():
            for i in block:
                # which goes first alternates too: the second of a pair ran measurably slower
                for who in (0, 1) if i % 2 else (1, 0):
                    started = time.perf_counter()
                    await calls[who](i)
                    spent[who] += time.perf_counter() - started
    return jobs / spent[0], jobs / spent[1]


def peer(url: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [str(ensure_peers_venv()), "-m", "bench.peers.pgqueuer_enqueue", "--url", url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"pgqueuer's enqueue bench exited with {done.returncode}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def one_round(url: str, peer_url: str | None, args: argparse.Namespace) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        figures = {
            "bulk_bare_plain": await bulk_bare(conn, "bench_plain_jobs", args.jobs, args.batch),
            "bulk_bare": await bulk_bare(conn, "background_jobs", args.jobs, args.batch),
            "bulk_jobrunner": await bulk_jobrunner(conn, args.jobs, args.batch),
        }
        figures["single_jobrunner"], figures["single_bare"] = await single_pair(conn, args.single, in_transaction=False)
        figures["single_tx_jobrunner"], figures["single_tx_bare"] = await single_pair(
            conn, args.single, in_transaction=True
        )
        await conn.execute("TRUNCATE background_jobs, bench_plain_jobs")
    finally:
        await conn.close()
    if peer_url is not None:
        figures["bulk_pgqueuer"] = peer(peer_url, "--bulk", str(args.jobs), "--batch", str(args.batch))[
            "bulk_per_second"
        ]
        figures["single_pgqueuer"] = peer(peer_url, "--single", str(args.single))["single_per_second"]
    return figures


async def prepare(args: argparse.Namespace) -> tuple[str, str | None, dict[str, Any]]:
    server, embedded = await server_url()
    if embedded is not None:
        raise SystemExit("bench.enqueue needs a PostgreSQL server (DATABASE_URL or 127.0.0.1:5432)")
    url = await fresh_database(server, ENQUEUE_DB)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(PLAIN_TABLE)
    finally:
        await conn.close()
    peer_url = None
    if args.peer:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{PEER_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{PEER_DB}"')
        finally:
            await admin.close()
        peer_url = with_database(server, PEER_DB)
        peer(peer_url, "--install")
    return url, peer_url, await machine_report(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per bulk figure")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--single", type=int, default=2_000, help="jobs per one-by-one figure")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="leave pgqueuer out")
    parser.add_argument("--json", type=Path, default=Path("bench/results/enqueue.json"))
    args = parser.parse_args()

    url, peer_url, machine = asyncio.run(prepare(args))
    rounds = [asyncio.run(one_round(url, peer_url, args)) for _ in range(args.rounds)]
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {"machine": machine, "settings": vars(args) | {"json": str(args.json)}, "rounds": rounds}
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    m, s, rounds = report["machine"], report["settings"], report["rounds"]
    print(
        f"machine: {m['cpus']} CPUs, Python {m['python']}, PostgreSQL {m['postgres']} "
        f"(synchronous_commit={m['synchronous_commit']}), asyncpg {m['asyncpg']}, "
        f"load average {m['load_average']} before, {m['load_average_after']} after"
    )

    def row(label: str, key: str, baseline: str) -> None:
        if key not in rounds[0]:
            return
        rate = statistics.median(r[key] for r in rounds)
        ratio = statistics.median(r[key] / r[baseline] for r in rounds)
        print(f"  {label:48} {rate:>10,.0f} {ratio:>7.2f}")

    print(f"\nenqueue, medians of {len(rounds)} rounds   {'jobs/s':>22} {'ratio':>7}")
    print(f"bulk, {s['jobs']:,} jobs in batches of {s['batch']:,} (ratio to the bare INSERT into background_jobs)")
    row("bare INSERT … unnest, plain table", "bulk_bare_plain", "bulk_bare")
    row("bare INSERT … unnest, background_jobs", "bulk_bare", "bulk_bare")
    row("jobrunner AsyncClient.enqueue_many", "bulk_jobrunner", "bulk_bare")
    row("pgqueuer Queries.enqueue (lists)", "bulk_pgqueuer", "bulk_bare")
    print(f"one by one, {s['single']:,} jobs, one commit each (ratio to the bare INSERT … RETURNING id)")
    row("bare INSERT … RETURNING id, background_jobs", "single_bare", "single_bare")
    row("jobrunner AsyncClient.enqueue", "single_jobrunner", "single_bare")
    row("pgqueuer Queries.enqueue", "single_pgqueuer", "single_bare")
    print(f"one by one, {s['single']:,} jobs, in transactions of {BLOCK} of each (no wait for the disk per job)")
    row("bare INSERT … RETURNING id, background_jobs", "single_tx_bare", "single_tx_bare")
    row("jobrunner AsyncClient.enqueue", "single_tx_jobrunner", "single_tx_bare")


if __name__ == "__main__":
    sys.exit(main())
