"""Least privilege, proved by logging in: Supabase's `anon`/`authenticated` see nothing of the
queue, `jobrunner_enqueuer` adds jobs and nothing else, and a real daemon runs as a login role
that is only a member of `jobrunner_worker`. Secrets stay out of logs, errors, /metrics and
`status`; the ops endpoint binds to 127.0.0.1 and serves only its three paths.

tests/test_migrations.py checks the grants on background_jobs and enqueue_job with SET ROLE;
here every check is a real login (a LOGIN role that is a member of the group role), and it covers
the other tables and functions too.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from jobrunner import AsyncClient, NewJob
from jobrunner.migrate import migrate
from tests.support import database_url_for, jobrunner_process, url_as, wait_for, wait_until
from tests.test_migrations import ENSURE_SUPABASE_ROLES

# table -> a text column to try to write
QUEUE_TABLES = {
    "background_jobs": "status",
    "jobrunner_leaders": "holder",
    "jobrunner_limit_state": "pause_reason",
    "jobrunner_queue_limit_state": "queue",
    "jobrunner_schedules": "updated_by",
    "jobrunner_queue_pauses": "paused_by",
    "jobrunner_audit": "actor",
    "jobrunner_migrations": "name",
}
# the queue tables with row level security (jobrunner_migrations holds no job data)
ROW_SECURED = list(QUEUE_TABLES)[:-1]
QUEUE_FUNCTIONS = [
    "enqueue_job('x')",
    "cancel_job(1)",
    "claim_jobs('me', 30, 1, 1000, ARRAY['default'], 1, true, ARRAY['x'], ARRAY[1], ARRAY[1], ARRAY[NULL::int],"
    " ARRAY[60], ARRAY[NULL::int], ARRAY['ai'], ARRAY[1], ARRAY[NULL::int], ARRAY[60])",
    "claim_part('queue', ARRAY['default'], '{}', NULL, NULL, 1, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " '{}', 1000, false)",
    "claim_walk_queue('default', '{}', 1)",
    "claim_walk_type('x', ARRAY['default'], 1)",
    "claim_walk_keys('x', ARRAY['default'], 1, 1)",
]
RUN = ("run", "--handlers", "tests.process_handlers")


def as_user(db_url: str, user: str, password: str | None = None) -> str:
    return url_as(db_url, user, password)


@pytest.fixture
async def supabase_db(empty_db_url: str) -> AsyncIterator[str]:
    """A database migrated the way Supabase's would be: anon/authenticated get every new object in public."""
    conn = await asyncpg.connect(empty_db_url)
    try:
        await conn.execute(ENSURE_SUPABASE_ROLES)
        await conn.execute(
            """
            GRANT USAGE ON SCHEMA public TO anon, authenticated;
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated;
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated;
            """
        )
        await migrate(conn, "public")
        await conn.execute(
            "INSERT INTO background_jobs (job_type, payload) VALUES ('secret', '{\"token\": \"s3cr3t\"}');"
            "INSERT INTO jobrunner_leaders (name, holder, expires_at) VALUES ('queue_sampler', 'w', now());"
            "INSERT INTO jobrunner_limit_state (job_type) VALUES ('limited');"
            "INSERT INTO jobrunner_queue_limit_state (queue) VALUES ('ai');"
            "INSERT INTO jobrunner_schedules (name, definition) VALUES ('nightly', '{}');"
            "INSERT INTO jobrunner_queue_pauses (queue, paused_by) VALUES ('emails', 'ops');"
            "INSERT INTO jobrunner_audit (actor, via, action, target) VALUES ('ops', 'cli', 'pause_queue', '{}');"
        )
    finally:
        await conn.close()
    yield empty_db_url


@pytest.fixture
async def login_role(admin_url: str) -> AsyncIterator[Any]:
    """login_role(member_of) -> the name of a new LOGIN role in that group; dropped afterwards."""
    created: list[str] = []
    admin = await asyncpg.connect(admin_url)

    async def make(member_of: str) -> str:
        name = f"jr_test_{member_of}_{uuid.uuid4().hex[:8]}"
        await admin.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE {member_of}")
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            # the test databases are dropped later; their objects owned by the role are none
            for _ in range(50):
                try:
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
                    )
                    await admin.execute(f"DROP ROLE IF EXISTS {name}")
                    break
                except asyncpg.DependentObjectsStillRemainError:
                    # privileges granted in a test database: revoke them there first
                    for db in await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'jobrunner_%'"):
                        with_db = await asyncpg.connect(database_url_for(admin_url, db[0]))
                        try:
                            await with_db.execute(f"DROP OWNED BY {name}")
                        finally:
                            await with_db.close()
                except asyncpg.PostgresError:
                    await asyncio.sleep(0.1)
        await admin.close()


# -- anon and authenticated ------------------------------------------------------------------


