"""The CLI as a user meets it: real `jobrunner` processes against a database of the test's own."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version

import asyncpg
import pytest

from jobrunner.cli import build_parser
from jobrunner.dsn import parse_database_url
from tests.support import jobrunner_process, url_as


def run_cli(db_url: str, *args: str, env: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    proc = jobrunner_process(db_url, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


# -- an unmigrated database ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["enqueue", "echo"],
        ["cancel", "1"],
        ["status"],
        ["status", "--job", "1"],
        ["retry", "1"],
        ["retry", "--type", "echo"],
        ["schedules"],
        ["pause", "emails"],
        ["resume", "emails"],
        ["pause"],
    ],
    ids=" ".join,
)
def test_every_command_on_an_unmigrated_database_says_to_migrate(empty_db_url: str, command: list[str]) -> None:
    result = run_cli(empty_db_url, *command)
    assert result.returncode == 2, result.stderr
    assert "run `jobrunner migrate` first" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["enqueue", "echo"], ["cancel", "1"]], ids=" ".join)
def test_a_schema_that_does_not_exist_says_to_migrate(db_url: str, command: list[str]) -> None:
    result = run_cli(db_url, *command, env={"JOBRUNNER_SCHEMA": "not_there"})
    assert result.returncode == 2, result.stderr
    assert "not_there" in result.stderr
    assert "run `jobrunner migrate` first" in result.stderr


# -- --version -------------------------------------------------------------------------------


@pytest.mark.process
def test_version_is_the_installed_distributions() -> None:
    result = run_cli("postgresql://postgres@127.0.0.1:1/unused", "--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"jobrunner {version('jobrunner')}"
    # the app's plugin is installed beside the core in development: named with its version
    assert f"plugin glow-app-jobs {version('glow-app-jobs')}" in lines[1:]


# -- --help ----------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser, prefix: str = "jobrunner") -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its full name (`jobrunner db url`), nested ones included."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[f"{prefix} {name}"] = child
                found.update(subcommands(child, f"{prefix} {name}"))
    return found


def test_every_command_and_option_has_a_description() -> None:
    commands = subcommands(build_parser())
    assert {"jobrunner run", "jobrunner enqueue", "jobrunner cancel"} <= commands.keys()
    undescribed = [name for name, parser in commands.items() if not parser.description]
    assert undescribed == []
    unexplained = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in commands.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert unexplained == []


@pytest.mark.process
def test_subcommand_help_shows_the_description() -> None:
    result = run_cli("postgresql://postgres@127.0.0.1:1/unused", "enqueue", "--help")
    assert result.returncode == 0
    assert "Enqueue one job and print its id" in result.stdout
    assert "the job's payload, a JSON object" in result.stdout


# -- retry -----------------------------------------------------------------------------------


async def test_retry_type_requeues_failed_and_dead_and_says_so(db_url: str, conn: asyncpg.Connection) -> None:
    ids = {}
    for job_type, status in [("x", "failed"), ("x", "dead"), ("x", "cancelled"), ("x", "completed"), ("y", "dead")]:
        ids[job_type, status] = await conn.fetchval(
            "INSERT INTO background_jobs (job_type, status, attempts, finished_at) VALUES ($1, $2, 1, now())"
            " RETURNING id",
            job_type,
            status,
        )
    result = run_cli(db_url, "retry", "--type", "x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "requeued 2 job(s)"
    after = {key: await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", i) for key, i in ids.items()}
    assert after == {
        ("x", "failed"): "pending",
        ("x", "dead"): "pending",
        ("x", "cancelled"): "cancelled",
        ("x", "completed"): "completed",
        ("y", "dead"): "dead",
    }
    # the help says what the command did
    commands = subcommands(build_parser())
    retry = commands["jobrunner retry"]
    type_help = next(a.help for a in retry._actions if a.dest == "type")
    assert type_help == "requeue every failed and every dead job of TYPE (its cancelled jobs are left alone)"
    listing = " ".join(build_parser().format_help().split())
    assert "requeue one failed, dead or cancelled job, or every failed and dead job of a type" in listing


# -- enqueue ---------------------------------------------------------------------------------


async def test_enqueue_takes_every_option_the_clients_take(db_url: str, conn: asyncpg.Connection) -> None:
    result = run_cli(
        db_url,
        "enqueue",
        "report",
        "--payload",
        '{"user": 7}',
        "--queue",
        "reports",
        "--priority",
        "3",
        "--run-at",
        "2030-01-31T09:00:00+01:00",
        "--max-attempts",
        "2",
        "--dedupe-key",
        "report:7",
        "--concurrency-key",
        "user:7",
    )
    assert result.returncode == 0, result.stderr
    row = await conn.fetchrow("SELECT * FROM background_jobs WHERE id = $1", int(result.stdout))
    assert row is not None
    assert (row["job_type"], json.loads(row["payload"]), row["queue"], row["priority"]) == (
        "report",
        {"user": 7},
        "reports",
        3,
    )
    assert row["scheduled_at"] == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)
    assert (row["max_attempts"], row["dedupe_key"], row["concurrency_key"]) == (2, "report:7", "user:7")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--run-at", "2030-01-31T09:00:00"], "has no UTC offset"),
        (["--run-at", "tomorrow"], "not an ISO 8601 time"),
        (["--run-at", "2030-01-31T09:00:00Z", "--delay", "5"], "not allowed with argument"),
    ],
    ids=["naive", "not-a-time", "with-delay"],
)
def test_enqueue_refuses_a_run_at_it_cannot_place(db_url: str, options: list[str], message: str) -> None:
    result = run_cli(db_url, "enqueue", "report", *options)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("payload", ["null", "[1, 2]", '"text"', "3"])
async def test_enqueue_refuses_a_payload_that_is_not_an_object(
    db_url: str, conn: asyncpg.Connection, payload: str
) -> None:
    result = run_cli(db_url, "enqueue", "report", "--payload", payload)
    assert result.returncode == 2
    assert "--payload must be a JSON object" in result.stderr
    assert await conn.fetchval("SELECT count(*) FROM background_jobs") == 0


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_says_what_state_the_job_is_in(db_url: str, conn: asyncpg.Connection) -> None:
    pending = await conn.fetchval("INSERT INTO background_jobs (job_type) VALUES ('report') RETURNING id")
    first = run_cli(db_url, "cancel", str(pending))
    assert (first.returncode, first.stdout.strip()) == (0, f"cancelled job {pending} (it was pending)")

    again = run_cli(db_url, "cancel", str(pending))
    assert again.returncode == 3
    assert f"job {pending} was already cancelled" in again.stderr
    assert "nothing to cancel" in again.stderr

    done = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, status, attempts, finished_at) VALUES ('report', 'completed', 1, now())"
        " RETURNING id"
    )
    finished = run_cli(db_url, "cancel", str(done))
    assert finished.returncode == 3
    assert f"job {done} has already ended completed" in finished.stderr
    assert await conn.fetchval("SELECT status FROM background_jobs WHERE id = $1", done) == "completed"

    missing = run_cli(db_url, "cancel", "999999")
    assert (missing.returncode, missing.stderr.strip()) == (1, "jobrunner: there is no job 999999")


async def test_cancel_of_a_running_job_asks_its_worker_once(db_url: str, conn: asyncpg.Connection) -> None:
    running = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, status, attempts, started_at, lease_expires_at, worker_id)"
        " VALUES ('report', 'running', 1, now(), now() + interval '1 hour', 'elsewhere') RETURNING id"
    )
    asked = run_cli(db_url, "cancel", str(running))
    assert asked.returncode == 0, asked.stderr
    assert f"job {running} is running: its worker was told to stop it" in asked.stdout
    requested_at = await conn.fetchval("SELECT cancel_requested_at FROM background_jobs WHERE id = $1", running)
    assert requested_at is not None

    again = run_cli(db_url, "cancel", str(running))
    assert again.returncode == 0, again.stderr
    assert f"job {running} is running and was already asked to stop" in again.stdout
    assert await conn.fetchval("SELECT cancel_requested_at FROM background_jobs WHERE id = $1", running) == requested_at


def test_cancel_help_lists_its_exit_codes() -> None:
    cancel_help = subcommands(build_parser())["jobrunner cancel"].format_help()
    assert "exit codes:" in cancel_help
    for line in ["0  ", "1  there is no such job", "2  ", "3  nothing to cancel"]:
        assert f"\n  {line}" in cancel_help, cancel_help


# -- mistyped settings -----------------------------------------------------------------------


def test_a_command_warns_about_a_mistyped_variable_on_stderr(db_url: str) -> None:
    result = run_cli(db_url, "status", "--json", env={"JOBRUNNER_CONCURENCY": "4"})
    assert result.returncode == 0, result.stderr
    assert (
        "jobrunner: warning: JOBRUNNER_CONCURENCY (set in the environment) is not a jobrunner setting and is "
        "ignored; did you mean JOBRUNNER_CONCURRENCY?"
    ) in result.stderr
    json.loads(result.stdout)  # the warning stays off stdout


def test_the_daemon_logs_a_mistyped_variable_at_start_up(db_url: str) -> None:
    result = run_cli(db_url, "run", "--burst", env={"JOBRUNNER_APP_UPLOAD_BUCKET": "photos"})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("variable") == "JOBRUNNER_APP_UPLOAD_BUCKET"]
    assert len(warned) == 1, result.stderr
    assert warned[0]["level"] == "warning"
    assert warned[0]["did_you_mean"] == "JOBRUNNER_APP_UPLOADS_BUCKET"


# -- an unreachable database -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens on it


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://app:s3cret-pw@no-such-host.invalid:6543/db", "at no-such-host.invalid:6543:"),
        ("postgresql://app:s3cret-pw@127.0.0.1:{port}/db", "at 127.0.0.1:{port}:"),
        ("postgresql://app:s3cret-pw@[::1]:{port}/db", "at [::1]:{port}:"),
        (
            "postgresql://app:s3cret-pw@/db?host=/nonexistent/sockets&port={port}",
            "/nonexistent/sockets/.s.PGSQL.{port}",
        ),
    ],
    ids=["unresolvable", "refused", "ipv6", "socket"],
)
@pytest.mark.process
@pytest.mark.parametrize("command", [["status"], ["enqueue", "echo"], ["migrate", "--sql"]], ids=" ".join)
def test_a_database_that_cannot_be_reached_is_named_without_its_password(
    url: str, named: str, command: list[str]
) -> None:
    port = _free_port()
    result = run_cli(url.format(port=port), *command)
    assert result.returncode == 2
    assert "cannot connect to the database" in result.stderr
    assert named.format(port=port) in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_refused_login_names_the_server(db_url: str) -> None:
    url = url_as(db_url, "no_such_role", "s3cret-pw")  # refused with trust authentication too
    result = run_cli(url, "status")
    assert result.returncode == 2
    server = parse_database_url(url).server()  # host:port, or the embedded server's socket
    assert f"the database at {server} refused the login" in result.stderr
    assert "s3cret" not in result.stderr


# -- piped output ----------------------------------------------------------------------------

LONG_TYPE = "nightly_" + "report_" * 20 + "end"
LONG_ERROR = "ValueError: " + "the upstream said no " * 4 + "(end)"  # status shows 120 characters


@pytest.mark.parametrize("columns", [None, "80"], ids=["no COLUMNS", "COLUMNS=80"])
async def test_piped_tables_keep_each_row_on_one_line(
    db_url: str, conn: asyncpg.Connection, columns: str | None
) -> None:
    await conn.execute(
        "INSERT INTO background_jobs (job_type, status, attempts, last_error, finished_at)"
        " VALUES ($1, 'dead', 5, $2, now())",
        LONG_TYPE,
        LONG_ERROR,
    )
    definition = {"cron": "0 3 * * *", "job_type": LONG_TYPE, "queue": "reports"}
    await conn.execute(
        "INSERT INTO jobrunner_schedules (name, definition) VALUES ($1, $2)", LONG_TYPE, json.dumps(definition)
    )
    status = run_cli(db_url, "status", env={"COLUMNS": columns})
    assert status.returncode == 0, status.stderr
    # what `jobrunner status | grep TYPE` sees: the type, its counts and its last error on one line
    rows = [line for line in status.stdout.splitlines() if LONG_TYPE in line]
    counts = [[cell.strip() for cell in line.split("│")[2:8]] for line in rows]
    assert ["0", "0", "0", "0", "1", "0"] in counts, status.stdout
    assert any(LONG_ERROR in line for line in rows), status.stdout

    schedules = run_cli(db_url, "schedules", env={"COLUMNS": columns})
    assert schedules.returncode == 0, schedules.stderr
    assert any(LONG_TYPE in line and "0 3 * * *" in line for line in schedules.stdout.splitlines()), schedules.stdout


async def test_status_of_one_job_shows_its_json_as_json(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, status, attempts, result, finished_at)"
        " VALUES ('report', '{\"user\": 7}', 'completed', 1, '[\"done\"]', now()) RETURNING id"
    )
    as_json = run_cli(db_url, "status", "--job", str(job_id), "--json")
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    assert (shown["payload"], shown["result"], shown["progress"]) == ({"user": 7}, ["done"], None)
    table = run_cli(db_url, "status", "--job", str(job_id))
    assert table.returncode == 0, table.stderr
    assert '{"user": 7}' in table.stdout and '["done"]' in table.stdout


async def test_status_of_one_job_shows_how_often_it_snoozed(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, payload, snoozes) VALUES ('poll_upstream', '{}', 2) RETURNING id"
    )
    as_json = run_cli(db_url, "status", "--job", str(job_id), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["snoozes"] == 2
    table = run_cli(db_url, "status", "--job", str(job_id))
    assert table.returncode == 0, table.stderr
    cells = [[cell.strip() for cell in line.split("│")[1:3]] for line in table.stdout.splitlines()]
    assert ["snoozes", "2"] in cells, table.stdout
