"""The chaos run: real daemons, real damage, and a verdict from the database alone.

    .venv/bin/python -m bench.chaos --jobs 100000 --daemons 4

On a database of its own (`jobrunner_chaos`, dropped and recreated on the server DATABASE_URL
names, else 127.0.0.1:5432), it enqueues N jobs (mixed priorities, or one level with
`--priorities 1`; delayed ones; ones that fail and retry, fail for good, or always fail; ones that
sleep longer than the lease so only heartbeats keep them; one type under
GlobalLimits(max_running=3)) and runs D daemon processes
(`python -m jobrunner run --handlers bench.chaos_handlers`). During the chaos window it:

- SIGKILLs a random daemon (one that has started: it may hold jobs) every few seconds and starts
  a new one;
- SIGSTOPs one daemon for longer than its lease, then SIGCONTs it;
- never leaves the fleet with fewer than `--keep-working` (default 1) working daemons: a kill or
  the pause waits while it would (the bound on the wait after a death needs a replica's rescuer
  when the lease runs out; replacements take seconds to start on a loaded machine);
- restarts PostgreSQL once (`pg_ctlcluster … restart`), only when the server is the local cluster
  on 127.0.0.1:5432 whose data directory the server itself reports (never another server);
- cuts every connection of the daemons (`pg_terminate_backend`) a few times.

Then it waits for the queue to drain and checks, with SQL over `background_jobs`, the handlers'
`executions` table and the run's own record of what it did (`chaos_daemons`, `chaos_pauses`):

- no job lost: every enqueued job exists and, after the drain, is terminal with the status its
  type must end in; at the end of the chaos window no job is `running` with a lease that expired
  longer ago than the rescuer needs to notice;
- no outcome recorded twice, and the recorded one is real: every completed (failed) job has the
  execution of its recorded attempt and worker, and that execution ended `ok` (`permanent`);
- executions beyond one per attempt only where a lease was really lost: an execution that did the
  work (ended ok, was cancelled, or never ended) but is not the job's recorded attempt is a
  *duplicate*; each must belong to an attempt that was superseded (the job was claimed again,
  which only the lease rescuer makes possible), and no attempt number runs twice;
- the paused worker's late outcomes are refused: every job it held when paused and someone else
  re-ran shows up in its log as `outcome discarded` (fenced by the attempt number) or `lease
  lost` (cancelled by its heartbeat); the job's recorded outcome is the later attempt's;
- a dead worker's jobs keep their place: the wait from each SIGKILL to the next start of the jobs
  it held (running, or claimed and not started yet) is reported (p50, p99, max) with the backlog
  of runnable jobs at each kill, and its 99th percentile must stay within lease + 2 × rescue
  interval (the lease runs out, a rescuer on some replica sees it, the next claim takes the job
  first) however long the backlog. Each wait is taken apart (bench/chaos_recovery.py): lease
  expiry, rescue and rescuer, every later claim and how it ended, next start, from a trigger's
  record of every claim and rescue (`chaos_transitions`) and the daemons' logs; every wait over
  the bound is listed with its causes. The bound is for one worker death: a job whose next
  holder is killed or paused too before it starts the job (a second, independent failure) is a
  *chain*, reported apart, its first recovery (the kill to the next claim) still held to the
  bound. Jobs of the globally limited type are reported apart too: their claim waits for the
  limit;
- the global limit holds: at most 3 `chaos_limited` executions overlap. An execution occupies a
  slot from its start until the earliest of: its recorded end (or, when a connection cut broke
  the handler's own record of it, the time its daemon logged the attempt's failure), its
  worker's SIGKILL, its worker's SIGSTOP (a paused process runs nothing, and the pause outlasts
  the lease, so the slot is given back by the rescuer), and, when no end was recorded, the job's
  next start or finish. The overlap without the pause clipping is reported too (the tail a
  resumed worker runs before its heartbeat notices the lost lease is the one known way to exceed
  a limit).

The summary is printed and written as JSON to bench/results/chaos-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.chaos_recovery import after_worker_death
from bench.source_tree import child_pythonpath, run_from_tree
from jobrunner import AsyncClient, NewJob
from jobrunner.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CHAOS_DB = "jobrunner_chaos"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
LIMITED_MAX_RUNNING = 3
# the run's own connections: cuts spare them (they observe, they are not under test)
OBSERVER = {"application_name": "jobrunner-chaos-observer"}
TERMINAL = ("completed", "failed", "dead", "cancelled")

CHAOS_TABLES = """
CREATE TABLE IF NOT EXISTS executions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    job_type   text        NOT NULL,
    worker     text        NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    -- ok, error, permanent, cancelled; NULL: the handler never got to record its end
    outcome    text,
    UNIQUE (job_id, attempt, worker)
);
CREATE INDEX IF NOT EXISTS executions_job_idx ON executions (job_id, started_at);
CREATE TABLE IF NOT EXISTS chaos_daemons (
    worker     text        PRIMARY KEY,
    pid        integer     NOT NULL,
    started_at timestamptz NOT NULL,
    killed_at  timestamptz,
    exit_code  integer
);
CREATE TABLE IF NOT EXISTS chaos_pauses (
    worker     text        NOT NULL,
    paused_at  timestamptz NOT NULL,
    resumed_at timestamptz NOT NULL
);
-- every claim of a job and every way it left `running` other than its outcome (rescue,
-- hand-back, retry), written in the transaction that made it: which worker held which attempt
-- when, and the lease a rescue found expired. Completions are left out (they end the story).
CREATE TABLE IF NOT EXISTS chaos_transitions (
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    -- claim, rescue, release (handed back unstarted, its attempt given back), retry, other
    kind       text        NOT NULL,
    to_status  text        NOT NULL,
    -- the claimer, or the worker that lost or gave up the job
    worker     text,
    -- the lease the job had when it left `running`
    lease_expires_at timestamptz,
    at         timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS chaos_transitions_job_idx ON chaos_transitions (job_id, at);
CREATE OR REPLACE FUNCTION chaos_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- the claim functions run with search_path = pg_catalog, pg_temp: names are qualified
    INSERT INTO public.chaos_transitions (job_id, attempt, kind, to_status, worker, lease_expires_at, at)
    VALUES (NEW.id,
            CASE WHEN NEW.status = 'running' THEN NEW.attempts ELSE OLD.attempts END,
            CASE WHEN NEW.status = 'running' THEN 'claim'
                 WHEN NEW.attempts < OLD.attempts THEN 'release'
                 WHEN NEW.last_error LIKE 'lease expired:%'
                      AND NEW.last_error IS DISTINCT FROM OLD.last_error THEN 'rescue'
                 WHEN NEW.status = 'pending' THEN 'retry'
                 ELSE 'other' END,
            NEW.status,
            CASE WHEN NEW.status = 'running' THEN NEW.worker_id ELSE OLD.worker_id END,
            OLD.lease_expires_at,
            clock_timestamp());
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER chaos_transitions AFTER UPDATE OF status ON background_jobs FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND (NEW.status = 'running' OR (OLD.status = 'running' AND NEW.status IN ('pending', 'dead', 'cancelled'))))
EXECUTE FUNCTION chaos_record_transition();
-- the rescues the daemons logged: who rescued which attempt of which job
CREATE TABLE IF NOT EXISTS chaos_rescues (
    job_id    bigint      NOT NULL,
    attempt   integer     NOT NULL,
    lost_worker text,
    rescuer   text        NOT NULL,
    logged_at timestamptz NOT NULL
);
-- attempts whose daemon logged their failure: the end of a handler that could not record its
-- own (a connection cut broke the write of ended_at, and with it the handler)
CREATE TABLE IF NOT EXISTS chaos_attempt_ends (
    job_id    bigint      NOT NULL,
    attempt   integer     NOT NULL,
    worker    text        NOT NULL,
    logged_at timestamptz NOT NULL
);
"""

# seconds a daemon works before it may be killed: its first claims (with nothing measured yet
# it claims no more than its free slots, and so takes the jobs of global limits) are done
FIRST_CLAIMS = 1.0
# most seconds the first daemons may take to start before the chaos window opens regardless
FLEET_START_TIMEOUT = 60.0
# log events of the daemons that the summary counts
REFUSED_EVENT = "outcome discarded: the job's lease was lost before it was written"
LEASE_LOST_EVENT = "lease lost: job was taken back, cancelling its handler"
RESCUED_EVENT = "rescued job from a worker whose lease expired"
# the daemon's log lines that end an attempt its handler failed
FAILED_ATTEMPT_EVENTS = ("job failed, will retry", "job failed permanently", "job dead: no attempts left")


@dataclass
class ChaosConfig:
    jobs: int = 100_000
    daemons: int = 4
    concurrency: int = 32
    lease_seconds: float = 5.0
    rescue_interval: float = 0.5
    poll_interval: float = 0.2
    # the window in which damage is done; delayed jobs are spread over it
    chaos_seconds: float = 60.0
    kill_every: float = 4.0
    # a kill or the pause leaves at least this many working daemons (it waits while it would not)
    keep_working: int = 1
    # jobs get priorities -5, -4, … (this many levels). With one level a killed job's wait shows
    # where it went back in the queue: behind the whole backlog, or in its old place
    priority_levels: int = 16
    pause_seconds: float | None = None  # default: 1.6 × lease
    connection_cuts: int = 3
    restart_postgres: bool = True
    drain_timeout: float = 900.0
    seed: int | None = None

    @property
    def pause_for(self) -> float:
        return self.pause_seconds if self.pause_seconds is not None else 1.6 * self.lease_seconds


@dataclass
class DaemonProcess:
    worker: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: datetime
    killed_at: datetime | None = None
    paused_until: float = 0.0  # monotonic; not killed while paused or just resumed
    started: float | None = None  # monotonic time the run first saw its "daemon started"

    def has_started(self) -> bool:
        """Whether it logged "daemon started" (looked up in its log until it has)."""
        if self.started is None:
            with contextlib.suppress(FileNotFoundError):
                if b'"daemon started"' in self.log_path.read_bytes():
                    self.started = time.monotonic()
        return self.started is not None

    def working_for(self) -> float:
        """Seconds since it was seen started (0 before)."""
        if not self.has_started() or self.started is None:
            return 0.0
        return time.monotonic() - self.started


@dataclass
class ChaosLog:
    """What the run did, as it did it."""

    kills: int = 0
    # kills put off because no daemon had worked FIRST_CLAIMS yet, too few would have remained,
    # or (for half a kill interval) none held a job
    kills_deferred: int = 0
    pauses: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    restart_skipped: str | None = None
    connection_cuts: list[int] = field(default_factory=list)
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    max_overdue_lease_seconds: float = 0.0
    # runnable jobs waiting when each SIGKILL was sent (None: the sample failed)
    backlog_at_kills: list[int | None] = field(default_factory=list)
    stale_running_at_window_end: int | None = None
    samples_failed: int = 0


def now() -> datetime:
    return datetime.now(UTC)


def database_url_for(server_url: str, database: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


# -- the local PostgreSQL, and only that one ----------------------------------------------------


async def local_cluster(db_url: str) -> tuple[list[str], str] | tuple[None, str]:
    """(the pg_ctlcluster restart command, why) when db_url is the local cluster on
    127.0.0.1:5432 whose data directory the server itself reports; (None, why not) otherwise."""
    parts = urlsplit(db_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or (parts.port or 5432) != 5432:
        return None, f"server {parts.hostname}:{parts.port} is not the local 127.0.0.1:5432"
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None, "pg_lsclusters/pg_ctlcluster not installed"
    listing = await asyncio.to_thread(
        subprocess.run, ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    )
    clusters = [line.split() for line in listing.stdout.splitlines() if line.strip()]
    found = [c for c in clusters if len(c) >= 6 and c[2] == "5432" and c[3].startswith("online")]
    if len(found) != 1:
        return None, "no single online local cluster on port 5432"
    version, name, data_dir = found[0][0], found[0][1], found[0][5]
    conn = await asyncpg.connect(db_url, timeout=5)
    try:
        reported = await conn.fetchval("SHOW data_directory")
    finally:
        await conn.close()
    if Path(reported).resolve() != Path(data_dir).resolve():  # noqa: ASYNC240 (no I/O worth a thread)
        return None, f"the server's data directory {reported} is not the local cluster's {data_dir}"
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"], f"local cluster {version}/{name}"


# -- the database ------------------------------------------------------------------------------


async def create_chaos_database(server_url: str, name: str = CHAOS_DB) -> str:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url_for(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "public")
    finally:
        await conn.close()
    return url


def job_mix(config: ChaosConfig, rng: random.Random) -> list[NewJob]:
    """The N jobs: what each is, and (in the payload) the status it must end in."""
    n = config.jobs
    counts = {
        "chaos_limited": max(3, n // 100),
        "chaos_long": max(3, n // 1000),
        "chaos_flaky": max(3, n // 20),
        "chaos_doomed": max(2, n // 100),
        "chaos_permanent": max(2, n // 100),
        "delayed": max(3, n // 10),
    }
    counts["chaos_quick"] = n - sum(counts.values())
    start = now()
    jobs: list[NewJob] = []
    for kind, count in counts.items():
        for _ in range(count):
            priority = rng.randint(-5, -5 + config.priority_levels - 1)
            ms = rng.randint(0, 20)
            if kind == "chaos_long":
                # longer than the lease: lost without heartbeats
                seconds = round(config.lease_seconds * rng.uniform(1.3, 1.7), 2)
                payload = {"seconds": seconds, "expect": "completed"}
                jobs.append(NewJob(kind, payload, priority=priority, max_attempts=25))
            elif kind == "chaos_flaky":
                payload = {"succeed_on": rng.randint(2, 4), "ms": ms, "expect": "completed"}
                jobs.append(NewJob(kind, payload, priority=priority, max_attempts=25))
            elif kind == "chaos_doomed":
                jobs.append(NewJob(kind, {"ms": ms, "expect": "dead"}, priority=priority, max_attempts=3))
            elif kind == "chaos_permanent":
                jobs.append(NewJob(kind, {"ms": ms, "expect": "failed"}, priority=priority, max_attempts=25))
            elif kind == "chaos_limited":
                payload = {"ms": rng.randint(20, 100), "expect": "completed"}
                jobs.append(NewJob(kind, payload, priority=priority, max_attempts=25))
            elif kind == "delayed":
                run_at = start + timedelta(seconds=rng.uniform(1.0, max(1.5, config.chaos_seconds)))
                payload = {"ms": ms, "expect": "completed", "not_before": run_at.timestamp()}
                jobs.append(NewJob("chaos_quick", payload, priority=priority, run_at=run_at, max_attempts=25))
            else:
                jobs.append(NewJob(kind, {"ms": ms, "expect": "completed"}, priority=priority, max_attempts=25))
    rng.shuffle(jobs)
    return jobs


async def enqueue(db_url: str, jobs: list[NewJob]) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(CHAOS_TABLES)
        client = AsyncClient(conn)
        for start in range(0, len(jobs), 5_000):
            await client.enqueue_many(jobs[start : start + 5_000])
    finally:
        await conn.close()


# -- the daemons -------------------------------------------------------------------------------


class Fleet:
    def __init__(self, db_url: str, config: ChaosConfig, log_dir: Path) -> None:
        self.db_url = db_url
        self.config = config
        self.log_dir = log_dir
        self.all: list[DaemonProcess] = []
        self._next = 0

    @property
    def alive(self) -> list[DaemonProcess]:
        return [d for d in self.all if d.killed_at is None and d.proc.poll() is None]

    def start(self) -> DaemonProcess:
        c = self.config
        worker = f"chaos-{self._next}"
        self._next += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_") and k != "DATABASE_URL"}
        env.update(
            {
                "DATABASE_URL": self.db_url,
                # this tree's jobrunner, not the one an editable install points to
                "PYTHONPATH": child_pythonpath(),
                "JOBRUNNER_WORKER_ID": worker,
                "JOBRUNNER_HTTP_PORT": "0",
                "JOBRUNNER_LOG_FORMAT": "json",
                "JOBRUNNER_CONCURRENCY": str(c.concurrency),
                "JOBRUNNER_POOL_MAX_SIZE": "8",
                "JOBRUNNER_LEASE_SECONDS": str(c.lease_seconds),
                "JOBRUNNER_RESCUE_INTERVAL": str(c.rescue_interval),
                "JOBRUNNER_POLL_INTERVAL": str(c.poll_interval),
                "JOBRUNNER_CONNECT_TIMEOUT": "5",
                "JOBRUNNER_SHUTDOWN_GRACE": "10",
                "JOBRUNNER_BURST_WAIT": "0",
                # the installed plugins' cron schedules would add jobs of their own to the count
                # (the app's hourly one did, in a run across the top of the hour)
                "JOBRUNNER_PLUGIN_SCHEDULES": "false",
            }
        )
        log_path = self.log_dir / f"{worker}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jobrunner", "run", "--handlers", "bench.chaos_handlers"],
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        daemon = DaemonProcess(worker, proc, log_path, now())
        self.all.append(daemon)
        return daemon

    def kill(self, daemon: DaemonProcess) -> None:
        daemon.killed_at = now()
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)

    async def stop_all(self, within: float = 30.0) -> None:
        for daemon in self.alive:
            with contextlib.suppress(ProcessLookupError):
                daemon.proc.send_signal(signal.SIGCONT)
                daemon.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        for daemon in self.all:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.to_thread(daemon.proc.wait, remaining)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait(10)

    def kill_everything(self) -> None:
        """Cleanup on any way out: nothing we started outlives the run."""
        for daemon in self.all:
            if daemon.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    daemon.proc.send_signal(signal.SIGCONT)
                    daemon.proc.kill()
                daemon.proc.wait(10)


def log_events(path: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as lines:
        for line in lines:
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                found[str(event.get("event"))] += 1
                if event.get("level") in ("error", "critical"):
                    found["level:error"] += 1
    return found


def logged_attempt_ends(path: Path, worker: str) -> list[tuple[int, int, str, datetime]]:
    """(job_id, attempt, worker, when) of every failed attempt the daemon logged."""
    ends: list[tuple[int, int, str, datetime]] = []
    with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as lines:
        for line in lines:
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
                if event.get("event") in FAILED_ATTEMPT_EVENTS:
                    when = datetime.fromisoformat(event["timestamp"])
                    ends.append((int(event["job_id"]), int(event["attempt"]), worker, when))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return ends


def logged_rescues(path: Path, worker: str) -> list[tuple[int, int, str | None, str, datetime]]:
    """(job_id, attempt, lost worker, rescuer, when) of every rescue the daemon logged."""
    rescues: list[tuple[int, int, str | None, str, datetime]] = []
    with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as lines:
        for line in lines:
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
                if event.get("event") == RESCUED_EVENT:
                    when = datetime.fromisoformat(event["timestamp"])
                    lost = event.get("lost_worker")
                    rescues.append((int(event["job_id"]), int(event["attempt"]), lost, worker, when))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return rescues


# -- the run -----------------------------------------------------------------------------------


class Sampler:
    """Its own connection (reconnecting through cuts and the restart), and the run's samples."""

    def __init__(self, db_url: str, log: ChaosLog) -> None:
        self.db_url = db_url
        self.log = log
        self._conn: asyncpg.Connection | None = None

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.db_url, timeout=3, server_settings=OBSERVER)
            return await self._conn.fetchrow(sql, *args, timeout=10)
        except Exception:  # cut, restarting, or a protocol error after a cut: next sample reconnects
            self.log.samples_failed += 1
            if self._conn is not None:
                self._conn.terminate()
            self._conn = None
            return None

    async def holders(self) -> set[str]:
        """The workers holding a running job now (none when the sample failed)."""
        row = await self.fetchrow(
            "SELECT coalesce(array_agg(DISTINCT worker_id), '{}') AS workers"
            " FROM background_jobs WHERE status = 'running' AND worker_id IS NOT NULL"
        )
        return set() if row is None else set(row["workers"])

    async def progress(self) -> asyncpg.Record | None:
        return await self.fetchrow(
            """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE status IN ('completed', 'failed', 'dead', 'cancelled')) AS finished,
                   coalesce(extract(epoch FROM max(now() - lease_expires_at) FILTER (WHERE status = 'running')),
                            0)::float8 AS overdue
            FROM background_jobs
            """
        )

    async def backlog(self) -> int | None:
        row = await self.fetchrow(
            "SELECT count(*) AS n FROM background_jobs WHERE status = 'pending' AND scheduled_at <= now()"
        )
        return None if row is None else int(row["n"])

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()