@pytest.mark.parametrize("group", ["anon", "authenticated"])
async def test_supabase_roles_see_nothing_of_the_queue(supabase_db: str, login_role: Any, group: str) -> None:
    user = await login_role(group)
    conn = await asyncpg.connect(as_user(supabase_db, user))
    try:
        assert await conn.fetchval("SELECT current_user") == user
        for table, column in QUEUE_TABLES.items():
            for statement in (f"SELECT * FROM {table}", f"DELETE FROM {table}", f"UPDATE {table} SET {column} = 'x'"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO background_jobs (job_type) VALUES ('sneaky')")
        for call in QUEUE_FUNCTIONS:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"SELECT {call}")
    finally:
        await conn.close()


@pytest.mark.parametrize("group", ["anon", "authenticated"])
async def test_row_security_hides_every_queue_table_even_when_granted(
    supabase_db: str, login_role: Any, group: str
) -> None:
    """A dashboard click grants a table to everyone: row level security still shows nothing."""
    admin = await asyncpg.connect(supabase_db)
    try:
        for table in ROW_SECURED:
            await admin.execute(f"GRANT SELECT, UPDATE, DELETE ON {table} TO {group}")
    finally:
        await admin.close()
    user = await login_role(group)
    conn = await asyncpg.connect(as_user(supabase_db, user))
    try:
        for table in ROW_SECURED:
            assert await conn.fetch(f"SELECT * FROM {table}") == [], table
            assert await conn.fetch(f"DELETE FROM {table} RETURNING 1") == [], table
    finally:
        await conn.close()


# -- the enqueuer ------------------------------------------------------------------------------


async def test_enqueuer_adds_jobs_and_reads_or_changes_nothing(supabase_db: str, login_role: Any) -> None:
    user = await login_role("jobrunner_enqueuer")
    conn = await asyncpg.connect(as_user(supabase_db, user))
    try:
        await conn.execute("INSERT INTO background_jobs (job_type, payload) VALUES ('plain', '{\"a\": 1}')")
        no_key = await conn.fetchval("SELECT enqueue_job('rpc', '{\"b\": 2}')")
        keyed = await conn.fetchval("SELECT enqueue_job(job_type => 'rpc', dedupe_key => 'rpc:1')")
        again = await conn.fetchval("SELECT enqueue_job(job_type => 'rpc', dedupe_key => 'rpc:1')")
        assert no_key is not None and keyed is not None and again == keyed
        client_id = await AsyncClient(conn).enqueue("via_client", {"c": 3}, priority=5)
        assert client_id is not None

        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT payload FROM background_jobs")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE background_jobs SET priority = 100")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM background_jobs")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT cancel_job($1)", no_key)
        for table in list(QUEUE_TABLES)[1:]:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {table}")
    finally:
        await conn.close()

    admin = await asyncpg.connect(supabase_db)
    try:
        rows = await admin.fetch("SELECT job_type, status FROM background_jobs WHERE job_type <> 'secret' ORDER BY id")
        assert [tuple(r) for r in rows] == [
            ("plain", "pending"),
            ("rpc", "pending"),
            ("rpc", "pending"),
            ("via_client", "pending"),
        ]
    finally:
        await admin.close()


async def test_enqueuer_can_enqueue_many(supabase_db: str, login_role: Any) -> None:
    user = await login_role("jobrunner_enqueuer")
    conn = await asyncpg.connect(as_user(supabase_db, user))
    try:
        ids = await AsyncClient(conn).enqueue_many([NewJob("bulk", {"n": i}) for i in range(3)])
        assert len(ids) == 3
    finally:
        await conn.close()


# -- a real daemon as jobrunner_worker ---------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def start(
    processes: list[subprocess.Popen[bytes]], url: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = jobrunner_process(url, *args, env=env, stdout=out, stderr=subprocess.STDOUT)
    processes.append(proc)
    return proc


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


async def test_a_daemon_runs_as_a_plain_member_of_jobrunner_worker(
    db_url: str, conn: asyncpg.Connection, login_role: Any, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    user = await login_role("jobrunner_worker")
    assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = $1", user)
    log = tmp_path / "daemon.log"
    env = {
        # every service that writes: limited claims, the scheduler, the sampler's leader lease, the pruner
        "JOBRUNNER_LIMITS": json.dumps({"noop": {"max_running": 2, "rate": 100, "per_seconds": 1}}),
        "JOBRUNNER_SCHEDULES": json.dumps([{"name": "every_minute", "cron": "* * * * *", "job_type": "noop"}]),
        "JOBRUNNER_SAMPLE_INTERVAL": "0.2",
        "JOBRUNNER_PRUNE_INTERVAL": "0.5",
        "JOBRUNNER_RETENTION_SECONDS": "3600",
    }
    daemon = start(processes, as_user(db_url, user), log, *RUN, env=env)
    ids = [await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('noop') RETURNING id") for _ in range(5)]
    ids.append(
        await conn.fetchval(
            "INSERT INTO background_jobs (job_type, payload) VALUES ('flaky', '{\"succeed_on\": 2}') RETURNING id"
        )
    )
    ids.append(await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('fail_permanently') RETURNING id"))
    sleeper = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload) VALUES ('sleep', '{\"seconds\": 30}') RETURNING id"
    )
    await wait_for(
        conn,
        "SELECT count(*) FROM background_jobs WHERE id = ANY($1) AND status IN ('completed', 'failed')",
        ids,
        expect=len(ids),
        timeout=30,
    )
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", sleeper, expect="running")
    assert await conn.fetchval("SELECT cancel_job($1)", sleeper) == "cancelling"
    await wait_for(conn, "SELECT status FROM background_jobs WHERE id = $1", sleeper, expect="cancelled")
    await wait_for(conn, "SELECT count(*) FROM jobrunner_schedules WHERE name = 'every_minute'", expect=1)
    await wait_for(conn, "SELECT count(*) FROM jobrunner_leaders WHERE name = 'queue_sampler'", expect=1)
    assert await conn.fetchval("SELECT count(*) FROM jobrunner_limit_state WHERE job_type = 'noop'") == 1
    statuses = await conn.fetch("SELECT job_type, status, attempts FROM background_jobs WHERE id = ANY($1)", ids)
    assert sorted(tuple(r) for r in statuses) == sorted(
        [("noop", "completed", 1)] * 5 + [("flaky", "completed", 2), ("fail_permanently", "failed", 1)]
    )

    daemon.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 20) == 0
    text = log.read_text()
    assert "permission denied" not in text and "InsufficientPrivilege" not in text, text[-3000:]
    assert [e for e in events(log) if e.get("level") in ("error", "critical")] == []

    status = start(processes, as_user(db_url, user), tmp_path / "status.log", "status", "--json")
    assert await asyncio.to_thread(status.wait, 30) == 0, (tmp_path / "status.log").read_text()


