"""Where enqueueing's time goes: the table's features one by one, the client's steps, WAL.

    .venv/bin/python -m bench.enqueue_profile --batches 40

Every figure is microseconds per job of a batch of 1,000 (`INSERT … SELECT FROM unnest` of job
types and payloads, as bench/enqueue.py's bare INSERT), the variants taking turns batch by batch
so that the machine's drift touches all alike; each is shown as the fastest batch (what the work
costs when nothing else gets in its way) and the median. On a fresh database:

- the table: a plain table (identity key, job_type, payload); background_jobs; a copy of it
  (`LIKE … INCLUDING ALL`: columns, defaults, checks, generated column, indexes, fill factor;
  no trigger, no row security) and that copy without one feature at a time, or with the NOTIFY
  trigger added. A feature's cost is its variant's difference to the copy.
- the client: NewJob.validated for each job, the `enqueue_batch` query with the columns already
  built, and AsyncClient.enqueue_many as a whole, beside the bare INSERT into background_jobs.
- WAL bytes per job of each statement (EXPLAIN (ANALYZE, WAL); independent of the load).
- the NOTIFY trigger's own time in a one-row and a 1,000-row INSERT (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.enqueue import ENQUEUE_DB, payload
from bench.run import fresh_database, server_url
from jobrunner import AsyncClient, NewJob
from jobrunner.new_job import bulk_columns
from jobrunner.sql_files import Queries

BATCH = 1000
COPY = "CREATE TABLE {t} (LIKE background_jobs INCLUDING ALL)"
DROP_INDEXES = (
    "DO $$ DECLARE r record; BEGIN FOR r IN SELECT indexrelid::regclass AS i FROM pg_index"
    " WHERE indrelid = '{t}'::regclass AND NOT indisprimary AND pg_get_indexdef(indexrelid) LIKE '{like}'"
    " LOOP EXECUTE 'DROP INDEX ' || r.i; END LOOP; END $$"
)
DROP_CHECKS = (
    "DO $$ DECLARE r record; BEGIN FOR r IN SELECT conname FROM pg_constraint WHERE conrelid = '{t}'::regclass"
    " AND contype = 'c' AND conname <> 'background_jobs_payload_size_check'"
    " LOOP EXECUTE 'ALTER TABLE {t} DROP CONSTRAINT ' || r.conname; END LOOP; END $$"
)
# variant -> (table, statements that make it from nothing)
TABLES: dict[str, tuple[str, list[str]]] = {
    "plain table (id, job_type, payload)": (
        "profile_plain",
        [
            "CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_type text NOT NULL,"
            " payload jsonb NOT NULL)"
        ],
    ),
    "background_jobs": ("background_jobs", []),
    "copy of background_jobs": ("profile_copy", [COPY]),
    "copy + the NOTIFY trigger": (
        "profile_trigger",
        [
            COPY,
            "CREATE TRIGGER notify AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION background_jobs_notify()",
        ],
    ),
    "copy - its CHECK constraints (but the size's)": ("profile_no_checks", [COPY, DROP_CHECKS]),
    "copy - payload_bytes and its size check": (
        "profile_no_bytes",
        [
            COPY,
            "ALTER TABLE {t} DROP CONSTRAINT background_jobs_payload_size_check",
            "ALTER TABLE {t} DROP COLUMN payload_bytes",
        ],
    ),
    "copy - the claim index": (
        "profile_no_claim_idx",
        [COPY, DROP_INDEXES.replace("{like}", "%(queue, priority DESC%")],
    ),
    "copy - the limited claims' index": (
        "profile_no_type_idx",
        [COPY, DROP_INDEXES.replace("{like}", "%(job_type, priority DESC%")],
    ),
    "copy - every index but the primary key": ("profile_no_indexes", [COPY, DROP_INDEXES.replace("{like}", "%")]),
}
COPY_VARIANT = "copy of background_jobs"
BARE = "INSERT INTO {t} (job_type, payload) SELECT * FROM unnest($1::text[], $2::jsonb[])"


def per_job(seconds: list[float]) -> tuple[float, float]:
    return min(seconds) * 1e6 / BATCH, statistics.median(seconds) * 1e6 / BATCH


async def interleaved(variants: dict[str, Callable[[], Awaitable[Any]]], batches: int) -> dict[str, list[float]]:
    for run in variants.values():
        await run()  # plans each statement, warms the caches
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(batches):
        for name, run in variants.items():
            started = time.perf_counter()
            await run()
            seconds[name].append(time.perf_counter() - started)
    return seconds


async def wal_per_job(conn: asyncpg.Connection, table: str, statement: str, *args: Any) -> float:
    """WAL bytes per job of one batch, counted by EXPLAIN (ANALYZE, WAL) for this statement alone
    (the server's WAL position also moves with every other session's writes): the least of three
    batches into the emptied table after a first, which makes the pages the others write to; a
    batch that follows a checkpoint writes each page it touches whole once more."""
    await conn.execute(f"TRUNCATE {table}")
    await conn.execute(statement, *args)
    written: list[float] = []
    for _ in range(3):
        plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, WAL, FORMAT JSON) {statement}", *args))
        written.append(float(plan[0]["Plan"]["WAL Bytes"]))
    return min(written) / BATCH


async def trigger_figures(conn: asyncpg.Connection, rows: int, samples: int) -> tuple[float, float]:
    """(the INSERT's own µs, the trigger's µs), medians of `samples` EXPLAIN ANALYZE runs, all in
    one transaction that is rolled back."""
    statement = (
        "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO background_jobs (job_type, payload)"
        f" SELECT 'noop', jsonb_build_object('user_id', g) FROM generate_series(1, {rows}) AS g"
    )
    insert, trigger = [], []
    transaction = conn.transaction()
    await transaction.start()
    try:
        for _ in range(samples):
            plan = json.loads(await conn.fetchval(statement))[0]
            insert.append(plan["Plan"]["Actual Total Time"] * 1000)
            trigger.append(sum(t["Time"] for t in plan.get("Triggers", [])) * 1000)
    finally:
        await transaction.rollback()
    return statistics.median(insert), statistics.median(trigger)


async def main_async(args: argparse.Namespace) -> None:
    server, embedded = await server_url()
    if embedded is not None:
        raise SystemExit("bench.enqueue_profile needs a PostgreSQL server (DATABASE_URL or 127.0.0.1:5432)")
    conn = await asyncpg.connect(await fresh_database(server, ENQUEUE_DB))
    try:
        for table, statements in TABLES.values():
            for statement in statements:
                await conn.execute(statement.format(t=table))
        job_types = ["noop"] * BATCH
        texts = [json.dumps(payload(i)) for i in range(BATCH)]
        prepared = {name: await conn.prepare(BARE.format(t=table)) for name, (table, _) in TABLES.items()}

        def bare(name: str) -> Callable[[], Awaitable[Any]]:
            return lambda: prepared[name].fetch(job_types, texts)

        tables = await interleaved({name: bare(name) for name in TABLES}, args.batches)
        wal_tables = {
            name: await wal_per_job(conn, table, BARE.format(t=table), job_types, texts)
            for name, (table, _) in TABLES.items()
        }

        client = AsyncClient(conn)
        jobs = [NewJob("noop", payload(i)) for i in range(BATCH)]
        columns = bulk_columns([job.validated() for job in jobs])
        batch_query = await conn.prepare(Queries("public").enqueue_batch)

        async def validate() -> None:
            bulk_columns([job.validated() for job in jobs])

        steps: dict[str, Callable[[], Awaitable[Any]]] = {
            "NewJob.validated + bulk_columns (Python)": validate,
            "enqueue_batch query, columns prebuilt": lambda: batch_query.fetchval(*columns),
            "AsyncClient.enqueue_many, whole": lambda: client.enqueue_many(jobs),
            "bare INSERT … unnest, background_jobs": bare("background_jobs"),
        }
        client_steps = await interleaved(steps, args.batches)
        # the client's statement with its columns as enqueue_many builds them
        wal_client = await wal_per_job(conn, "background_jobs", Queries("public").enqueue_batch, *columns)
        one_row = await trigger_figures(conn, 1, args.batches * 5)
        thousand = await trigger_figures(conn, BATCH, args.batches)
        for table, _ in TABLES.values():
            await conn.execute(f"TRUNCATE {table}")
    finally:
        await conn.close()

    copy_min, copy_median = per_job(tables[COPY_VARIANT])
    print(f"µs per job, batches of {BATCH:,}, {args.batches} batches per variant taking turns: fastest / median")
    print(f"\nthe table: bare INSERT … unnest ($1 job types, $2 payloads){'':14} {'vs the copy':>24} {'WAL B/job':>10}")
    for name, seconds in tables.items():
        fastest, median = per_job(seconds)
        print(
            f"  {name:50} {fastest:7.2f} {median:7.2f}   {fastest - copy_min:+7.2f} {median - copy_median:+7.2f}"
            f" {wal_tables[name]:10.0f}"
        )
    print("\nthe client (NewJob('noop', {'user_id': i, 'image': 'i/photo.jpg'}))")
    for name, seconds in client_steps.items():
        fastest, median = per_job(seconds)
        print(f"  {name:50} {fastest:7.2f} {median:7.2f}")
    print(f"  WAL bytes per job of AsyncClient.enqueue_many's statement: {wal_client:.0f}")
    print(
        "\nthe NOTIFY trigger (statement-level, its transition table), median µs of the INSERT node and of the"
        f" trigger:\n  one row: {one_row[0]:.1f} and {one_row[1]:.1f}; {BATCH:,} rows: {thousand[0]:.0f} and"
        f" {thousand[1]:.0f} ({thousand[1] / BATCH:.2f} per row)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="batches per variant")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
