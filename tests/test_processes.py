"""The real `jobrunner` CLI and daemon as child processes against a real database: crashes
(SIGKILL), graceful and forced shutdown, burst mode, replicas side by side, connections cut by
the server, the CLI's commands and exit codes, secrets kept out of the logs.

Handlers live in tests/process_handlers.py; they report to tables the test creates.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support import job_row, jobrunner_process, url_as, wait_for, wait_until

RUN = ("run", "--handlers", "tests.process_handlers")

HANDLER_RUNS = """
CREATE TABLE handler_runs (
    job_id     bigint      NOT NULL,
    worker_id  text        NOT NULL,
    attempt    integer     NOT NULL,
    started_at timestamptz NOT NULL
)
"""


@dataclass
class Child:
    """A `python -m jobrunner` process whose output goes to files (read them any time)."""

    name: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The structlog JSON lines of stderr (anything else is skipped)."""
        found = []
        for line in self.stderr().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return [e for e in found if isinstance(e, dict)]

    def event_names(self) -> list[str]:
        return [str(e.get("event")) for e in self.events()]

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, within: float) -> int:
        """The exit code; subprocess.TimeoutExpired when still running after `within` seconds."""
        return await asyncio.to_thread(self.proc.wait, within)


@dataclass
class Children:
    """Starts children; the fixture kills whatever is still alive and shows their logs."""

    directory: Path
    started: list[Child] = field(default_factory=list)

    def start(self, db_url: str, *args: str, name: str = "jobrunner", env: dict[str, str] | None = None) -> Child:
        index = len(self.started)
        out_path = self.directory / f"{index}-{name}.out"
        err_path = self.directory / f"{index}-{name}.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = jobrunner_process(db_url, *args, env=env, stdout=out, stderr=err)
        child = Child(name, proc, out_path, err_path)
        self.started.append(child)
        return child

    async def run(self, db_url: str, *args: str, env: dict[str, str] | None = None, within: float = 60) -> Child:
        """A command that ends on its own (migrate, enqueue, status…)."""
        child = self.start(db_url, *args, name=args[0], env=env)
        await child.wait(within)
        return child


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    spawned = Children(tmp_path)
    try:
        yield spawned
    finally:
        for child in spawned.started:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait(10)
        # shown by pytest only when the test fails
        for child in spawned.started:
            print(f"----- {child.name} (pid {child.pid}, exit {child.proc.returncode}) stderr, last 60 lines -----")
            print("\n".join(child.stderr().splitlines()[-60:]))
            stdout = child.stdout()
            if stdout:
                print(f"----- {child.name} stdout -----\n{stdout[-3000:]}")


def daemon_env(**values: float | str) -> dict[str, str]:
    return {f"JOBRUNNER_{key.upper()}": str(value) for key, value in values.items()}


async def insert_job(
    conn: asyncpg.Connection, job_type: str, payload: dict[str, Any] | None = None, **cols: Any
) -> int:
    names = ["job_type", "payload", *cols]
    values = [job_type, json.dumps(payload or {}), *cols.values()]
    placeholders = ", ".join(f"${i}" + ("::jsonb" if name == "payload" else "") for i, name in enumerate(names, 1))
    sql = f"INSERT INTO background_jobs ({', '.join(names)}) VALUES ({placeholders}) RETURNING id"
    job_id: int = await conn.fetchval(sql, *values)
    return job_id


async def status_counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM background_jobs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


# -- crashes and shutdown --------------------------------------------------------------------


