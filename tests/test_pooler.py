"""Through PgBouncer in transaction mode (what Supabase's pooler on 6543 does): the daemon and both
clients with `?pgbouncer=true`, polling standing in for LISTEN; a direct URL for LISTEN; what
breaks without the flag; and `jobrunner migrate` through the pooler.

PgBouncer comes from Debian's package (`.ci/run` installs it). It runs as a child process of the
test session, as the `postgres` OS user when the tests run as root (PgBouncer refuses root), on a
free 127.0.0.1 port, with a generated ini; it is stopped when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest

from jobrunner import AsyncClient, Client, NewJob
from jobrunner.dsn import parse_database_url
from tests.support import jobrunner_process, wait_for, wait_until

RUN = ("run", "--handlers", "tests.process_handlers")
COMPLETED = "SELECT count(*) FROM background_jobs WHERE status = 'completed'"


@dataclass
class PgBouncer:
    proc: subprocess.Popen[bytes]
    port: int
    directory: Path

    def url_for(self, db_url: str, query: str = "") -> str:
        """db_url's database and user, through the pooler."""
        parts = urlsplit(db_url)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def log(self) -> str:
        return (self.directory / "pgbouncer.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # PgBouncer: SIGINT is a safe shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_pgbouncer(server_url: str, **settings: str | int) -> PgBouncer:
    """A PgBouncer in transaction mode in front of server_url's host and port."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if binary is None:
        pytest.skip("pgbouncer is not installed (.ci/run installs it: apt-get install pgbouncer)")
    server = urlsplit(server_url)
    if not server.hostname or server.hostname.startswith("/"):
        pytest.skip("the test server listens on a Unix socket only; PgBouncer needs its TCP address")
    user = server.username or "postgres"
    port = _free_port()
    directory = Path(tempfile.mkdtemp(prefix="jobrunner-pgbouncer-"))
    options: dict[str, str | int] = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(directory / "userlist.txt"),
        "pool_mode": "transaction",
        "max_client_conn": 500,
        "default_pool_size": 20,
        # asyncpg and psycopg send these startup parameters; PgBouncer must not refuse them
        "ignore_startup_parameters": "extra_float_digits,application_name,search_path",
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        "admin_users": user,
        **settings,
    }
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = host={server.hostname} port={server.port or 5432}\n\n[pgbouncer]\n"
        + "".join(f"{key} = {value}\n" for key, value in options.items())
    )
    popen: dict[str, Any] = {}
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: run it as the postgres OS user (the directory is theirs)
        account = pwd.getpwnam("postgres")
        for path in [directory, *directory.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        popen = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    proc = subprocess.Popen(
        [binary, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory, **popen
    )
    bouncer = PgBouncer(proc, port, directory)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            log = bouncer.log() if (directory / "pgbouncer.log").exists() else ""
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}: {log[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return bouncer
        if time.monotonic() > deadline:
            bouncer.stop()
            raise RuntimeError("pgbouncer did not start listening within 15 s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def pgbouncer(admin_url: str) -> Iterator[PgBouncer]:
    bouncer = start_pgbouncer(admin_url)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def _daemon(
    url: str, log: Path, children: list[subprocess.Popen[bytes]], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = jobrunner_process(url, *RUN, env=env, stdout=out, stderr=subprocess.STDOUT)
    children.append(proc)
    return proc


async def test_daemon_and_both_clients_through_a_transaction_pooler(
    db_url: str, conn: asyncpg.Connection, pgbouncer: PgBouncer, children: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    pooled = pgbouncer.url_for(db_url, "pgbouncer=true")
    log = tmp_path / "daemon.log"
    daemon = _daemon(pooled, log, children, {"JOBRUNNER_CONCURRENCY": "20", "JOBRUNNER_POLL_INTERVAL": "0.1"})

    # the clients as an app would open them on a pooler URL: the flag stripped, no named statements
    url = parse_database_url(pooled)
    assert url.behind_pooler
    pool = await asyncpg.create_pool(url.url, min_size=2, max_size=4, statement_cache_size=0)
    assert pool is not None
    try:
        client = AsyncClient(pool)
        # job id -> the attempt it succeeds on (and returns)
        expected = {await client.enqueue("flaky", {"succeed_on": 1 + i % 3}): 1 + i % 3 for i in range(60)}
        many = await client.enqueue_many([NewJob("flaky", {"succeed_on": 1 + i % 3}) for i in range(140)])
        expected |= {job_id: 1 + i % 3 for i, job_id in enumerate(many)}
        with psycopg.connect(url.url, prepare_threshold=None, autocommit=True) as pg:
            sync = Client(pg)
            expected |= {sync.enqueue("flaky", {"succeed_on": 1 + i % 3}): 1 + i % 3 for i in range(50)}
            many = sync.enqueue_many([NewJob("flaky", {"succeed_on": 1 + i % 3}) for i in range(50)])
            expected |= {job_id: 1 + i % 3 for i, job_id in enumerate(many)}
        # a dedupe key through the pooler returns the live job
        keyed = await client.enqueue("sleep", {"seconds": 0.01}, dedupe_key="pooled:1", delay=60)
        assert await client.enqueue("sleep", {"seconds": 0.01}, dedupe_key="pooled:1") == keyed
        assert await client.cancel(keyed) == "cancelled"

        await wait_for(conn, COMPLETED, expect=300, timeout=60)
        records = {job_id: await client.get(job_id) for job_id in expected}
    finally:
        await pool.close()

    # correct results: each job retried until its attempt succeeded, and says so
    assert len(records) == 300
    for job_id, record in records.items():
        assert record is not None
        attempt = expected[job_id]
        assert (record.status, record.attempts, record.result) == ("completed", attempt, attempt), record
    assert daemon.poll() is None, "the daemon died"
    daemon.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 20) == 0
    output = log.read_text()
    assert "prepared statement" not in output
    assert "no listen_database_url is set: polling only" in output
    assert "Traceback" not in output


async def test_listen_on_a_direct_url_wakes_the_pooled_daemon_at_once(
    db_url: str, conn: asyncpg.Connection, pgbouncer: PgBouncer, children: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "daemon.log"
    # polling every 30 s: only a notification can start a job within a few seconds
    env = {"JOBRUNNER_LISTEN_DATABASE_URL": db_url, "JOBRUNNER_POLL_INTERVAL": "30"}
    _daemon(pgbouncer.url_for(db_url, "pgbouncer=true"), log, children, env)
    await wait_until(lambda: "listening for new jobs" in log.read_text(), timeout=30, what="LISTEN")
    # let the first poll pass (it runs right after LISTEN starts), so the next one is 30 s away
    await asyncio.sleep(0.5)
    for _ in range(3):
        started = time.monotonic()
        job_id = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('noop') RETURNING id")
        await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", job_id, expect="completed", timeout=5)
        assert time.monotonic() - started < 3


async def test_without_the_flag_cached_prepared_statements_break(db_url: str, pgbouncer: PgBouncer) -> None:
    """Why `?pgbouncer=true` matters: asyncpg's default statement cache names statements on one
    server connection, and the pooler runs the next transaction on another."""
    url = pgbouncer.url_for(db_url)
    holder = await asyncpg.connect(url, statement_cache_size=0)
    cached = await asyncpg.connect(url)  # the default: statements cached by name
    try:
        with pytest.raises(asyncpg.exceptions.InvalidSQLStatementNameError, match="does not exist"):
            for _ in range(20):
                async with holder.transaction():  # takes a server connection for a moment…
                    await holder.execute("SELECT 1")
                    await cached.fetchval("SELECT count(*) FROM background_jobs")  # …so this gets another
                await cached.fetchval("SELECT count(*) FROM background_jobs")
    finally:
        await holder.close()
        cached.terminate()


async def test_migrate_through_the_pooler_applies_and_leaves_no_lock(
    empty_db_url: str, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    out = tmp_path / "migrate.log"
    with out.open("wb") as log:
        proc = jobrunner_process(
            pgbouncer.url_for(empty_db_url, "pgbouncer=true"), "migrate", stdout=log, stderr=subprocess.STDOUT
        )
    assert await asyncio.to_thread(proc.wait, 60) == 0, out.read_text()
    assert "applied:" in out.read_text()
    direct = await asyncpg.connect(empty_db_url)
    try:
        assert await direct.fetchval("SELECT count(*) FROM jobrunner_migrations") >= 6
        # the migration lock is a transaction-level lock (pg_advisory_xact_lock) taken inside the
        # run's one transaction, which the pooler keeps on one server connection: nothing is left held
        left = await direct.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert left == 0
    finally:
        await direct.close()


async def test_migrate_through_a_round_robin_pooler_releases_its_lock(empty_db_url: str, admin_url: str) -> None:
    from jobrunner.migrate import migrate

    # round robin: each transaction goes to the least recently used of 25 idle server connections,
    # as on a busy pooler; migrate() runs fewer than 25 statements between its lock and its unlock,
    # so the unlock lands on another server connection than the lock
    size = 25
    bouncer = start_pgbouncer(admin_url, server_round_robin=1, default_pool_size=size)
    direct = await asyncpg.connect(empty_db_url)
    try:
        pooled = bouncer.url_for(empty_db_url)
        warm = [await asyncpg.connect(pooled, statement_cache_size=0) for _ in range(size)]
        async with contextlib.AsyncExitStack() as stack:  # each holds a server connection at once
            for c in warm:
                await stack.enter_async_context(c.transaction())
                await c.execute("SELECT 1")
        for c in warm:
            await c.close()
        client = await asyncpg.connect(pooled, statement_cache_size=0)
        try:
            await migrate(client, "public")
        finally:
            await client.close()
        left = await direct.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert left == 0, "the migration lock is still held by a pooled server connection"
    finally:
        await direct.close()
        bouncer.stop()