async def cut_connections(db_url: str) -> int:
    conn = await asyncpg.connect(db_url, timeout=5)
    try:
        cut: int = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            " AND application_name <> $1",
            OBSERVER["application_name"],
        )
        return cut
    finally:
        await conn.close()


async def restart_postgres(command: list[str], db_url: str) -> dict[str, Any]:
    began = time.monotonic()
    at = now()
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    while True:
        try:
            conn = await asyncpg.connect(db_url, timeout=2)
            await conn.close()
            break
        except (OSError, TimeoutError, asyncpg.PostgresError):
            if time.monotonic() - began > 120:
                raise
            await asyncio.sleep(0.1)
    return {"at": at.isoformat(), "down_seconds": round(time.monotonic() - began, 2)}


async def run_chaos(config: ChaosConfig, db_url: str, log_dir: Path) -> dict[str, Any]:
    """Run the chaos against db_url (migrated, otherwise empty) and verify it. Returns the summary."""
    rng = random.Random(config.seed)
    chaos = ChaosLog()
    restart_command: list[str] | None = None
    if config.restart_postgres:
        restart_command, why = await local_cluster(db_url)
        if restart_command is None:
            chaos.restart_skipped = why
    jobs = job_mix(config, rng)
    began_enqueue = time.monotonic()
    await enqueue(db_url, jobs)
    enqueue_seconds = time.monotonic() - began_enqueue

    fleet = Fleet(db_url, config, log_dir)
    sampler = Sampler(db_url, chaos)
    window = config.chaos_seconds
    # the timeline, in seconds from the start of the window
    pause_at: float | None = 0.15 * window
    cut_at = [window * (0.3 + 0.5 * i / max(1, config.connection_cuts - 1)) for i in range(config.connection_cuts)]
    restart_at = 0.45 * window if restart_command is not None else None
    next_kill = config.kill_every
    kill_deferred = False
    kill_due = 0.0  # when the kill now waiting fell due
    paused: DaemonProcess | None = None
    pause_began = 0.0
    try:
        for _ in range(config.daemons):
            fleet.start()
        # the window opens once the fleet works: on a loaded machine a daemon takes seconds to
        # import, and a kill or a pause before then hits a process that holds nothing
        spawned = time.monotonic()
        # (polled: their logs are the only sign, written by other processes)
        while not all(d.has_started() for d in fleet.alive):
            if time.monotonic() - spawned > FLEET_START_TIMEOUT:
                break
            await asyncio.sleep(0.1)
        fleet_start_seconds = time.monotonic() - spawned
        started = time.monotonic()
        window_end = started + window
        while time.monotonic() < window_end:
            t = time.monotonic() - started
            # like a kill, the pause leaves at least one working daemon (it waits for one)
            pausable = [d for d in fleet.alive if d.has_started()]
            if paused is None and pause_at is not None and t >= pause_at and len(pausable) > config.keep_working:
                paused = rng.choice(pausable)
                pause_began = time.monotonic()
                paused.paused_until = float("inf")
                chaos.pauses.append({"worker": paused.worker, "paused_at": now()})
                paused.proc.send_signal(signal.SIGSTOP)
                pause_at = None
            if paused is not None and time.monotonic() - pause_began >= config.pause_for:
                paused.proc.send_signal(signal.SIGCONT)
                chaos.pauses[-1]["resumed_at"] = now()
                # give it time to find out it lost its leases before it may be killed
                paused.paused_until = time.monotonic() + 2 * config.lease_seconds
                paused = None
            if cut_at and t >= cut_at[0]:
                cut_at.pop(0)
                chaos.connection_cuts.append(await cut_connections(db_url))
            if restart_at is not None and t >= restart_at and restart_command is not None:
                restart_at = None
                chaos.restarts.append(await restart_postgres(restart_command, db_url))
            if t >= next_kill:
                if not kill_deferred:
                    kill_due = t
                next_kill += config.kill_every
                # only a daemon that has worked for a moment holds jobs: killing one still
                # importing Python (seconds on a loaded machine) would only thin the fleet, and
                # killing each replacement the moment it starts would single out its first claim.
                # And a kill leaves at least one working daemon: the wait after a death is
                # bounded by a replica's rescuer, which a fleet of starting processes does not
                # run yet (when replacements start slower than the kills come, the kill waits)
                candidates = [
                    d for d in fleet.alive if d.paused_until < time.monotonic() and d.working_for() >= FIRST_CLAIMS
                ]
                working = [d for d in fleet.alive if d is not paused and d.has_started()]
                # a kill lands on a daemon holding jobs when one does: at the tail of a small
                # run most daemons hold nothing, and killing one tests nothing. It waits up to
                # half a kill interval for one before it kills a random candidate
                if candidates and len(working) > config.keep_working:
                    holders = await sampler.holders()
                    holding = [d for d in candidates if d.worker in holders]
                    if holding:
                        candidates = holding
                    elif t < kill_due + config.kill_every / 2:
                        candidates = []
                if len(working) <= config.keep_working or not candidates:
                    chaos.kills_deferred += 0 if kill_deferred else 1
                    kill_deferred = True
                    next_kill = t + 0.25
                else:
                    kill_deferred = False
                    chaos.backlog_at_kills.append(await sampler.backlog())
                    fleet.kill(rng.choice(candidates))
                    chaos.kills += 1
                    fleet.start()
            for daemon in fleet.all:
                if daemon.killed_at is None and daemon.proc.poll() is not None:
                    chaos.unexpected_exits.append({"worker": daemon.worker, "exit": daemon.proc.returncode})
                    daemon.killed_at = now()
                    fleet.start()
            sample = await sampler.progress()
            if sample is not None:
                chaos.max_overdue_lease_seconds = max(chaos.max_overdue_lease_seconds, sample["overdue"])
            await asyncio.sleep(0.25)
        if paused is not None:  # a window shorter than the pause
            paused.proc.send_signal(signal.SIGCONT)
            chaos.pauses[-1]["resumed_at"] = now()
        window_closed = time.monotonic()
        # the chaos is over: no job may be `running` on a lease that expired longer ago than the
        # rescuer (every rescue_interval, on every replica) needs to notice
        grace = 2 * config.rescue_interval + 2.0
        stale = await sampler.fetchrow(
            "SELECT count(*) AS n FROM background_jobs WHERE status = 'running'"
            " AND (lease_expires_at IS NULL OR lease_expires_at < now() - make_interval(secs => $1))",
            grace,
        )
        chaos.stale_running_at_window_end = None if stale is None else stale["n"]
        drained_at = None
        while time.monotonic() - window_closed < config.drain_timeout:
            sample = await sampler.progress()
            if sample is not None:
                chaos.max_overdue_lease_seconds = max(chaos.max_overdue_lease_seconds, sample["overdue"])
                if sample["finished"] == sample["total"]:
                    drained_at = time.monotonic()
                    break
            for daemon in fleet.all:
                if daemon.killed_at is None and daemon.proc.poll() is not None:
                    chaos.unexpected_exits.append({"worker": daemon.worker, "exit": daemon.proc.returncode})
                    daemon.killed_at = now()
                    fleet.start()
            await asyncio.sleep(0.2)
        await fleet.stop_all()
    finally:
        fleet.kill_everything()
        await sampler.close()

    exit_codes = {d.worker: d.proc.returncode for d in fleet.all if d.killed_at is None}
    await record_the_run(db_url, fleet, chaos)
    logs = {d.worker: log_events(d.log_path) for d in fleet.all}
    summary = await verify(db_url, config, chaos, logs)
    summary["run"] = {
        "enqueue_seconds": round(enqueue_seconds, 2),
        "fleet_start_seconds": round(fleet_start_seconds, 2),
        "chaos_window_seconds": window,
        "time_to_drain_seconds": None if drained_at is None else round(drained_at - window_closed, 2),
        "wall_seconds_until_drained": None if drained_at is None else round(drained_at - started, 2),
        "daemons_started": len(fleet.all),
        "final_exit_codes": exit_codes,
        "log_dir": str(log_dir),
    }
    if drained_at is None:
        summary["failures"].append(f"the queue did not drain within {config.drain_timeout}s")
    # a replacement started just before the end can get SIGTERM while Python still imports,
    # before the daemon installs its handler: it dies of the signal having claimed nothing
    # (claims start after "daemon started"), which loses nothing and is no bad exit
    bad_exits = {
        w: code
        for w, code in exit_codes.items()
        if code != 0 and not (code == -signal.SIGTERM and logs[w]["daemon started"] == 0)
    }
    if bad_exits:
        summary["failures"].append(f"daemons exited badly on SIGTERM: {bad_exits}")
    if chaos.unexpected_exits:
        summary["failures"].append(f"daemons died on their own: {chaos.unexpected_exits}")
    summary["passed"] = not summary["failures"]
    return summary