async def test_sigkill_mid_job_loses_nothing(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    await conn.execute(HANDLER_RUNS)
    job_id = await insert_job(conn, "record_run", {"sleep_first_attempt": 600})
    env = daemon_env(lease_seconds=2, worker_id="A")
    a = children.start(db_url, *RUN, name="A", env=env)
    await wait_for(conn, "SELECT count(*) FROM handler_runs WHERE job_id = $1", job_id, expect=1, timeout=30)
    lease_expires_at = await conn.fetchval("SELECT lease_expires_at FROM background_jobs WHERE id = $1", job_id)

    killed_at = time.monotonic()
    os.kill(a.pid, signal.SIGKILL)
    assert await a.wait(10) == -signal.SIGKILL
    children.start(db_url, *RUN, name="B", env={**env, "JOBRUNNER_WORKER_ID": "B"})
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed", timeout=20)
    kill_to_completion = time.monotonic() - killed_at

    row = await job_row(conn, job_id)
    runs = await conn.fetch("SELECT worker_id, attempt FROM handler_runs WHERE job_id = $1 ORDER BY attempt", job_id)
    after_lease = (row["finished_at"] - lease_expires_at).total_seconds()
    print(f"SIGKILL -> completed by B: {kill_to_completion:.2f}s (lease 2s; {after_lease:.2f}s after the lease end)")
    assert (row["worker_id"], row["attempts"], row["release_count"]) == ("B", 2, 0)
    assert [(r["worker_id"], r["attempt"]) for r in runs] == [("A", 1), ("B", 2)]
    # the lease was at most 2 s from running out when A died; B starts, rescues and runs it quickly
    assert kill_to_completion < 2 + 4, kill_to_completion
    assert after_lease < 3, after_lease


async def test_a_paused_worker_loses_its_lease_and_writes_nothing(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    """SIGSTOP past the lease: B reruns the job; when A wakes up its late work must not count."""
    await conn.execute(HANDLER_RUNS)
    job_id = await insert_job(conn, "record_run", {"sleep_first_attempt": 3})
    env = daemon_env(lease_seconds=2, worker_id="A")
    a = children.start(db_url, *RUN, name="A", env=env)
    await wait_for(conn, "SELECT count(*) FROM handler_runs WHERE job_id = $1", job_id, expect=1, timeout=30)
    a.send(signal.SIGSTOP)
    try:
        children.start(db_url, *RUN, name="B", env={**env, "JOBRUNNER_WORKER_ID": "B"})
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed")
    finally:
        a.send(signal.SIGCONT)
    # A notices (heartbeat: lease lost, or its outcome is fenced off) and stays up
    await wait_until(
        lambda: any(e.startswith(("lease lost", "outcome discarded")) for e in a.event_names()),
        timeout=15,
    )
    assert a.proc.poll() is None
    a.send(signal.SIGTERM)
    assert await a.wait(15) == 0
    row = await job_row(conn, job_id)
    assert (row["status"], row["worker_id"], row["attempts"], json.loads(row["result"])) == ("completed", "B", 2, "B")
    runs = await conn.fetch("SELECT worker_id, attempt FROM handler_runs WHERE job_id = $1 ORDER BY attempt", job_id)
    assert [(r["worker_id"], r["attempt"]) for r in runs] == [("A", 1), ("B", 2)]


async def test_sigterm_lets_a_running_job_finish(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    job_id = await insert_job(conn, "sleep", {"seconds": 1.0})
    daemon = children.start(db_url, *RUN, env=daemon_env(shutdown_grace=10))
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="running", timeout=30)
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(15) == 0
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["release_count"]) == ("completed", 1, 0)
    assert "daemon stopped" in daemon.event_names()


async def test_sigterm_hands_back_a_job_that_outlasts_the_grace(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "sleep", {"seconds": 600})
    daemon = children.start(db_url, *RUN, env=daemon_env(shutdown_grace=0.3))
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="running", timeout=30)
    signalled_at = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(15) == 0
    took = time.monotonic() - signalled_at
    print(f"SIGTERM with a 0.3s grace -> exit after {took:.2f}s")
    assert took < 0.3 + 2.0
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["release_count"]) == ("pending", 0, 1)
    assert row["lease_expires_at"] is None


async def test_a_second_signal_stops_at_once(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    job_id = await insert_job(conn, "sleep", {"seconds": 600})
    daemon = children.start(db_url, *RUN, env=daemon_env(shutdown_grace=30))
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="running", timeout=30)
    signalled_at = time.monotonic()
    daemon.send(signal.SIGTERM)
    # the first signal was handled (the daemon is draining) before the second one comes
    await wait_until(lambda: "waiting for running jobs to finish" in daemon.event_names(), timeout=10)
    daemon.send(signal.SIGINT)
    assert await daemon.wait(15) == 0
    took = time.monotonic() - signalled_at
    print(f"SIGTERM then SIGINT with a 30s grace -> exit after {took:.2f}s")
    assert took < 5
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["release_count"]) == ("pending", 0, 1)
    assert "stopping now: running jobs are handed back" in daemon.event_names()


