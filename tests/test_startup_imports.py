"""`jobrunner run` loads what the daemon runs on and nothing more: the sync client's psycopg
waits until a `Client` is made. A replica's start (KEDA scaling up, systemd after a crash) is
mostly imports (bench/startup.py), so a module the daemon does not use costs every replica
its load time before the first claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

# what a whole burst run must leave unimported
NOT_ON_THE_DAEMONS_PATH = ("psycopg", "psycopg_binary")


def run_recording_modules(db_url: str, modules_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m jobrunner ARGS` as a child process that writes every module it imported, as
    it exits, to `modules_file`."""
    script = (
        "import atexit, json, runpy, sys\n"
        f"atexit.register(lambda: open({str(modules_file)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        f"sys.argv = ['jobrunner', *{list(args)!r}]\n"
        "runpy.run_module('jobrunner', run_name='__main__', alter_sys=True)\n"
    )
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(REPO_ROOT), "JOBRUNNER_HTTP_PORT": "0"}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.process
def test_a_burst_run_does_not_import_the_sync_client(db_url: str, tmp_path: Path) -> None:
    modules_file = tmp_path / "modules.json"
    done = run_recording_modules(db_url, modules_file, "run", "--burst")
    assert done.returncode == 0, done.stderr
    assert "burst: no runnable job left" in done.stderr  # the daemon ran: connected, claimed, stopped
    imported = set(json.loads(modules_file.read_text()))
    assert "jobrunner.daemon.daemon" in imported
    assert not [name for name in imported if name.split(".")[0] in NOT_ON_THE_DAEMONS_PATH]


def test_the_public_api_does_not_import_psycopg_until_a_client_is_made() -> None:
    # an asyncio application enqueues with AsyncClient and never needs psycopg
    script = (
        "import sys\n"
        "from jobrunner import AsyncClient, Client, NewJob\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('psycopg', 'psycopg_binary')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_public_name_resolves_to_what_it_names_after_every_module_is_imported() -> None:
    # the public names are imported on first use (jobrunner/__init__): a submodule that shares
    # a name's spelling (jobrunner.handler) must not stand in for it once imported
    script = (
        "import importlib, pkgutil, types, jobrunner\n"
        "for info in pkgutil.walk_packages(jobrunner.__path__, 'jobrunner.'):\n"
        "    if info.name != 'jobrunner.__main__':\n"
        "        importlib.import_module(info.name)\n"
        "wrong = [n for n in jobrunner.__all__ if isinstance(getattr(jobrunner, n), types.ModuleType)]\n"
        "print(wrong, sorted(set(jobrunner.__all__) - set(dir(jobrunner))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"


def test_the_command_runs_with_the_collector_on_and_its_modules_frozen() -> None:
    # jobrunner.console imports the CLI with the collector off, freezes what it loaded, and
    # turns the collector back on before any command runs
    script = (
        "import gc, jobrunner.cli, jobrunner.console\n"
        "jobrunner.cli.main = lambda: print(gc.isenabled(), gc.get_freeze_count() > 10_000) or 0\n"
        "raise SystemExit(jobrunner.console.main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True True"