async def record_the_run(db_url: str, fleet: Fleet, chaos: ChaosLog) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            "INSERT INTO chaos_daemons (worker, pid, started_at, killed_at, exit_code) VALUES ($1, $2, $3, $4, $5)",
            [(d.worker, d.proc.pid, d.started_at, d.killed_at, d.proc.returncode) for d in fleet.all],
        )
        await conn.executemany(
            "INSERT INTO chaos_pauses (worker, paused_at, resumed_at) VALUES ($1, $2, $3)",
            [(p["worker"], p["paused_at"], p["resumed_at"]) for p in chaos.pauses],
        )
        await conn.executemany(
            "INSERT INTO chaos_attempt_ends (job_id, attempt, worker, logged_at) VALUES ($1, $2, $3, $4)",
            [end for d in fleet.all for end in logged_attempt_ends(d.log_path, d.worker)],
        )
        await conn.executemany(
            "INSERT INTO chaos_rescues (job_id, attempt, lost_worker, rescuer, logged_at) VALUES ($1, $2, $3, $4, $5)",
            [rescue for d in fleet.all for rescue in logged_rescues(d.log_path, d.worker)],
        )
    finally:
        await conn.close()


# -- the verdict, from the database ------------------------------------------------------------

# an execution's slot in the global limit (see the module docstring)
LOGGED_END = """
coalesce((SELECT min(x.logged_at) FROM chaos_attempt_ends AS x
          WHERE x.job_id = e.job_id AND x.attempt = e.attempt AND x.worker = e.worker), 'infinity')
"""
SLOT_END = f"""
least(
    coalesce(e.ended_at, 'infinity'),
    coalesce(d.killed_at, 'infinity'),
    coalesce((SELECT min(p.paused_at) FROM chaos_pauses AS p
              WHERE p.worker = e.worker AND p.paused_at >= e.started_at), 'infinity'),
    CASE WHEN e.ended_at IS NULL THEN least({LOGGED_END}, coalesce(
        (SELECT min(n.started_at) FROM executions AS n WHERE n.job_id = e.job_id AND n.started_at > e.started_at),
        j.finished_at, 'infinity')) ELSE 'infinity' END
)
"""
RAW_END = f"""
least(coalesce(e.ended_at, 'infinity'), coalesce(d.killed_at, 'infinity'),
      CASE WHEN e.ended_at IS NULL THEN least({LOGGED_END}, coalesce(
          (SELECT min(n.started_at) FROM executions AS n WHERE n.job_id = e.job_id AND n.started_at > e.started_at),
          j.finished_at, 'infinity')) ELSE 'infinity' END)
"""


