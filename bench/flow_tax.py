"""What job flows cost the work they do not concern: the completer's outcome write
(record_outcomes) of jobs outside any flow, with the flow triggers enabled and disabled, in the
same database, alternating, so that the machine's drift cancels out.

    .venv/bin/python -m bench.flow_tax --jobs 20000 --rounds 5

Each round and variant: N no-op jobs enqueued (enqueue_jobs), put in the state a claim leaves
them in (running, attempt 1), then their plain completions written as the completer writes them,
batches of 100 in id order, one transaction each, on one connection; the time of those writes
÷ N is the figure (µs per outcome, client side, so the round trips are in it: the same in both
variants). `disabled` is the table as it was before migration 0004: no trigger to consider.
The database is `jobrunner_bench_flow_tax` (dropped and recreated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import asyncpg

from bench.chaos import LOCAL_SERVER, create_chaos_database
from jobrunner.sql_files import Queries

DATABASE = "jobrunner_bench_flow_tax"
BATCH = 100
TRIGGERS = ("background_jobs_settle_dependents", "background_jobs_settle_dependents_deleted")


async def one_round(conn: asyncpg.Connection, queries: Queries, jobs: int, enabled: bool) -> float:
    """µs per outcome written, for N jobs outside any flow."""
    action = "ENABLE" if enabled else "DISABLE"
    for trigger in TRIGGERS:
        await conn.execute(f"ALTER TABLE background_jobs {action} TRIGGER {trigger}")
    await conn.execute("TRUNCATE background_jobs")
    await conn.execute(
        "SELECT count(*) FROM enqueue_jobs(array_fill('noop'::text, ARRAY[$1::int]),"
        " array_fill('{}'::jsonb, ARRAY[$1::int]), NULL, NULL, NULL, NULL, NULL, NULL)",
        jobs,
    )
    await conn.execute(
        "UPDATE background_jobs SET status = 'running', attempts = 1, started_at = now(),"
        " lease_expires_at = now() + interval '1 hour', worker_id = 'bench'"
    )
    await conn.execute("VACUUM ANALYZE background_jobs")
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM background_jobs ORDER BY id")]
    began = time.perf_counter()
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        await conn.fetch(queries.record_outcomes, batch, [1] * len(batch), [], [], [], [], [], [], [], [])
    seconds = time.perf_counter() - began
    done = await conn.fetchval("SELECT count(*) FROM background_jobs WHERE status = 'completed'")
    assert done == jobs, f"{done} of {jobs} completed"
    return seconds / jobs * 1e6


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL") or LOCAL_SERVER
    url = await create_chaos_database(server, DATABASE)
    conn = await asyncpg.connect(url)
    queries = Queries("public")
    runs: dict[str, list[float]] = {"enabled": [], "disabled": []}
    try:
        for round_ in range(args.rounds):
            # alternate which variant goes first, so that neither always follows the other
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for enabled in order:
                runs["enabled" if enabled else "disabled"].append(
                    round(await one_round(conn, queries, args.jobs, enabled), 2)
                )
    finally:
        await conn.close()
    ratios = [e / d for e, d in zip(runs["enabled"], runs["disabled"], strict=True)]
    return {
        "jobs": args.jobs,
        "batch": BATCH,
        "us_per_outcome": runs,
        "median_enabled": statistics.median(runs["enabled"]),
        "median_disabled": statistics.median(runs["disabled"]),
        "median_ratio_enabled_to_disabled": round(statistics.median(ratios), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    report = asyncio.run(main_async(parser.parse_args()))
    print(json.dumps(report, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
