"""The CLI as a user meets it: real `jobrunner` processes against a database of the test's own."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from importlib.metadata import version

import pytest

from tests.support import jobrunner_process


def run_cli(db_url: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
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
    assert 'schema "not_there" does not exist' in result.stderr
    assert "run `jobrunner migrate` first" in result.stderr


# -- --version -------------------------------------------------------------------------------


def test_version_is_the_installed_distributions() -> None:
    result = run_cli("postgresql://postgres@127.0.0.1:1/unused", "--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"jobrunner {version('jobrunner')}"
    # the app's plugin is installed beside the core in development: named with its version
    assert f"plugin glow-app-jobs {version('glow-app-jobs')}" in lines[1:]