def overlap_sql(end: str) -> str:
    return f"""
    WITH slots AS (
        SELECT e.started_at AS s, {end} AS e
        FROM executions AS e
        JOIN background_jobs AS j ON j.id = e.job_id
        LEFT JOIN chaos_daemons AS d ON d.worker = e.worker
        WHERE e.job_type = 'chaos_limited'
    ), points AS (
        SELECT s AS t, 1 AS delta FROM slots WHERE e > s
        UNION ALL
        SELECT e, -1 FROM slots WHERE e > s AND e < 'infinity'
    )
    SELECT coalesce(max(running), 0) FROM (
        -- at equal times the end comes first: touching intervals do not overlap
        SELECT sum(delta) OVER (ORDER BY t, delta ROWS UNBOUNDED PRECEDING) AS running FROM points
    ) AS r
    """


async def verify(db_url: str, config: ChaosConfig, chaos: ChaosLog, logs: dict[str, Counter[str]]) -> dict[str, Any]:
    failures: list[str] = []
    conn = await asyncpg.connect(db_url)
    try:
        q = conn.fetchval
        total = await q("SELECT count(*) FROM background_jobs")
        unfinished = await q("SELECT count(*) FROM background_jobs WHERE status <> ALL($1::text[])", list(TERMINAL))
        by_type = {
            f"{r['job_type']}/{r['status']}": r["n"]
            for r in await conn.fetch(
                "SELECT job_type, status, count(*) AS n FROM background_jobs GROUP BY 1, 2 ORDER BY 1, 2"
            )
        }
        wrong_status = await conn.fetch(
            "SELECT id, job_type, status, attempts, payload->>'expect' AS expect, last_error FROM background_jobs"
            " WHERE status <> payload->>'expect' ORDER BY id LIMIT 20"
        )
        running_without_lease = await q(
            "SELECT count(*) FROM background_jobs WHERE status = 'running'"
            " AND (lease_expires_at IS NULL OR lease_expires_at < now())"
        )
        # the recorded outcome is that of the recorded attempt's execution
        outcome_without_execution = await q(
            """
            SELECT count(*) FROM background_jobs AS j
            WHERE j.status IN ('completed', 'failed') AND NOT EXISTS (
                SELECT 1 FROM executions AS e
                WHERE e.job_id = j.id AND e.attempt = j.attempts AND e.worker = j.worker_id
                  AND e.outcome = CASE j.status WHEN 'completed' THEN 'ok' ELSE 'permanent' END)
            """
        )
        same_attempt_twice = await q(
            "SELECT count(*) FROM (SELECT 1 FROM executions GROUP BY job_id, attempt HAVING count(*) > 1) AS x"
        )
        executions = await q("SELECT count(*) FROM executions")
        # did the work (or may have) without being the recorded attempt
        duplicates = await conn.fetchrow(
            """
            WITH dup AS (
                SELECT e.*, j.attempts AS final_attempt,
                       -- killed after it started and before the job was next started
                       d.killed_at IS NOT NULL AND d.killed_at >= e.started_at AND d.killed_at < coalesce(
                           (SELECT min(n.started_at) FROM executions AS n
                            WHERE n.job_id = e.job_id AND n.started_at > e.started_at), 'infinity') AS killed,
                       -- paused between its claim and the write of its outcome (a lease around it)
                       EXISTS (SELECT 1 FROM chaos_pauses AS p WHERE p.worker = e.worker
                               AND p.paused_at < coalesce(e.ended_at, 'infinity') + make_interval(secs => $1)
                               AND p.resumed_at > e.started_at - make_interval(secs => $1)) AS paused
                FROM executions AS e
                JOIN background_jobs AS j ON j.id = e.job_id
                LEFT JOIN chaos_daemons AS d ON d.worker = e.worker
                WHERE NOT (e.attempt = j.attempts AND e.worker = j.worker_id)
                  AND (e.outcome IS NULL OR e.outcome IN ('ok', 'cancelled'))
            )
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE final_attempt <= attempt) AS not_superseded,
                   count(*) FILTER (WHERE killed) AS worker_killed,
                   count(*) FILTER (WHERE paused AND NOT killed) AS worker_paused,
                   count(*) FILTER (WHERE NOT paused AND NOT killed) AS other
            FROM dup
            """,
            config.lease_seconds,
        )
        retried_executions = await q(
            """
            SELECT count(*) FROM executions AS e JOIN background_jobs AS j ON j.id = e.job_id
            WHERE NOT (e.attempt = j.attempts AND e.worker = j.worker_id) AND e.outcome IN ('error', 'permanent')
            """
        )
        delayed_too_early = await q(
            """
            SELECT count(*) FROM background_jobs AS j
            WHERE j.payload ? 'not_before' AND EXISTS (
                SELECT 1 FROM executions AS e WHERE e.job_id = j.id
                  AND e.started_at < to_timestamp((j.payload->>'not_before')::float8))
            """
        )
        limited_overlap = await q(overlap_sql(SLOT_END))
        limited_overlap_unclipped = await q(overlap_sql(RAW_END))
        # jobs whose worker was SIGKILLed mid-execution: how long until they ran again, and why
        # (a job killed on its last attempt is rescued as dead and never runs again)
        after_death = await after_worker_death(
            conn, config.lease_seconds, config.rescue_interval, frozenset({"chaos_limited"})
        )
        # the paused worker: what it held, and what someone else ran again meanwhile
        pause_rows = await conn.fetch(
            """
            SELECT p.worker,
                   count(e.*) FILTER (WHERE e.started_at < p.paused_at
                                      AND coalesce(e.ended_at, 'infinity') > p.paused_at) AS in_flight,
                   count(e.*) FILTER (WHERE e.started_at < p.paused_at
                                      AND coalesce(e.ended_at, 'infinity') > p.paused_at
                                      AND j.attempts > e.attempt) AS rerun_elsewhere,
                   count(e.*) FILTER (WHERE e.started_at < p.paused_at
                                      AND coalesce(e.ended_at, 'infinity') > p.paused_at
                                      AND j.attempts = e.attempt AND j.worker_id = e.worker) AS kept
            FROM chaos_pauses AS p
            LEFT JOIN executions AS e ON e.worker = p.worker
            LEFT JOIN background_jobs AS j ON j.id = e.job_id
            GROUP BY p.worker
            """
        )
    finally:
        await conn.close()

    refused = sum(c[REFUSED_EVENT] for c in logs.values())
    lease_lost = sum(c[LEASE_LOST_EVENT] for c in logs.values())
    rescued = sum(c[RESCUED_EVENT] for c in logs.values())
    errors_logged = sum(c["level:error"] for c in logs.values())
    pauses = []
    for row in pause_rows:
        events = logs.get(row["worker"], Counter())
        pause = {
            "worker": row["worker"],
            "in_flight_when_paused": row["in_flight"],
            "rerun_elsewhere": row["rerun_elsewhere"],
            "kept_its_lease": row["kept"],
            "refused_outcomes": events[REFUSED_EVENT],
            "cancelled_after_lease_lost": events[LEASE_LOST_EVENT],
        }
        pauses.append(pause)
        if pause["refused_outcomes"] + pause["cancelled_after_lease_lost"] < pause["rerun_elsewhere"]:
            failures.append(f"paused worker {row['worker']}: re-run elsewhere, yet no outcome refused: {pause}")

    if total != config.jobs:
        failures.append(f"jobs lost: {config.jobs} enqueued, {total} in the table")
    if unfinished:
        failures.append(f"{unfinished} jobs not terminal after the drain")
    if wrong_status:
        failures.append(f"jobs ended in the wrong status: {[dict(r) for r in wrong_status]}")
    if running_without_lease:
        failures.append(f"{running_without_lease} jobs running without a live lease")
    if chaos.stale_running_at_window_end:
        failures.append(f"{chaos.stale_running_at_window_end} jobs running on an expired lease at the window's end")
    if outcome_without_execution:
        failures.append(f"{outcome_without_execution} recorded outcomes without the matching execution")
    if same_attempt_twice:
        failures.append(f"{same_attempt_twice} attempts executed by two workers")
    if duplicates["not_superseded"]:
        failures.append(f"{duplicates['not_superseded']} duplicate executions whose attempt was never superseded")
    if delayed_too_early:
        failures.append(f"{delayed_too_early} delayed jobs ran before their time")
    if limited_overlap > LIMITED_MAX_RUNNING:
        failures.append(f"global limit exceeded: {limited_overlap} chaos_limited executions overlapped")
    wait_bound = after_death["bound_seconds"]
    single_p99 = after_death["single_failure"]["p99"]
    if single_p99 is not None and single_p99 > wait_bound:
        failures.append(
            f"jobs of killed workers waited {single_p99:.2f}s at p99 to run again (one worker death),"
            f" over lease + 2 × rescue interval = {wait_bound}s"
        )
    recovery_p99 = after_death["recovery"]["p99"]
    if recovery_p99 is not None and recovery_p99 > wait_bound:
        failures.append(
            f"jobs of killed workers were claimed again {recovery_p99:.2f}s after the kill at p99,"
            f" over lease + 2 × rescue interval = {wait_bound}s"
        )
    if config.restart_postgres and not chaos.restarts and chaos.restart_skipped is None:
        failures.append("PostgreSQL was not restarted")

    return {
        "jobs": total,
        "config": asdict(config),
        "chaos": {
            "kills": chaos.kills,
            "kills_deferred": chaos.kills_deferred,
            "pauses": [
                {
                    "worker": p["worker"],
                    "seconds": round((p["resumed_at"] - p["paused_at"]).total_seconds(), 2),
                }
                for p in chaos.pauses
            ],
            "postgres_restarts": chaos.restarts,
            "postgres_restart_skipped": chaos.restart_skipped,
            "connection_cuts": len(chaos.connection_cuts),
            "backends_terminated": chaos.connection_cuts,
        },
        "outcomes": by_type,
        "executions": executions,
        "failed_attempts_retried": retried_executions,
        "duplicate_executions": {
            "total": duplicates["total"],
            "worker_killed": duplicates["worker_killed"],
            "worker_paused": duplicates["worker_paused"],
            "lease_expired_otherwise": duplicates["other"],
            "not_superseded": duplicates["not_superseded"],
        },
        "same_attempt_run_twice": same_attempt_twice,
        "outcome_without_execution": outcome_without_execution,
        "refused_outcomes": refused,
        "cancelled_after_lease_lost": lease_lost,
        "rescued_jobs": rescued,
        "error_log_lines": errors_logged,
        "paused_workers": pauses,
        "after_worker_death": {**after_death, "backlog_at_kills": chaos.backlog_at_kills},
        "limited_max_overlap": limited_overlap,
        "limited_max_overlap_unclipped": limited_overlap_unclipped,
        "delayed_run_too_early": delayed_too_early,
        "unfinished": unfinished,
        "running_without_lease": running_without_lease,
        "max_overdue_lease_seconds_during_run": round(chaos.max_overdue_lease_seconds, 2),
        "stale_running_at_window_end": chaos.stale_running_at_window_end,
        "failures": failures,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _backlog_range(samples: list[int | None]) -> str:
    known = sorted(n for n in samples if n is not None)
    if not known:
        return "unknown"
    return f"min {known[0]:,}, median {known[len(known) // 2]:,}, max {known[-1]:,}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value}s"


def print_summary(summary: dict[str, Any]) -> None:
    c, d, w, r = summary["chaos"], summary["duplicate_executions"], summary["after_worker_death"], summary["run"]
    one, every, lim = w["single_failure"], w["all"], w["limited"]
    restarts = ", ".join(f"down {x['down_seconds']}s" for x in c["postgres_restarts"]) or (
        f"skipped ({c['postgres_restart_skipped']})" if c["postgres_restart_skipped"] else "none"
    )
    pauses = ", ".join(f"{p['worker']} {p['seconds']}s" for p in c["pauses"]) or "none"
    lines = [
        f"jobs                      {summary['jobs']:,} ({summary['config']['daemons']} daemons, "
        f"{r['daemons_started']} started in all)",
        f"kills (SIGKILL)           {c['kills']} ({c['kills_deferred']} put off: no daemon had worked "
        f"{FIRST_CLAIMS:g}s, or fewer than {summary['config']['keep_working']} would remain working, "
        "or none held a job yet)",
        f"pauses (SIGSTOP)          {pauses}",
        f"PostgreSQL restarts       {len(c['postgres_restarts'])} ({restarts})",
        f"connection cuts           {c['connection_cuts']} (backends terminated: {c['backends_terminated']})",
        f"executions                {summary['executions']:,} (failed attempts retried: "
        f"{summary['failed_attempts_retried']:,})",
        f"duplicate executions      {d['total']} (worker killed {d['worker_killed']}, paused {d['worker_paused']}, "
        f"lease expired otherwise {d['lease_expired_otherwise']}; not superseded {d['not_superseded']})",
        f"refused outcomes          {summary['refused_outcomes']} (fenced by attempt), "
        f"{summary['cancelled_after_lease_lost']} handlers cancelled after lease loss",
        f"rescued jobs              {summary['rescued_jobs']}",
        f"limit max_running=3       max overlap {summary['limited_max_overlap']} "
        f"(without pause clipping {summary['limited_max_overlap_unclipped']})",
        f"time to drain             {r['time_to_drain_seconds']}s after the {r['chaos_window_seconds']}s chaos window "
        f"({r['wall_seconds_until_drained']}s in all; the fleet took {r['fleet_start_seconds']}s to start)",
        f"wait after worker died    p50 {_s(one['p50'])}, p99 {_s(one['p99'])}, max {_s(one['max'])} from the kill "
        f"to the next start, one worker death ({one['n']} jobs; bound: lease + 2 × rescue interval = "
        f"{w['bound_seconds']}s); {w['killed_executions']} executions killed and {w['killed_unstarted']} claimed "
        f"jobs not started yet, {w['run_again']} ran again",
        f"  per kill (its longest)  p50 {_s(w['single_failure_per_kill']['p50'])}, "
        f"max {_s(w['single_failure_per_kill']['max'])} over {w['single_failure_per_kill']['n']} kills (the jobs of a "
        "kill share its lease expiry and rescue)",
        f"  all killed jobs         p50 {_s(every['p50'])}, p99 {_s(every['p99'])}, max {_s(every['max'])}; "
        f"{w['chains']} chains (a later holder killed or paused too), max {_s(w['chain_waits']['max'])}",
        f"  global-limit types      p50 {_s(lim['p50'])}, p99 {_s(lim['p99'])}, max {_s(lim['max'])} "
        f"({lim['n']} jobs of {', '.join(w['limited_types'])}; not held to the bound: claimed within their limit)",
        f"  kill to next claim      p50 {_s(w['recovery']['p50'])}, p99 {_s(w['recovery']['p99'])}, "
        f"max {_s(w['recovery']['max'])} (chains included)",
        "  where the time went     "
        + ", ".join(f"{name} p50 {_s(v['p50'])} max {_s(v['max'])}" for name, v in w["steps"].items()),
        f"backlog at the kills      {_backlog_range(w['backlog_at_kills'])} runnable jobs waiting",
        f"outcomes                  {summary['outcomes']}",
        f"verdict                   {'PASSED' if summary['passed'] else 'FAILED'}",
    ]
    for outlier in w["over_bound"]:
        lines.append(
            f"  over the bound: job {outlier['job_id']} ({outlier['job_type']} attempt {outlier['attempt']}, "
            f"{'running' if outlier['started'] else 'not started'} on {outlier['killed_worker']} "
            f"killed {outlier['killed_at'][11:23]}) waited {outlier['wait_seconds']}s: "
            + ("; ".join(outlier["causes"]) or "no step over its share")
        )
    print("\n".join(lines))
    for failure in summary["failures"]:
        print(f"  FAILED: {failure}")


async def main_async(args: argparse.Namespace) -> int:
    config = ChaosConfig(
        jobs=args.jobs,
        daemons=args.daemons,
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        chaos_seconds=args.window,
        kill_every=args.kill_every,
        keep_working=args.keep_working,
        rescue_interval=args.rescue_interval,
        priority_levels=args.priorities,
        restart_postgres=not args.no_restart,
        seed=args.seed,
    )
    server = os.environ.get("DATABASE_URL") or LOCAL_SERVER
    db_url = await create_chaos_database(server, args.database)
    log_dir = Path(tempfile.mkdtemp(prefix="jobrunner-chaos-"))
    summary = await run_chaos(config, db_url, log_dir)
    summary["finished_at"] = now().isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"chaos-{now():%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(summary)
    print(f"written to {out.relative_to(REPO_ROOT)}; daemon logs in {log_dir}")
    return 0 if summary["passed"] else 1


def main() -> None:
    run_from_tree("bench.chaos")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lease", type=float, default=5.0, help="JOBRUNNER_LEASE_SECONDS of the daemons")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of chaos")
    parser.add_argument("--kill-every", type=float, default=4.0)
    parser.add_argument(
        "--keep-working",
        type=int,
        default=1,
        help="a kill or the pause leaves at least this many working daemons (it waits while it would not)",
    )
    parser.add_argument("--rescue-interval", type=float, default=0.5, help="JOBRUNNER_RESCUE_INTERVAL of the daemons")
    parser.add_argument(
        "--priorities", type=int, default=16, help="priority levels of the jobs (1: every job waits in one line)"
    )
    parser.add_argument("--no-restart", action="store_true", help="do not restart PostgreSQL")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--database",
        default=CHAOS_DB,
        help="the run's database (dropped and recreated; kept after the run for a look at its tables)",
    )
    args = parser.parse_args()
    if args.priorities < 1:
        parser.error("--priorities must be at least 1")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
