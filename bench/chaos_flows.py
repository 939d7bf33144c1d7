"""The flow chaos run: a fan-in of N jobs under SIGKILLs, and a verdict from the database alone.

    .venv/bin/python -m bench.chaos_flows --jobs 10000 --daemons 4

On a database of its own (`jobrunner_chaos_flows`, dropped and recreated on the server
DATABASE_URL names, else 127.0.0.1:5432) it enqueues N parent jobs (bench/chaos_handlers.py's
types: quick ones, flaky ones that retry, doomed ones that end dead, ones that fail for good;
the jobs that outlast their lease are bench/chaos.py's business: here a kill every few seconds
that prefers the daemons holding jobs would kill them on every attempt) and, before any daemon
starts:

- the fan-in: one callback that depends on all N parents (on_parent_failure 'run');
- groups of `--group-size` parents, each with its callback (AsyncClient.enqueue_group), and
  each with a dependent that keeps the default rule (on_parent_failure 'cancel'): it must end
  cancelled when a parent of its group fails, and complete otherwise;
- a final job that depends on every callback ('cancel': the callbacks all complete).

Then D daemon processes (`python -m jobrunner run --handlers bench.chaos_handlers`) drain it
while one of them, holding jobs when one does, is SIGKILLed every `--kill-every` seconds and
replaced. The verdict, by SQL over background_jobs and what the handlers and a trigger recorded:

- nothing lost or left behind: every job ended as its payload says it must, none is blocked,
  no dependency row is left;
- every dependent was released exactly once (a trigger records each move out of 'blocked');
- every callback completed, and each execution of it saw all its parents finished when it
  started (ctx.parents), with the completed count its group must have;
- a callback ran more than once only where the worker of an earlier execution was SIGKILLed
  (the at-least-once rule of any job); the figure is reported;
- no dependent with the 'cancel' rule ran when a parent had failed.

The summary is printed and written as JSON to bench/results/chaos-flows-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.chaos import (
    CHAOS_TABLES,
    FIRST_CLAIMS,
    LOCAL_SERVER,
    REPO_ROOT,
    RESULTS_DIR,
    ChaosConfig,
    Fleet,
    create_chaos_database,
    now,
)
from bench.source_tree import run_from_tree
from jobrunner import AsyncClient, NewJob

FLOWS_DB = "jobrunner_chaos_flows"

FLOW_TABLES = """
CREATE TABLE IF NOT EXISTS callback_checks (
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    worker     text        NOT NULL,
    parents    integer     NOT NULL,
    unfinished integer     NOT NULL,
    completed  integer     NOT NULL,
    checked_at timestamptz NOT NULL,
    UNIQUE (job_id, attempt, worker)
);
-- every move of a dependent out of 'blocked', in the transaction that made it
CREATE TABLE IF NOT EXISTS flow_releases (
    job_id    bigint      NOT NULL,
    to_status text        NOT NULL,
    at        timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION chaos_record_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.flow_releases (job_id, to_status, at) VALUES (NEW.id, NEW.status, clock_timestamp());
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER chaos_flow_releases AFTER UPDATE OF status ON background_jobs FOR EACH ROW
WHEN (OLD.status = 'blocked' AND NEW.status <> 'blocked')
EXECUTE FUNCTION chaos_record_release();
CREATE TABLE IF NOT EXISTS chaos_kills (
    worker    text        NOT NULL,
    killed_at timestamptz NOT NULL
);
"""


@dataclass
class FlowChaosConfig:
    jobs: int = 10_000
    group_size: int = 100
    daemons: int = 4
    concurrency: int = 32
    lease_seconds: float = 5.0
    rescue_interval: float = 0.5
    kill_every: float = 3.0
    # how long a parent's work takes, in ms (a short run needs slower jobs for its kills to land)
    work_ms: tuple[int, int] = (5, 60)
    drain_timeout: float = 900.0
    seed: int | None = None


@dataclass
class FlowChaosLog:
    kills: int = 0
    kills_deferred: int = 0
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    killed_workers: list[tuple[str, str]] = field(default_factory=list)


def parent_jobs(config: FlowChaosConfig, rng: random.Random) -> list[NewJob]:
    """The N parents, each with the status it must end in."""
    jobs: list[NewJob] = []
    for _ in range(config.jobs):
        ms = rng.randint(*config.work_ms)
        roll = rng.random()
        if roll < 0.005:
            jobs.append(NewJob("chaos_doomed", {"ms": ms, "expect": "dead"}, max_attempts=2))
        elif roll < 0.01:
            jobs.append(NewJob("chaos_permanent", {"ms": ms, "expect": "failed"}, max_attempts=25))
        elif roll < 0.06:
            payload = {"succeed_on": rng.randint(2, 3), "ms": ms, "expect": "completed"}
            jobs.append(NewJob("chaos_flaky", payload, max_attempts=25))
        else:
            jobs.append(NewJob("chaos_quick", {"ms": ms, "expect": "completed"}, max_attempts=25))
    return jobs


def _completing(jobs: list[NewJob]) -> int:
    return sum(1 for job in jobs if job.payload["expect"] == "completed")


async def enqueue_flows(db_url: str, config: FlowChaosConfig, rng: random.Random) -> dict[str, int]:
    parents = parent_jobs(config, rng)
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(CHAOS_TABLES + FLOW_TABLES)
        client = AsyncClient(conn)
        callbacks: list[int] = []
        all_ids: list[int] = []
        guarded = 0
        for start in range(0, len(parents), config.group_size):
            members = parents[start : start + config.group_size]
            completing = _completing(members)
            callback = NewJob(
                "chaos_callback",
                {"ms": 5, "expect": "completed", "expect_completed": completing},
                max_attempts=25,
            )
            async with conn.transaction():
                group = await client.enqueue_group(members, callback, connection=conn)
                # the default rule: cancelled when a parent of the group fails
                expect = "completed" if completing == len(members) else "cancelled"
                await client.enqueue(
                    "chaos_quick", {"ms": 5, "expect": expect, "guard": True}, depends_on=group.job_ids, max_attempts=25
                )
            guarded += 1
            callbacks.append(group.callback_id)
            all_ids.extend(group.job_ids)
        fan_in = await client.enqueue(
            "chaos_callback",
            {"ms": 5, "expect": "completed", "expect_completed": _completing(parents)},
            depends_on=all_ids,
            on_parent_failure="run",
            max_attempts=25,
        )
        await client.enqueue(
            "chaos_quick",
            {"ms": 5, "expect": "completed", "final": True},
            depends_on=[*callbacks, fan_in],
            max_attempts=25,
        )
    finally:
        await conn.close()
    return {"parents": len(parents), "groups": len(callbacks), "guarded": guarded, "fan_in_parents": len(all_ids)}


async def _sample(db_url: str, sql: str) -> asyncpg.Record | None:
    try:
        conn = await asyncpg.connect(db_url, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        row: asyncpg.Record | None = await conn.fetchrow(sql, timeout=10)
        return row
    finally:
        await conn.close()


async def run_flow_chaos(config: FlowChaosConfig, db_url: str, log_dir: Path) -> dict[str, Any]:
    """Enqueue the flows into db_url (migrated, otherwise empty), drain them under SIGKILLs and
    verify. Returns the summary."""
    rng = random.Random(config.seed)
    began = time.monotonic()
    shape = await enqueue_flows(db_url, config, rng)
    enqueue_seconds = time.monotonic() - began
    fleet_config = ChaosConfig(
        concurrency=config.concurrency, lease_seconds=config.lease_seconds, rescue_interval=config.rescue_interval
    )
    fleet = Fleet(db_url, fleet_config, log_dir)
    log = FlowChaosLog()
    drained = False
    try:
        for _ in range(config.daemons):
            fleet.start()
        started = time.monotonic()
        next_kill = started + config.kill_every
        while time.monotonic() - started < config.drain_timeout:
            row = await _sample(
                db_url,
                "SELECT count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'dead', 'cancelled')) AS left,"
                " coalesce(array_agg(DISTINCT worker_id) FILTER (WHERE status = 'running'), '{}') AS holders"
                " FROM background_jobs",
            )
            if row is not None and row["left"] == 0:
                drained = True
                break
            if time.monotonic() >= next_kill:
                next_kill = time.monotonic() + config.kill_every
                candidates = [d for d in fleet.alive if d.working_for() >= FIRST_CLAIMS]
                holding = [d for d in candidates if row is not None and d.worker in row["holders"]]
                if len(fleet.alive) > 1 and (holding or candidates):
                    victim = rng.choice(holding or candidates)
                    fleet.kill(victim)
                    log.kills += 1
                    log.killed_workers.append((victim.worker, now().isoformat()))
                    fleet.start()
                else:
                    log.kills_deferred += 1
            for daemon in fleet.all:
                if daemon.killed_at is None and daemon.proc.poll() is not None:
                    log.unexpected_exits.append({"worker": daemon.worker, "exit": daemon.proc.returncode})
                    daemon.killed_at = now()
                    fleet.start()
            await asyncio.sleep(0.25)
        drain_seconds = time.monotonic() - started
        await fleet.stop_all()
    finally:
        fleet.kill_everything()
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            "INSERT INTO chaos_kills (worker, killed_at) VALUES ($1, $2)",
            [(d.worker, d.killed_at) for d in fleet.all if d.killed_at is not None],
        )
        verdict = await verify(conn)
    finally:
        await conn.close()
    failures = [name for name, value in verdict["must_be_zero"].items() if value != 0]
    if not drained:
        failures.append("not drained within the timeout")
    return {
        "config": asdict(config),
        "shape": shape,
        "enqueue_seconds": round(enqueue_seconds, 2),
        "drain_seconds": round(drain_seconds, 2),
        "daemons_started": len(fleet.all),
        "kills": log.kills,
        "kills_deferred": log.kills_deferred,
        "unexpected_exits": log.unexpected_exits,
        **verdict,
        "failures": failures,
        "passed": not failures and not log.unexpected_exits,
    }


async def verify(conn: asyncpg.Connection) -> dict[str, Any]:
    """The verdict, from the database alone."""
    outcomes = {
        f"{r['job_type']}/{r['status']}": r["jobs"]
        for r in await conn.fetch(
            "SELECT job_type, status, count(*) AS jobs FROM background_jobs GROUP BY 1, 2 ORDER BY 1, 2"
        )
    }
    must_be_zero = {
        "unexpected_status": await conn.fetchval(
            "SELECT count(*) FROM background_jobs WHERE status IS DISTINCT FROM payload->>'expect'"
        ),
        "dependency_rows_left": await conn.fetchval("SELECT count(*) FROM jobrunner_job_dependencies"),
        # every dependent leaves 'blocked' once
        "dependents_not_released_once": await conn.fetchval(
            """
            SELECT count(*) FROM background_jobs AS j
            WHERE j.depends_on IS NOT NULL
              AND (SELECT count(*) FROM flow_releases AS r WHERE r.job_id = j.id) <> 1
            """
        ),
        "callbacks_never_ran": await conn.fetchval(
            """
            SELECT count(*) FROM background_jobs AS j
            WHERE j.job_type = 'chaos_callback'
              AND NOT EXISTS (SELECT FROM callback_checks AS c WHERE c.job_id = j.id)
            """
        ),
        # an execution that started before a parent had finished
        "callback_runs_before_all_parents_finished": await conn.fetchval(
            "SELECT count(*) FROM callback_checks WHERE unfinished > 0"
        ),
        "callback_runs_before_a_parent_finished_at": await conn.fetchval(
            """
            SELECT count(*) FROM callback_checks AS c
            JOIN background_jobs AS j ON j.id = c.job_id
            WHERE c.checked_at < (SELECT max(p.finished_at) FROM background_jobs AS p WHERE p.id = ANY(j.depends_on))
            """
        ),
        "callback_counts_wrong": await conn.fetchval(
            """
            SELECT count(*) FROM callback_checks AS c
            JOIN background_jobs AS j ON j.id = c.job_id
            WHERE c.completed <> (j.payload->>'expect_completed')::int
               OR c.parents <> cardinality(j.depends_on)
               OR j.parents_failed <> cardinality(j.depends_on) - c.completed
            """
        ),
        # a second execution of a callback: only after the worker of an earlier one was killed
        "callback_reruns_unexplained": await conn.fetchval(
            """
            SELECT count(*) FROM executions AS e
            WHERE e.job_type = 'chaos_callback'
              AND EXISTS (SELECT FROM executions AS earlier
                          WHERE earlier.job_id = e.job_id AND earlier.started_at < e.started_at
                            AND NOT EXISTS (SELECT FROM chaos_kills AS k WHERE k.worker = earlier.worker))
            """
        ),
        "guarded_dependents_run_after_a_failed_parent": await conn.fetchval(
            """
            SELECT count(*) FROM background_jobs AS j
            JOIN executions AS e ON e.job_id = j.id
            WHERE j.payload ? 'guard' AND j.payload->>'expect' = 'cancelled'
            """
        ),
    }
    callback_runs = await conn.fetchrow(
        """
        SELECT count(DISTINCT job_id) AS callbacks, count(*) AS executions,
               count(*) FILTER (WHERE outcome = 'ok') AS ok_executions
        FROM executions WHERE job_type = 'chaos_callback'
        """
    )
    fan_in = await conn.fetchrow(
        """
        SELECT cardinality(j.depends_on) AS parents, j.parents_failed,
               extract(epoch FROM
                   (SELECT min(c.checked_at) FROM callback_checks AS c WHERE c.job_id = j.id)
                   - (SELECT max(p.finished_at) FROM background_jobs AS p WHERE p.id = ANY(j.depends_on))
               ) AS seconds_from_last_parent_to_start
        FROM background_jobs AS j
        WHERE j.job_type = 'chaos_callback'
        ORDER BY cardinality(j.depends_on) DESC LIMIT 1
        """
    )
    return {
        "outcomes": outcomes,
        "jobs": sum(outcomes.values()),
        "callbacks": callback_runs["callbacks"],
        "callback_executions": callback_runs["executions"],
        "callback_ok_executions": callback_runs["ok_executions"],
        "fan_in": {
            "parents": fan_in["parents"],
            "parents_failed": fan_in["parents_failed"],
            "seconds_from_last_parent_to_start": round(float(fan_in["seconds_from_last_parent_to_start"]), 3),
        },
        "must_be_zero": must_be_zero,
    }


def print_summary(summary: dict[str, Any]) -> None:
    shape = summary["shape"]
    print(
        f"flow chaos: {shape['parents']} parents in {shape['groups']} groups (each with a callback and a"
        f" 'cancel' dependent), one fan-in callback of {shape['fan_in_parents']} parents, a final job"
    )
    print(
        f"  {summary['daemons_started']} daemons started, {summary['kills']} SIGKILLs"
        f" ({summary['kills_deferred']} deferred); drained in {summary['drain_seconds']} s"
        f" (enqueue {summary['enqueue_seconds']} s)"
    )
    print(
        f"  callbacks: {summary['callbacks']} ran, {summary['callback_executions']} executions"
        f" ({summary['callback_ok_executions']} ok); fan-in: {summary['fan_in']}"
    )
    print(f"  outcomes: {summary['outcomes']}")
    for name, value in summary["must_be_zero"].items():
        print(f"  {name}: {value}")
    print("PASSED" if summary["passed"] else f"FAILED: {summary['failures']} {summary['unexpected_exits']}")


async def main_async(args: argparse.Namespace) -> int:
    config = FlowChaosConfig(
        jobs=args.jobs,
        group_size=args.group_size,
        daemons=args.daemons,
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        kill_every=args.kill_every,
        seed=args.seed,
    )
    server = os.environ.get("DATABASE_URL") or LOCAL_SERVER
    db_url = await create_chaos_database(server, args.database)
    log_dir = Path(tempfile.mkdtemp(prefix="jobrunner-chaos-flows-"))
    summary = await run_flow_chaos(config, db_url, log_dir)
    summary["finished_at"] = now().isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"chaos-flows-{now():%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(summary)
    print(f"written to {out.relative_to(REPO_ROOT)}; daemon logs in {log_dir}")
    return 0 if summary["passed"] else 1


def main() -> None:
    run_from_tree("bench.chaos_flows")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="parent jobs (the fan-in's size)")
    parser.add_argument("--group-size", type=int, default=100)
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lease", type=float, default=5.0, help="JOBRUNNER_LEASE_SECONDS of the daemons")
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--database", default=FLOWS_DB, help="the run's database (dropped and recreated)")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
