"""The CLI shows job data as literal text: no rich markup, no terminal escapes from the rows."""

from __future__ import annotations

import json
import subprocess

import asyncpg

from tests.support import jobrunner_process

# a markup tag rich cannot close, an OSC 8 hyperlink, a screen clear and a C1 CSI
HOSTILE_TYPE = "evil[/]type[bold]"
HOSTILE_ERROR = "boom [/] \x1b]8;;http://evil.test\x07click\x1b]8;;\x07 \x1b[2J gone \x9b31m red \x7f"
HOSTILE_SCHEDULE = "nightly[/]\x1b[31m"


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    proc = jobrunner_process(db_url, *args, env={"COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_literal(result: subprocess.CompletedProcess[bytes], *visible: str) -> None:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    output = result.stdout + result.stderr
    assert b"\x1b" not in output
    assert b"\x07" not in output
    assert "\x9b".encode() not in output and b"\x7f" not in output
    text = output.decode()
    for part in visible:
        assert part in text, text


async def test_status_shows_hostile_job_types_and_errors_literally(db_url: str, conn: asyncpg.Connection) -> None:
    job_id = await conn.fetchval(
        "INSERT INTO background_jobs (job_type, status, attempts, last_error, finished_at)"
        " VALUES ($1, 'dead', 1, $2, now()) RETURNING id",
        HOSTILE_TYPE,
        HOSTILE_ERROR,
    )
    await conn.execute("INSERT INTO background_jobs (job_type, queue) VALUES ($1, $2)", HOSTILE_TYPE, "q[/]\x1b[1m")

    status = run_cli(db_url, "status")
    assert_literal(status, HOSTILE_TYPE, "boom [/]", "\\x1b]8;;http://evil.test", "\\x9b31m", "q[/]\\x1b[1m")

    one = run_cli(db_url, "status", "--job", str(job_id))
    assert_literal(one, HOSTILE_TYPE, "boom [/]", "\\x1b[2J gone")

    as_json = run_cli(db_url, "status", "--json")
    assert_literal(as_json)
    assert json.loads(as_json.stdout)["recent_failures"][0]["last_error"] == HOSTILE_ERROR


async def test_schedules_show_hostile_rows_literally(db_url: str, conn: asyncpg.Connection) -> None:
    definition = {"cron": "0 3 * * *", "job_type": HOSTILE_TYPE, "queue": "q[/]"}
    await conn.execute(
        "INSERT INTO jobrunner_schedules (name, definition) VALUES ($1, $2)", HOSTILE_SCHEDULE, json.dumps(definition)
    )
    listed = run_cli(db_url, "schedules")
    assert_literal(listed, "nightly[/]\\x1b[31m", HOSTILE_TYPE, "q[/]")
