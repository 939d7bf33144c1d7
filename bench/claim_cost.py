"""What one claim costs in the database, beside a bare claim, with 0, 5 and 10 limited job
types declared and none of their jobs waiting.

    .venv/bin/python -m bench.claim_cost --waiting 1000 --claims 300

Each claim runs in a transaction that is rolled back (nothing is claimed for good, no commit is
timed), on one connection, against `--waiting` runnable no-op jobs. The bare claim is one
`UPDATE … WHERE id = ANY(ARRAY(SELECT … ORDER BY priority DESC, scheduled_at, id LIMIT n FOR
UPDATE SKIP LOCKED)) RETURNING …`, what bench/bare_loop.py runs. Medians in µs; the ratios to
the bare claim are the figures to compare across runs (the machine drifts).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench.run import fresh_database, server_url
from jobrunner.limits import GlobalLimits
from jobrunner.store import ClaimPlan, JobStore, LimitedType

BARE_CLAIM = """
UPDATE background_jobs
SET status = 'running', attempts = attempts + 1, started_at = now(),
    lease_expires_at = now() + interval '30 seconds', worker_id = 'bench'
WHERE id = ANY(ARRAY(
    SELECT id FROM background_jobs
    WHERE status = 'pending' AND queue = 'default' AND scheduled_at <= now()
    ORDER BY priority DESC, scheduled_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED))
RETURNING id, job_type, queue, payload::text, priority, attempts, max_attempts, created_at, scheduled_at, dedupe_key
"""
DATABASE = "jobrunner_bench_claim"
Claim = Callable[[], Awaitable[None]]


def plan(batch: int, limited_types: int) -> ClaimPlan:
    types = [
        LimitedType(f"limited_{n}", 1 if n % 2 else None, GlobalLimits(max_running=5) if n % 2 == 0 else None)
        for n in range(limited_types)
    ]
    return ClaimPlan(["default"], batch, limited_limit=batch, limited_types=types)


async def medians_us(conn: asyncpg.Connection, claims: int, variants: dict[str, Claim]) -> dict[str, float]:
    """Median µs of each variant's claim. The variants take turns, claim by claim: every rolled
    back claim leaves dead row versions the next walks step over, so a variant measured after
    another would pay for the other's."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(claims + 10):
        for name, claim in variants.items():
            transaction = conn.transaction()
            await transaction.start()
            try:
                started = time.perf_counter()
                await claim()
                times[name].append(time.perf_counter() - started)
            finally:
                await transaction.rollback()
    # the first ones plan the statements
    return {name: statistics.median(measured[10:]) * 1e6 for name, measured in times.items()}


async def measure(url: str, waiting: int, claims: int, batches: list[int]) -> list[dict[str, float]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"INSERT INTO background_jobs (job_type) SELECT 'noop' FROM generate_series(1, {waiting})")
        await conn.execute("VACUUM ANALYZE background_jobs")
        store = JobStore(conn, "public")  # type: ignore[arg-type]
        rows: list[dict[str, float]] = []
        for batch in batches:

            async def bare(batch: int = batch) -> None:
                assert len(await conn.fetch(BARE_CLAIM, batch)) == batch

            variants: dict[str, Claim] = {"bare": bare}
            for limited in (0, 5, 10):

                async def ours(batch: int = batch, limited: int = limited) -> None:
                    claimed = await store.claim("bench", 30.0, plan(batch, limited))
                    assert len(claimed.all) == batch

                variants[f"limited {limited}"] = ours
            rows.append({"batch": batch, **await medians_us(conn, claims, variants)})
            await conn.execute("VACUUM background_jobs")
        return rows
    finally:
        await conn.close()


def print_table(rows: list[dict[str, float]]) -> None:
    print("claim cost in the database, median µs (÷ bare claim)")
    print(f"{'batch':>6} {'bare':>8} {'0 limited':>16} {'5 limited':>16} {'10 limited':>16}")
    for row in rows:
        bare = row["bare"]
        cells = [f"{row[f'limited {n}']:8.0f} ({row[f'limited {n}'] / bare:4.2f})" for n in (0, 5, 10)]
        print(f"{int(row['batch']):>6} {bare:8.0f} " + " ".join(f"{c:>16}" for c in cells))


async def main_async(args: argparse.Namespace) -> None:
    server, embedded = await server_url()
    try:
        url = await fresh_database(server, DATABASE)
        rows = await measure(url, args.waiting, args.claims, [int(b) for b in args.batches.split(",")])
        print_table(rows)
    finally:
        if embedded is not None:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--batches", default="1,10,100")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