# -- burst and replicas ----------------------------------------------------------------------


async def test_burst_exits_when_nothing_is_runnable(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    # 50 fail for good, 50 retry at once twice (RetryLater(0)), 100 succeed
    await conn.execute(
        """
        INSERT INTO background_jobs (job_type, payload, max_attempts)
        SELECT CASE WHEN i % 4 = 0 THEN 'fail_permanently' WHEN i % 4 = 1 THEN 'retry_later' ELSE 'noop' END,
               jsonb_build_object('succeed_on', 3, 'delay', 0), 5
        FROM generate_series(1, 200) AS i
        """
    )
    started_at = time.monotonic()
    daemon = children.start(db_url, *RUN, "--burst", env=daemon_env(concurrency=20))
    assert await daemon.wait(60) == 0
    print(f"--burst: 200 jobs in {time.monotonic() - started_at:.2f}s (process start included)")

    leftovers = await conn.fetchval(
        """
        SELECT count(*) FROM background_jobs
        WHERE status = 'running' OR (status = 'pending' AND scheduled_at <= now())
        """
    )
    assert leftovers == 0
    by_type = {
        (r["job_type"], r["status"], r["attempts"]): r["n"]
        for r in await conn.fetch(
            "SELECT job_type, status, attempts, count(*) AS n FROM background_jobs GROUP BY 1, 2, 3"
        )
    }
    assert by_type == {
        ("fail_permanently", "failed", 1): 50,
        ("retry_later", "completed", 3): 50,
        ("noop", "completed", 1): 100,
    }
    assert "burst: no runnable job left" in daemon.event_names()


async def test_burst_waits_for_its_own_retries_due_within_the_poll_interval(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    job_id = await insert_job(conn, "retry_later", {"succeed_on": 3, "delay": 0.05})
    daemon = children.start(db_url, *RUN, "--burst", env=daemon_env(poll_interval=0.05))
    assert await daemon.wait(30) == 0
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempts"]) == ("completed", 3)


async def test_replicas_never_run_a_job_twice(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    await conn.execute(HANDLER_RUNS)
    await conn.execute("ALTER TABLE handler_runs ADD CONSTRAINT handler_runs_once UNIQUE (job_id)")
    await conn.execute(
        "INSERT INTO background_jobs (job_type) SELECT 'record_run' FROM generate_series(1, 2000)",
    )
    started_at = time.monotonic()
    replicas = [
        children.start(db_url, *RUN, "--burst", name=f"w{i}", env=daemon_env(concurrency=20, worker_id=f"w{i}"))
        for i in range(3)
    ]
    codes = [await replica.wait(120) for replica in replicas]
    print(f"3 replicas x 20: 2000 jobs in {time.monotonic() - started_at:.2f}s")
    assert codes == [0, 0, 0]

    runs = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT job_id) AS jobs FROM handler_runs")
    assert (runs["n"], runs["jobs"]) == (2000, 2000)
    jobs = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE attempts = 1) AS first_attempt,
               count(*) FILTER (WHERE result #>> '{}' = worker_id) AS result_matches_worker
        FROM background_jobs
        """
    )
    assert dict(jobs) == {"completed": 2000, "first_attempt": 2000, "result_matches_worker": 2000}
    # every execution was by the worker that holds the job
    mismatched = await conn.fetchval(
        "SELECT count(*) FROM handler_runs r JOIN background_jobs j ON j.id = r.job_id WHERE r.worker_id <> j.worker_id"
    )
    assert mismatched == 0
    share = await conn.fetch("SELECT worker_id, count(*) AS n FROM handler_runs GROUP BY 1 ORDER BY 1")
    print("jobs per replica:", {r["worker_id"]: r["n"] for r in share})
    assert len(share) >= 2


# -- the database going away -----------------------------------------------------------------


async def test_survives_connections_cut_by_the_server(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    daemon = children.start(db_url, *RUN, env=daemon_env(concurrency=10))
    await wait_until(lambda: "listening for new jobs" in daemon.event_names(), timeout=30)
    terminated = 0
    for _round in range(3):
        for _batch in range(5):
            await conn.execute(
                "INSERT INTO background_jobs (job_type) SELECT 'touch_db' FROM generate_series(1, 20)",
            )
            await asyncio.sleep(0.05)
        terminated += await conn.fetchval(
            """
            SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
            FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
            """
        )
    print(f"terminated {terminated} backends of the daemon in 3 rounds")
    assert terminated >= 3

    await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status = 'completed'", expect=300, timeout=60)
    assert daemon.proc.poll() is None, "the daemon died"
    events = daemon.event_names()
    reconnects = [e for e in events if "reconnect" in e or "failed, retrying" in e or "reachable again" in e]
    print("reconnect log lines:", reconnects)
    assert events.count("listening for new jobs") >= 2  # LISTEN came back after a cut
    assert reconnects
    assert await status_counts(conn) == {"completed": 300}

    daemon.send(signal.SIGTERM)
    assert await daemon.wait(15) == 0


async def test_poll_only_mode_runs_an_inserted_job(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    daemon = children.start(db_url, *RUN, "--no-listen", "--poll-interval", "0.1")
    await wait_until(lambda: "daemon started" in daemon.event_names(), timeout=30)
    job_id = await insert_job(conn, "noop")
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed", timeout=10)
    started = next(e for e in daemon.events() if e.get("event") == "daemon started")
    assert started["listen"] is False
    assert "listening for new jobs" not in daemon.event_names()
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(15) == 0


# -- the CLI ---------------------------------------------------------------------------------


async def test_migrate_twice(empty_db_url: str, children: Children) -> None:
    first = await children.run(empty_db_url, "migrate")
    assert first.proc.returncode == 0
    assert first.stdout().startswith("applied: jobrunner/0001_baseline")
    second = await children.run(empty_db_url, "migrate")
    assert second.proc.returncode == 0
    assert second.stdout().strip() == "database is up to date"


async def test_enqueue_prints_the_id(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    done = await children.run(db_url, "enqueue", "noop", "--payload", '{"n": 1}', "--priority", "5")
    assert done.proc.returncode == 0, done.stderr()
    job_id = int(done.stdout().strip())
    row = await job_row(conn, job_id)
    assert (row["job_type"], json.loads(row["payload"]), row["priority"], row["status"]) == (
        "noop",
        {"n": 1},
        5,
        "pending",
    )


async def test_enqueue_rejects_a_payload_that_is_not_json(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    done = await children.run(db_url, "enqueue", "noop", "--payload", "not json")
    assert done.proc.returncode == 2
    assert "--payload is not valid JSON" in done.stderr()
    assert "Traceback" not in done.stderr()
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 0


async def test_status_json_matches_the_database(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    await conn.execute(
        """
        INSERT INTO background_jobs (job_type, status, attempts, finished_at, last_error)
        SELECT t, s, 1, CASE WHEN s = 'pending' THEN NULL ELSE now() END,
               CASE WHEN s IN ('failed', 'dead') THEN 'boom' END
        FROM (VALUES ('a', 'pending', 3), ('a', 'completed', 2), ('b', 'dead', 1), ('b', 'failed', 4))
             AS v(t, s, n), generate_series(1, v.n)
        """
    )
    done = await children.run(db_url, "status", "--json")
    assert done.proc.returncode == 0, done.stderr()
    status = json.loads(done.stdout())
    reported = {(c["job_type"], c["status"]): c["jobs"] for c in status["counts"]}
    in_db = {
        (r["job_type"], r["status"]): r["n"]
        for r in await conn.fetch("SELECT job_type, status, count(*) AS n FROM background_jobs GROUP BY 1, 2")
    }
    assert reported == in_db == {("a", "pending"): 3, ("a", "completed"): 2, ("b", "dead"): 1, ("b", "failed"): 4}
    assert [(r["queue"], r["runnable"]) for r in status["runnable"]] == [("default", 3)]
    assert len(status["recent_failures"]) == 5


async def test_retry_and_cancel(db_url: str, conn: asyncpg.Connection, children: Children) -> None:
    dead = await insert_job(conn, "noop", status="dead", attempts=5)
    others = [await insert_job(conn, "t", status=s, attempts=2) for s in ("dead", "failed", "completed")]
    pending = await insert_job(conn, "noop")

    done = await children.run(db_url, "retry", str(dead))
    assert done.proc.returncode == 0, done.stderr()
    row = await job_row(conn, dead)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    # a job that is not finished-without-success cannot be retried
    again = await children.run(db_url, "retry", str(dead))
    assert again.proc.returncode == 1
    assert "is not failed, dead or cancelled" in again.stderr()

    by_type = await children.run(db_url, "retry", "--type", "t")
    assert by_type.proc.returncode == 0, by_type.stderr()
    assert by_type.stdout().strip() == "requeued 2 job(s)"
    assert [(await job_row(conn, i))["status"] for i in others] == ["pending", "pending", "completed"]

    cancel = await children.run(db_url, "cancel", str(pending))
    assert cancel.proc.returncode == 0, cancel.stderr()
    assert (await job_row(conn, pending))["status"] == "cancelled"
    finished = await children.run(db_url, "cancel", str(others[2]))
    assert finished.proc.returncode == 3  # nothing to cancel (1 is "no such job")
    assert f"job {others[2]} has already ended completed" in finished.stderr()
    assert (await job_row(conn, others[2]))["status"] == "completed"


async def test_run_on_an_unmigrated_database_says_to_migrate(empty_db_url: str, children: Children) -> None:
    daemon = children.start(empty_db_url, *RUN)
    assert await daemon.wait(30) == 2
    assert "run `jobrunner migrate`" in daemon.stderr()
    assert "Traceback" not in daemon.stderr()


async def test_an_invalid_setting_is_named(db_url: str, children: Children) -> None:
    daemon = children.start(db_url, *RUN, env={"JOBRUNNER_CONCURRENCY": "0"})
    assert await daemon.wait(30) == 2
    err = daemon.stderr()
    assert "invalid settings" in err
    assert "JOBRUNNER_CONCURRENCY" in err
    assert "Traceback" not in err


# -- secrets ---------------------------------------------------------------------------------


async def test_the_database_password_never_reaches_the_logs(
    db_url: str, conn: asyncpg.Connection, children: Children
) -> None:
    password = "S3cr3t-pw-xyz"
    parts = urlsplit(db_url)
    # the local server trusts 127.0.0.1, so it accepts any password: the URL just has to carry one
    secret_url = url_as(db_url, parts.username or "postgres", password)
    await insert_job(conn, "noop")
    await insert_job(conn, "fail_permanently")
    await insert_job(conn, "no_such_type")
    env = daemon_env(log_level="debug")
    daemon = children.start(secret_url, *RUN, env=env)
    await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status <> 'pending'", expect=3, timeout=30)
    # error paths log the most: a cut LISTEN connection, and a claim failing in an unexpected way
    # (logged with a traceback, and structlog's dict tracebacks show the frames' local variables)
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    await conn.execute("ALTER TABLE background_jobs RENAME TO background_jobs_away")
    try:
        await wait_until(lambda: "claiming jobs failed unexpectedly, retrying" in daemon.event_names(), timeout=15)
    finally:
        await conn.execute("ALTER TABLE background_jobs_away RENAME TO background_jobs")
    job_id = await insert_job(conn, "noop")
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed", timeout=30)
    daemon.send(signal.SIGTERM)
    assert await daemon.wait(15) == 0

    commands = [
        await children.run(secret_url, "migrate"),
        await children.run(secret_url, "enqueue", "noop"),
        await children.run(secret_url, "status"),
        await children.run(secret_url, "status", "--json"),
        await children.run(secret_url, "enqueue", "noop", "--payload", "not json"),
    ]
    for child in [daemon, *commands]:
        output = child.stdout() + child.stderr()
        assert password not in output, f"{child.name} printed the password"
    # the daemon did say which database it uses, redacted
    started = next(e for e in daemon.events() if e.get("event") == "daemon started")
    assert "***" in started["database"]