# -- secrets -----------------------------------------------------------------------------------

DB_PASSWORD = "Db-pa55word-9f2c"
SENTRY_KEY = "5e17c0ffee5e17c0ffee5e17c0ffee00"
OPENAI_KEY = "sk-test-0penAIsecretKEY4242"


async def test_no_secret_in_logs_errors_metrics_or_status(
    db_url: str, conn: asyncpg.Connection, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    secret_url = as_user(db_url, urlsplit(db_url).username or "postgres", DB_PASSWORD)
    env = {
        # loopback port 9 (discard): nothing listens, nothing leaves the machine
        "SENTRY_DSN": f"http://{SENTRY_KEY}@127.0.0.1:9/42",
        "OPENAI_API_KEY": OPENAI_KEY,
        "JOBRUNNER_LOG_LEVEL": "debug",
    }
    for job_type in ("noop", "fail_permanently", "no_such_type"):
        await conn.execute("INSERT INTO background_jobs (job_type) VALUES ($1)", job_type)
    dead = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, max_attempts) VALUES ('flaky', '{\"succeed_on\": 9}', 1)"
        " RETURNING id"
    )
    log = tmp_path / "daemon.log"
    daemon = start(processes, secret_url, log, *RUN, env=env)
    await wait_for(conn, "SELECT count(*) FROM background_jobs WHERE status IN ('pending', 'running')", expect=0)
    await wait_until(lambda: "metrics/health endpoint listening" in log.read_text(), timeout=20, what="ops server")
    listening = next(e for e in events(log) if e.get("event") == "metrics/health endpoint listening")
    assert listening["host"] == "127.0.0.1"
    port = int(listening["port"])
    assert listening_addresses(port) == {"127.0.0.1"}

    # error paths: cut connections, then a failing claim logged with its traceback
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    await conn.execute("ALTER TABLE background_jobs RENAME TO background_jobs_away")
    try:
        await wait_until(lambda: "claiming jobs failed unexpectedly" in log.read_text(), timeout=15, what="error")
    finally:
        await conn.execute("ALTER TABLE background_jobs_away RENAME TO background_jobs")

    pages = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        for path in ("/metrics", "/healthz", "/readyz"):
            response = await http.get(path)
            pages[path] = response.text
            assert response.status_code in (200, 503), path
        for path in ("/", "/env", "/debug/vars", "/metrics/../env", "/healthz/extra", "/.env", "/settings"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/readyz")).status_code == 405
    assert "jobrunner_jobs" in pages["/metrics"]

    daemon.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 20) == 0
    outputs = {"daemon log": log.read_text(errors="replace"), **{f"GET {p}": t for p, t in pages.items()}}
    for args in (
        ("status",),
        ("status", "--json"),
        ("status", "--job", str(dead)),
        ("enqueue", "noop", "--payload", "["),
    ):
        out = tmp_path / f"{'-'.join(args)}.log"
        proc = start(processes, secret_url, out, *args, env=env)
        await asyncio.to_thread(proc.wait, 30)
        outputs[" ".join(args)] = out.read_text(errors="replace")
    assert "dead" in outputs[f"status --job {dead}"]
    for where, text in outputs.items():
        for secret in (DB_PASSWORD, SENTRY_KEY, OPENAI_KEY):
            assert secret not in text, f"{where} shows a secret"


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            if width == 8:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
            else:
                found.add(f"ipv6:{address}")
    return found


def test_the_ops_endpoint_binds_to_localhost_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jobrunner.settings import Settings

    monkeypatch.delenv("JOBRUNNER_HTTP_HOST", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    assert Settings().http_host == "127.0.0.1"  # the bind itself is checked against a real daemon above
